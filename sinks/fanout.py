"""Bounded fan-out: one queue and one runner task per sink, each with its own overflow policy.

::

    publish(record) ─┬─► queue[stdout] (bounded deque + policy) ─► runner ─► stdout.write(batch)
                     └─► queue[file:x] (bounded deque + policy) ─► runner ─► file.write(batch)

* ``publish`` is the hot path: a deque append per sink, no task switch unless a ``block`` queue
  is full (then the caller waits: backpressure on the feed). ``drop-newest`` discards the new
  record, ``drop-oldest`` evicts the oldest queued one; either way ``SinkStats.dropped`` counts it.
  A producer that must not wait between making and enqueueing records awaits
  :meth:`Fanout.wait_ready` first and then calls :meth:`Fanout.publish_nowait`; a burst may then
  overshoot a ``block`` queue's size, up to ``BLOCK_OVERSHOOT_FACTOR`` times it (hard bound,
  beyond which records are dropped and counted).
* Runners take up to ``batch_max`` queued records and call ``sink.write(batch)``.
  :class:`SinkUnavailable` retries the same batch with backoff while the queue keeps filling
  under its policy, so a slow or broken sink stalls nobody else unless its policy is ``block``.
  A :class:`Flushable` sink that holds records back (a queue sink's outage spool) gets
  ``flush()`` calls while its queue is idle (every ``IDLE_FLUSH_S``), so it delivers them
  without waiting for new records.
* A sink's :class:`~sinks.routing.Route` (URL options ``types`` and ``markets``) chooses the
  records it gets; the others never enter its queue.
* ``on_error`` decides, per sink and never implicitly, what a failure does:

  ========== ============================================ ================================
  on_error   SinkUnavailable (write or open)              SinkRejected
  ========== ============================================ ================================
  retry      retry the same batch with backoff, forever   drop that batch, count, go on
  disable    stop the sink (queue dropped and counted)    stop the sink
  crash      re-raise out of :meth:`Fanout.run`           re-raise out of :meth:`Fanout.run`
  ========== ============================================ ================================

  :class:`SinkClosed` (e.g. EPIPE on stdout) always stops the sink, adds it to
  ``closed_sinks`` and sets ``closed_sinks_event`` so the app can stop cleanly. Anything that is
  not a :class:`SinkError` is a bug and propagates.
* Shutdown: :meth:`Fanout.close` (or cancelling :meth:`Fanout.run`) stops intake; runners drain
  their queues, bounded by ``drain_timeout_s``; what is left is logged and counted as dropped;
  then every sink is ``aclose()``\\d (bounded by ``drain_timeout_s`` again). Runners sit in
  shielded scopes, so the drain survives cancellation of ``run``.

Conflation (policy ``conflate``), for a sink that must not stall the feed and whose consumers
rebuild books:

* When the queue is full, a ``book``/``book_delta`` record of market M is not queued: M becomes
  *dirty*, M's book records already queued are taken out, and M's later book records are
  refused on arrival while it stays dirty. Each such record counts in ``SinkStats.conflated``
  (superseded, not lost, so not in ``dropped``).
* Once the queue has drained to its low-water mark (``CONFLATE_LOW_WATER_FRACTION`` of its
  size; at shutdown too), the runner calls ``snapshot_source(M)`` for each dirty market (up to
  ``batch_max`` at a time), marks them clean and writes those ``book`` records *before*
  anything still queued. The same ``book`` record is handed to every other sink as if it had
  been published, so each ``seq`` names one record everywhere and no other sink sees a hole.
* A non-book record (``status``, ``market`` …) arriving at a full queue is kept: room is made
  by conflating the market of the oldest queued book record or, when only non-book records
  are queued, by dropping the oldest of them (counted in ``dropped``).

What a consumer of a conflating sink sees, per market: the records in ``seq`` order, either
all of them, or with gaps; each gap is closed by a ``book`` record (the next record of that
market it receives) from which it rebuilds the book (``orderbook.replay.Replayer`` reports the
gap and re-syncs on that ``book``); the records after it continue from its ``seq``. The one
exception: when ``snapshot_source`` returns ``None`` (the daemon has no book for the market
right now), the gap is closed by the next ``book`` the daemon emits for it (a re-seed).

``snapshot_source(market) -> Book | None`` contract: it is called from the runner task, in
the event loop, with no await between the call and the records going out; it returns a fresh
``Book`` of the market's current book carrying the NEXT ``seq`` of that market (allocated by
the daemon exactly as for any record it emits, so that ``seq`` stays contiguous for every
consumer), or ``None``. A :class:`Fanout` with a ``conflate`` sink requires one.

Backoff: ``sinks`` may not import ``streamer``, so ``backoff`` is a zero-argument factory of
delay iterators; ``streamer.feed.retry.Backoff(...).delays`` fits as is. The default is a local
jittered exponential (0.5 s doubling to 30 s, ±20 %).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Final, Literal, Protocol, runtime_checkable

import anyio
from anyio.abc import TaskStatus

from sinks.base import (
    Reopenable,
    Sink,
    SinkClosed,
    SinkConfigError,
    SinkError,
    SinkRejected,
    SinkUnavailable,
    jittered_backoff,
)
from sinks.gate import PublishGate
from sinks.queues import (
    CONFLATE_LOW_WATER_FRACTION,
    ConflatingQueue,
    OverflowPolicy,
    SinkQueue,
    SinkState,
    SinkStats,
)
from sinks.records import Book, Record
from sinks.routing import Route

__all__ = [
    "OverflowPolicy",
    "OnError",
    "ON_ERROR_CHOICES",
    "SinkState",
    "SinkSpec",
    "SinkStats",
    "Fanout",
    "BackoffFactory",
    "Flushable",
    "SnapshotSource",
    "default_backoff",
    "CONFLATE_LOW_WATER_FRACTION",
    "DEFAULT_QUEUE_SIZE",
    "DEFAULT_BATCH_MAX",
    "DEFAULT_DRAIN_TIMEOUT_S",
]

logger = logging.getLogger(__name__)

DEFAULT_QUEUE_SIZE: Final = 10_000
DEFAULT_BATCH_MAX: Final = 512
DEFAULT_DRAIN_TIMEOUT_S: Final = 3.0
IDLE_FLUSH_S: Final = 1.0
"""A :class:`Flushable` sink holding records back is flushed after its queue was idle this long."""
DEFAULT_BACKOFF_INITIAL_S: Final = 0.5
DEFAULT_BACKOFF_FACTOR: Final = 2.0
DEFAULT_BACKOFF_CAP_S: Final = 30.0
DEFAULT_BACKOFF_JITTER: Final = 0.2

OnError = Literal["retry", "disable", "crash"]
ON_ERROR_CHOICES: Final[tuple[OnError, ...]] = ("retry", "disable", "crash")

BackoffFactory = Callable[[], Iterator[float]]
"""Returns a fresh iterator of retry delays in seconds (one per retry sequence)."""

SnapshotSource = Callable[[str], Book | None]
"""``market -> Book | None``: a fresh book with the market's next ``seq`` (see "Conflation")."""


@runtime_checkable
class Flushable(Protocol):
    """A sink that may hold records back (a spool) and can deliver them without new input."""

    @property
    def needs_flush(self) -> bool:
        """Records are held back now."""
        ...

    async def flush(self) -> None:
        """Try to deliver held-back records (bounded in time).

        Raises:
            SinkError: nothing is lost; the runner just tries again later.
        """
        ...


def default_backoff() -> Iterator[float]:
    """Jittered, capped exponential delays: 0.5 s, 1 s, 2 s … 30 s, each ±20 %."""
    return jittered_backoff(DEFAULT_BACKOFF_INITIAL_S, DEFAULT_BACKOFF_CAP_S,
                            factor=DEFAULT_BACKOFF_FACTOR, jitter=DEFAULT_BACKOFF_JITTER)


@dataclass(frozen=True, slots=True)
class SinkSpec:
    """One sink plus how the fan-out treats it.

    Attributes:
        sink: the output.
        policy: what to do when its queue is full.
        queue_size: records the queue holds (besides the batch being written).
        batch_max: most records handed to one ``write``.
        on_error: ``retry``, ``disable`` or ``crash`` (see the module docstring).
        route: which records the sink gets (:class:`~sinks.routing.Route`); ``None``: all.

    Raises:
        SinkConfigError: a bad policy, size or on_error.
    """

    sink: Sink
    policy: OverflowPolicy = OverflowPolicy.BLOCK
    queue_size: int = DEFAULT_QUEUE_SIZE
    batch_max: int = DEFAULT_BATCH_MAX
    on_error: OnError = "retry"
    route: Route | None = None

    def __post_init__(self) -> None:
        name = self.sink.name
        try:
            object.__setattr__(self, "policy", OverflowPolicy(self.policy))
        except ValueError:
            raise SinkConfigError(name, f"policy {self.policy!r} is not one of "
                                        f"{', '.join(OverflowPolicy)}") from None
        if self.queue_size < 1:
            raise SinkConfigError(name, f"queue_size must be >= 1, got {self.queue_size}")
        if self.batch_max < 1:
            raise SinkConfigError(name, f"batch_max must be >= 1, got {self.batch_max}")
        if self.on_error not in ON_ERROR_CHOICES:
            raise SinkConfigError(name, f"on_error {self.on_error!r} is not one of "
                                        f"{', '.join(ON_ERROR_CHOICES)}")


class _Slot:
    """One sink's runtime state inside the fan-out."""

    __slots__ = ("spec", "sink", "name", "queue", "stats", "scope", "ready", "stopped",
                 "rejections")

    def __init__(self, spec: SinkSpec) -> None:
        self.spec = spec
        self.sink = spec.sink
        self.name = spec.sink.name
        self.queue = (ConflatingQueue(spec.queue_size)
                      if spec.policy is OverflowPolicy.CONFLATE
                      else SinkQueue(spec.policy, spec.queue_size))
        self.stats = self.queue.stats
        self.scope: anyio.CancelScope | None = None
        self.ready = anyio.Event()
        """Set after the first open attempt (success or not)."""
        self.stopped = False
        self.rejections = 0


class Fanout:
    """Delivers every published record to every sink through a bounded per-sink queue.

    Args:
        specs: the sinks and their policies; names must be unique.
        drain_timeout_s: how long shutdown waits for queues to drain (and, separately, for
            sinks to close).
        backoff: factory of retry-delay iterators (see the module docstring).
        snapshot_source: builds the ``book`` a ``conflate`` sink gets for a conflated market
            (see "Conflation" in the module docstring); required if any sink conflates.

    Attributes:
        stats: per-sink counters by sink name.
        closed_sinks: names of sinks whose output went away (SinkClosed).
        closed_errors: the SinkClosed of each of them, by name.
        closed_sinks_event: set when the first sink closed; the app may stop on it.

    Raises:
        SinkConfigError: two sinks share a name, or a ``conflate`` sink has no snapshot source.
    """

    def __init__(
        self,
        specs: Sequence[SinkSpec],
        *,
        drain_timeout_s: float = DEFAULT_DRAIN_TIMEOUT_S,
        backoff: BackoffFactory | None = None,
        snapshot_source: SnapshotSource | None = None,
        on_written: Callable[[str, Sequence[Record]], None] | None = None,
        gate: PublishGate | None = None,
    ) -> None:
        self._on_written = on_written
        self.gate = gate
        """Hot standby: only records the gate allows are queued and written (None: all)."""
        self._slots = [_Slot(spec) for spec in specs]
        names = [slot.name for slot in self._slots]
        for name in names:
            if names.count(name) > 1:
                raise SinkConfigError(name, "two sinks have this name; give one a name= option")
        for slot in self._slots:
            if slot.spec.policy is OverflowPolicy.CONFLATE and snapshot_source is None:
                raise SinkConfigError(slot.name, "policy conflate needs the daemon's snapshot "
                                                 "source (Fanout(snapshot_source=...))")
        self._snapshot_source = snapshot_source
        self._queues = tuple(slot.queue for slot in self._slots)
        self._targets = tuple((slot.queue, slot.spec.route) for slot in self._slots)
        """Each queue with its sink's route (``None``: every record)."""
        self._block_queues = tuple(slot.queue for slot in self._slots
                                   if slot.spec.policy is OverflowPolicy.BLOCK)
        self._drain_timeout_s = drain_timeout_s
        self._backoff = backoff or default_backoff
        self.stats: dict[str, SinkStats] = {slot.name: slot.stats for slot in self._slots}
        self.closed_sinks: set[str] = set()
        self.closed_errors: dict[str, SinkClosed] = {}
        self.closed_sinks_event = anyio.Event()
        self._close_requested = anyio.Event()
        self._runners_done = anyio.Event()
        self._active = 0
        self._started = False

    @property
    def closing(self) -> bool:
        """``close()`` was called (or ``run`` was cancelled)."""
        return self._close_requested.is_set()

    @property
    def closed(self) -> anyio.Event:
        """Same as :attr:`closed_sinks_event`."""
        return self.closed_sinks_event

    @property
    def ready(self) -> bool:
        """No ``block`` queue is full: ``publish_nowait`` will not overshoot any."""
        for queue in self._block_queues:  # read per frame: a plain loop, no generator
            if not queue.has_space:
                return False
        return True

    async def wait_ready(self) -> None:
        """Wait until :attr:`ready` (backpressure from ``block`` sinks)."""
        while not self.ready:
            for queue in self._block_queues:
                await queue.wait_space()

    def blocked_sinks(self) -> list[str]:
        """Names of the ``block`` sinks whose queue is full now."""
        return [slot.name for slot in self._slots
                if slot.spec.policy is OverflowPolicy.BLOCK and not slot.queue.has_space]

    @property
    def behind(self) -> bool:
        """Some sink that is writing (state ``open``) has its queue more than half full.

        A failing or opening sink does not count: pausing the reader cannot help it (its
        overflow policy applies), and an outage would otherwise slow the feed for every sink.
        """
        for slot in self._slots:
            queue = slot.queue
            if (not queue.closed and queue.depth * 2 > queue.stats.capacity
                    and slot.stats.state is SinkState.OPEN):
                return True
        return False

    @property
    def drained(self) -> bool:
        """Every ``block`` queue is at or below half its size (or closed)."""
        for queue in self._block_queues:
            if not queue.closed and queue.depth * 2 > queue.stats.capacity:
                return False
        return True

    async def wait_drained(self) -> None:
        """Wait until :attr:`drained`: a feed that closed its session for a full ``block``
        sink reconnects only once that sink has room for the burst a re-sync brings."""
        for queue in self._block_queues:
            await queue.wait_depth(queue.stats.capacity // 2)

    def unhealthy_sinks(self) -> list[tuple[str, str]]:
        """``(name, why)`` of every sink that is not delivering now: failing, stopped,
        blocked (a full ``block`` queue) or behind (a ``conflate`` sink owing snapshots)."""
        out = []
        for slot in self._slots:
            state = slot.stats.state
            if state in (SinkState.FAILING, SinkState.DISABLED, SinkState.CLOSED):
                out.append((slot.name, str(state)))
            elif slot.spec.policy is OverflowPolicy.BLOCK and not slot.queue.has_space:
                out.append((slot.name, "blocked"))
            elif isinstance(slot.queue, ConflatingQueue) and slot.queue.dirty:
                out.append((slot.name, f"behind ({len(slot.queue.dirty)} markets conflated)"))
        return out

    async def publish(self, record: Record) -> None:
        """Queue ``record`` for every sink, applying each sink's overflow policy.

        Only waits when a ``block`` queue is full. After ``close()`` records are dropped
        (and counted), not raised on: publishers may still be winding down.
        """
        if self.gate is not None and not self.gate.allows(record):
            return
        for queue, route in self._targets:
            if route is not None and not route.accepts(record):
                continue
            if not queue.offer(record):
                await queue.put(record)

    def publish_nowait(self, record: Record) -> bool:
        """Like :meth:`publish` but never waits.

        Meant to follow :meth:`wait_ready`: a full ``block`` queue still takes the record, up
        to ``BLOCK_OVERSHOOT_FACTOR`` times its size; past that the record is dropped (counted).

        Returns:
            ``False`` if some ``block`` queue dropped the record, else ``True``.
        """
        if self.gate is not None and not self.gate.allows(record):
            return True  # a standby publishes nothing; counted by the gate
        delivered = True
        for queue, route in self._targets:
            if route is not None and not route.accepts(record):
                continue
            if not queue.offer(record) and not queue.force(record):
                delivered = False
        return delivered

    def reopen(self) -> None:
        """Ask every sink that can (:class:`~sinks.base.Reopenable`) to reopen its output.

        For SIGHUP after logrotate; only sets flags, so safe from a signal handler.
        """
        for slot in self._slots:
            if isinstance(slot.sink, Reopenable):
                slot.sink.reopen()

    def close(self) -> None:
        """Stop intake; runners drain their queues and ``run`` returns. Idempotent."""
        for queue in self._queues:
            queue.close()
        self._close_requested.set()

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Open the sinks, run one runner per sink, and drain and close them on shutdown.

        ``task_status.started()`` is called once every sink had its first open attempt (a sink
        that failed keeps retrying in its runner). Returns after :meth:`close` and the drain;
        if cancelled, performs the same drain shielded, then re-raises the cancellation.

        Raises:
            SinkError: from a sink whose ``on_error`` is ``crash`` (inside an ExceptionGroup).
            RuntimeError: ``run`` was called twice.
        """
        if self._started:
            raise RuntimeError("Fanout.run() may only be called once")
        self._started = True
        try:
            async with anyio.create_task_group() as tg:
                try:
                    for slot in self._slots:
                        await tg.start(self._run_slot, slot)
                    for slot in self._slots:
                        await slot.ready.wait()
                    task_status.started()
                    await self._close_requested.wait()
                finally:
                    with anyio.CancelScope(shield=True):
                        await self._drain()
        finally:
            with anyio.CancelScope(shield=True):
                self._count_leftovers()
                await self._aclose_all()

    # -- shutdown -------------------------------------------------------------------------

    async def _drain(self) -> None:
        self.close()
        if self._active:
            with anyio.move_on_after(self._drain_timeout_s):
                await self._runners_done.wait()
        for slot in self._slots:
            if slot.scope is not None:
                slot.scope.cancel()

    def _count_leftovers(self) -> None:
        for slot in self._slots:
            left = self._stop(slot, SinkState.STOPPED)
            if left:
                logger.warning("sink %s: %d records not written before shutdown "
                               "(drain timeout %.1f s)", slot.name, left, self._drain_timeout_s)

    async def _aclose_all(self) -> None:
        with anyio.move_on_after(self._drain_timeout_s) as scope:
            for slot in self._slots:
                try:
                    await slot.sink.aclose()
                except SinkError as exc:
                    logger.warning("sink %s: close failed: %s", slot.name, exc)
        if scope.cancelled_caught:
            logger.warning("sinks did not close within %.1f s", self._drain_timeout_s)

    # -- runner ---------------------------------------------------------------------------

    async def _run_slot(
        self, slot: _Slot, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        self._active += 1
        try:
            # Shielded so the drain survives cancellation of run(); _drain() cancels this
            # scope itself once drain_timeout_s has passed.
            with anyio.CancelScope(shield=True) as slot.scope:
                task_status.started()
                if await self._open(slot):
                    await self._serve(slot)
        finally:
            slot.ready.set()
            self._active -= 1
            if not self._active:
                self._runners_done.set()

    async def _serve(self, slot: _Slot) -> None:
        queue, limit = slot.queue, slot.spec.batch_max
        flushable = slot.sink if isinstance(slot.sink, Flushable) else None
        while not slot.stopped:
            if (flushable is not None and flushable.needs_flush and not queue.depth
                    and not queue.closed and not queue.snapshots_due):
                await self._flush_when_idle(slot, flushable)
                continue
            markets = queue.take_dirty(limit)
            if markets:
                batch = self._snapshots(slot, markets)
                if not batch:
                    continue
            else:
                batch = await queue.get_batch(limit)
                if not batch:
                    if queue.snapshots_due:
                        continue
                    return
            slot.stats.in_flight = len(batch)
            await self._deliver(slot, batch)
            slot.stats.in_flight = 0

    async def _flush_when_idle(self, slot: _Slot, sink: Flushable) -> None:
        """Wait for records up to IDLE_FLUSH_S; if none came, let the sink flush."""
        queue = slot.queue
        with anyio.move_on_after(IDLE_FLUSH_S):
            await queue.wait_data()
        if queue.depth or queue.snapshots_due or queue.closed:
            return
        if self.gate is not None and not self.gate.holding:
            return  # a standby (or fenced holder) replays no spool
        try:
            await sink.flush()
        except SinkError as exc:  # best effort: the next write reports for real
            logger.debug("sink %s: idle flush failed: %s", slot.name, exc)

    def _snapshots(self, slot: _Slot, markets: list[str]) -> list[Record]:
        """Fresh ``book`` records for ``markets``; each also goes to every other sink.

        Synchronous on purpose: nothing can be published between taking a snapshot and
        queueing it for the other sinks, so every queue stays in ``seq`` order.
        """
        source = self._snapshot_source
        assert source is not None  # checked in __init__ for conflate sinks
        batch: list[Record] = []
        for market in markets:
            book = source(market)
            if book is None:
                continue
            batch.append(book)
            for queue, route in self._targets:
                if queue is slot.queue or (route is not None and not route.accepts(book)):
                    continue
                if not queue.offer(book):
                    queue.force(book)
        slot.stats.snapshots += len(batch)
        return batch

    async def _open(self, slot: _Slot) -> bool:
        """Open with retries; ``False`` if the sink was stopped instead."""
        delays: Iterator[float] | None = None
        while True:
            try:
                await slot.sink.open()
            except SinkUnavailable as exc:
                if not self._should_retry(slot, "open", exc):
                    return False
                slot.ready.set()
                if slot.queue.closed and not slot.queue.items:
                    return False  # shutting down with nothing to write
                delays = delays if delays is not None else self._backoff()
                await anyio.sleep(next(delays))
                slot.stats.retries += 1
            except SinkClosed as exc:
                self._mark_closed(slot, exc)
                return False
            except SinkError as exc:  # rejected or misconfigured: retrying cannot help
                slot.stats.errors += 1
                self._fatal(slot, "open", exc)
                return False
            else:
                self._mark_open(slot)
                slot.ready.set()
                return True

    async def _deliver(self, slot: _Slot, batch: list[Record]) -> None:
        """Write ``batch``, retrying SinkUnavailable per ``on_error``."""
        delays: Iterator[float] | None = None
        while True:
            if self.gate is not None:  # fencing: checked right before every attempt
                batch = [record for record in batch if self.gate.allows(record)]
                if not batch:
                    return
            try:
                await slot.sink.write(batch)
            except SinkUnavailable as exc:
                if not self._should_retry(slot, "write", exc):
                    return
                delays = delays if delays is not None else self._backoff()
                await anyio.sleep(next(delays))
                slot.stats.retries += 1
            except SinkRejected as exc:
                self._rejected(slot, batch, exc)
                return
            except SinkClosed as exc:
                self._mark_closed(slot, exc)
                return
            else:
                slot.stats.written += len(batch)
                if self._on_written is not None:
                    self._on_written(slot.name, batch)
                if slot.stats.state is not SinkState.OPEN:
                    self._mark_open(slot)
                return

    # -- state changes (each logged once) -------------------------------------------------

    def _should_retry(self, slot: _Slot, op: str, exc: SinkUnavailable) -> bool:
        slot.stats.errors += 1
        if slot.spec.on_error != "retry":
            self._fatal(slot, op, exc)
            return False
        if slot.stats.state is not SinkState.FAILING:
            logger.warning("sink %s: %s failed, retrying with backoff: %s", slot.name, op, exc)
            slot.stats.state = SinkState.FAILING
        return True

    def _rejected(self, slot: _Slot, batch: list[Record], exc: SinkRejected) -> None:
        slot.stats.errors += 1
        if slot.spec.on_error != "retry":
            self._fatal(slot, "write", exc)
            return
        slot.stats.dropped += len(batch)
        slot.stats.in_flight = 0
        slot.rejections += 1
        level = logging.WARNING if slot.rejections == 1 else logging.DEBUG
        logger.log(level, "sink %s: batch of %d records rejected and dropped: %s",
                   slot.name, len(batch), exc)

    def _fatal(self, slot: _Slot, op: str, exc: SinkError) -> None:
        """Apply ``on_error`` to a failure that is not retried: crash (re-raise) or disable."""
        if slot.spec.on_error == "crash":
            logger.error("sink %s: %s failed (on_error=crash): %s", slot.name, op, exc)
            raise exc
        logger.error("sink %s: %s failed, sink disabled: %s", slot.name, op, exc)
        self._stop(slot, SinkState.DISABLED)

    def _mark_open(self, slot: _Slot) -> None:
        if slot.stats.state is SinkState.FAILING:
            logger.info("sink %s: recovered after %d retries", slot.name, slot.stats.retries)
        slot.stats.state = SinkState.OPEN

    def _mark_closed(self, slot: _Slot, exc: SinkClosed) -> None:
        logger.warning("sink %s: output closed for good, sink stopped: %s", slot.name, exc)
        self._stop(slot, SinkState.CLOSED)
        self.closed_sinks.add(slot.name)
        self.closed_errors[slot.name] = exc
        self.closed_sinks_event.set()

    def _stop(self, slot: _Slot, state: SinkState) -> int:
        """Stop intake, drop what is queued or in flight (counted); return that count."""
        slot.queue.close()
        left = slot.queue.discard() + slot.stats.in_flight
        slot.stats.dropped += left
        slot.stats.in_flight = 0
        slot.stopped = True
        if slot.stats.state in (SinkState.OPENING, SinkState.OPEN, SinkState.FAILING):
            slot.stats.state = state
        return left
