"""The per-sink queues of the fan-out: bounded, each with its overflow policy and counters.

:class:`SinkQueue` is the only place that knows the ``block``, ``drop-oldest`` and
``drop-newest`` policies; :class:`ConflatingQueue` adds ``conflate`` (see "Conflation" in
:mod:`sinks.fanout`). Both are single-task, event-loop objects: no locks, a ``deque`` plus
anyio events, and every number about one sink in one :class:`SinkStats`.
"""

from __future__ import annotations

from collections import deque
from enum import StrEnum
from typing import Final

import anyio

from sinks.records import Book, BookDelta, Record

__all__ = [
    "BLOCK_OVERSHOOT_FACTOR",
    "CONFLATE_LOW_WATER_FRACTION",
    "ConflatingQueue",
    "OverflowPolicy",
    "SinkQueue",
    "SinkState",
    "SinkStats",
]

BLOCK_OVERSHOOT_FACTOR: Final = 2
"""``publish_nowait`` may fill a ``block`` queue up to this many times its size (see there)."""
CONFLATE_LOW_WATER_FRACTION: Final = 0.5
"""A ``conflate`` queue emits its snapshots once at most this fraction of its size is queued."""


class OverflowPolicy(StrEnum):
    """What ``publish`` does when a sink's queue is full."""

    BLOCK = "block"
    """Wait for space: backpressure on the publisher (the feed)."""
    DROP_OLDEST = "drop-oldest"
    """Evict the oldest queued record to make room."""
    DROP_NEWEST = "drop-newest"
    """Discard the record being published."""
    CONFLATE = "conflate"
    """Keep only the latest book state per market; see "Conflation" in the module docstring."""


class SinkState(StrEnum):
    """Lifecycle of one sink inside the fan-out."""

    OPENING = "opening"
    OPEN = "open"
    FAILING = "failing"
    """The last open/write raised SinkUnavailable; retrying with backoff."""
    CLOSED = "closed"
    """The output went away for good (SinkClosed)."""
    DISABLED = "disabled"
    """Stopped by ``on_error="disable"``."""
    STOPPED = "stopped"
    """Drained and finished after ``close()``."""


class SinkStats:
    """Every per-sink number in one place (exported as metrics by the app).

    Attributes:
        enqueued: records accepted into the queue.
        written: records a ``write`` returned for.
        dropped: records lost: overflow, rejected batches, a closed/disabled sink, and what was
            left at shutdown.
        errors: failed ``open``/``write`` calls.
        retries: retries after SinkUnavailable.
        max_depth: highest queue depth seen.
        in_flight: records in the batch being written.
        capacity: the queue's bound.
        state: the sink's :class:`SinkState`.
        conflated: ``conflate`` policy only: ``book``/``book_delta`` records superseded by a
            snapshot (taken out of the queue, or refused on arrival). Not lost for a consumer
            that rebuilds books, so not counted in ``dropped``.
        snapshots: ``conflate`` policy only: fresh ``book`` records written in place of
            conflated ones (also counted in ``written``).
    """

    __slots__ = ("enqueued", "written", "dropped", "errors", "retries", "max_depth",
                 "in_flight", "capacity", "state", "conflated", "snapshots", "_queue")

    def __init__(self, capacity: int, queue: SinkQueue) -> None:
        self.enqueued = 0
        self.written = 0
        self.dropped = 0
        self.errors = 0
        self.retries = 0
        self.max_depth = 0
        self.in_flight = 0
        self.capacity = capacity
        self.state = SinkState.OPENING
        self.conflated = 0
        self.snapshots = 0
        self._queue = queue

    @property
    def depth(self) -> int:
        """Records waiting in the queue now."""
        return self._queue.depth

    def __repr__(self) -> str:
        fields = " ".join(f"{name}={getattr(self, name)}" for name in self.__slots__[:-1])
        return f"<SinkStats {fields} depth={self.depth}>"


class SinkQueue:
    """A sink's bounded FIFO; the only place that knows the overflow policies.

    anyio memory streams cannot evict the oldest item, hence a deque plus two one-shot events
    (re-armed on demand): ``_data`` wakes the single runner, ``_space`` wakes blocked publishers.
    ``conflate`` lives in the subclass :class:`ConflatingQueue`.
    """

    __slots__ = ("items", "stats", "_capacity", "_policy", "_closed", "_data", "_space")

    def __init__(self, policy: OverflowPolicy, capacity: int) -> None:
        self.items: deque[Record] = deque()
        self.stats = SinkStats(capacity, self)
        self._capacity = capacity
        self._policy = policy
        self._closed = False
        self._data: anyio.Event | None = None
        self._space: anyio.Event | None = None

    @property
    def closed(self) -> bool:
        """No more records are accepted (they are counted as dropped)."""
        return self._closed

    @property
    def depth(self) -> int:
        """Records waiting to be written."""
        return len(self.items)

    @property
    def snapshots_due(self) -> bool:
        """Some market is owed a snapshot now (``conflate`` only)."""
        return False

    def take_dirty(self, limit: int) -> list[str]:
        """Markets owed a snapshot now (``conflate`` only; see :class:`ConflatingQueue`)."""
        return []

    def offer(self, record: Record) -> bool:
        """Enqueue without waiting; ``False`` only when a ``block`` queue is full."""
        if self._closed:
            self.stats.dropped += 1
            return True
        items = self.items
        if len(items) >= self._capacity:
            return self._overflow(record)
        items.append(record)
        stats = self.stats
        stats.enqueued += 1
        if len(items) > stats.max_depth:
            stats.max_depth = len(items)
        if self._data is not None:
            self._data.set()
            self._data = None
        return True

    @property
    def has_space(self) -> bool:
        """Below capacity, or closed (a closed queue never makes anyone wait)."""
        return self._closed or len(self.items) < self._capacity

    def force(self, record: Record) -> bool:
        """Enqueue into a full ``block`` queue up to the hard bound; else drop and count."""
        if len(self.items) >= self._capacity * BLOCK_OVERSHOOT_FACTOR:
            self.stats.dropped += 1
            return False
        self.items.append(record)
        self.stats.enqueued += 1
        self.stats.max_depth = max(self.stats.max_depth, len(self.items))
        return True

    async def wait_depth(self, depth: int) -> None:
        """Return once at most ``depth`` records are queued (or the queue is closed)."""
        while not self._closed and self.depth > depth:
            if self._space is None:
                self._space = anyio.Event()
            await self._space.wait()

    async def wait_space(self) -> None:
        """Return once :attr:`has_space`."""
        while not self.has_space:
            if self._space is None:
                self._space = anyio.Event()
            await self._space.wait()

    def _overflow(self, record: Record) -> bool:
        policy = self._policy
        if policy is OverflowPolicy.BLOCK:
            return False
        self.stats.dropped += 1
        if policy is OverflowPolicy.DROP_OLDEST:
            self.items.popleft()
            self.items.append(record)
            self.stats.enqueued += 1
        return True

    async def put(self, record: Record) -> None:
        """Enqueue, waiting for space if the policy is ``block``."""
        while not self.offer(record):
            await self.wait_space()

    async def wait_data(self) -> None:
        """Return once something is queued, snapshots are due, or the queue is closed."""
        while not (self.depth or self.snapshots_due or self._closed):
            if self._data is None:
                self._data = anyio.Event()
            await self._data.wait()

    async def get_batch(self, limit: int) -> list[Record]:
        """Up to ``limit`` records, waiting for the first; ``[]`` once closed and empty."""
        items = self.items
        while not items:
            if self._closed:
                return []
            if self._data is None:
                self._data = anyio.Event()
            await self._data.wait()
        batch = [items.popleft() for _ in range(min(limit, len(items)))]
        self._wake_publishers()
        return batch

    def close(self) -> None:
        """Stop accepting; the runner still drains what is queued."""
        self._closed = True
        if self._data is not None:
            self._data.set()
            self._data = None
        self._wake_publishers()

    def discard(self) -> int:
        """Drop everything queued and return how many records that was (not counted here)."""
        count = len(self.items)
        self.items.clear()
        self._wake_publishers()
        return count

    def _wake_publishers(self) -> None:
        if self._space is not None:
            self._space.set()
            self._space = None


class ConflatingQueue(SinkQueue):
    """The ``conflate`` policy: bounded, and keeps at most the latest book state per market.

    A market is *dirty* once one of its ``book``/``book_delta`` records was conflated; while
    dirty, its book records are refused on arrival and none of them is queued, so the snapshot
    taken later supersedes exactly what was left out. Conflating a market does not search the
    deque: its queued book records become *stale* (counted, skipped by :meth:`get_batch`) and
    are purged in one pass when snapshots are taken, or once there are more than ``capacity``
    of them, so the deque never holds more than twice ``capacity`` records.
    """

    __slots__ = ("dirty", "low_water", "_queued", "_stale")

    def __init__(self, capacity: int) -> None:
        super().__init__(OverflowPolicy.CONFLATE, capacity)
        self.dirty: dict[str, None] = {}
        """Markets owed a snapshot, oldest first (an ordered set)."""
        self.low_water = int(capacity * CONFLATE_LOW_WATER_FRACTION)
        self._queued: dict[str, int] = {}
        """Live (not stale) book records queued per market."""
        self._stale = 0

    @property
    def depth(self) -> int:
        """Records waiting to be written (stale ones excluded)."""
        return len(self.items) - self._stale

    @property
    def has_space(self) -> bool:
        """Below capacity, or closed."""
        return self._closed or self.depth < self._capacity

    @property
    def snapshots_due(self) -> bool:
        """Some market is dirty and the queue is at or below low water."""
        return bool(self.dirty) and self.depth <= self.low_water

    def offer(self, record: Record) -> bool:
        """Enqueue, conflating book records of a dirty market or when full; always ``True``."""
        if self._closed:
            self.stats.dropped += 1
            return True
        items = self.items
        depth = len(items) - self._stale  # self.depth, inlined: this runs per record
        if type(record) is Book or type(record) is BookDelta:
            market = record.market
            if market in self.dirty:
                self.stats.conflated += 1
                return True
            if depth >= self._capacity:
                self._conflate(market)
                self.stats.conflated += 1
                return True
            queued = self._queued
            queued[market] = queued.get(market, 0) + 1
        elif depth >= self._capacity:
            self._make_room()
            depth = len(items) - self._stale
        items.append(record)
        stats = self.stats
        stats.enqueued += 1
        if depth >= stats.max_depth:
            stats.max_depth = depth + 1
        self._wake_runner()
        return True

    def force(self, record: Record) -> bool:
        """Never needed: :meth:`offer` always takes or conflates the record."""
        return self.offer(record)

    def _wake_runner(self) -> None:
        if self._data is not None:
            self._data.set()
            self._data = None

    def _conflate(self, market: str) -> None:
        """Mark ``market`` dirty; its queued book records become stale."""
        self.dirty[market] = None
        self._wake_runner()  # it may be waiting on a queue that has just become empty
        stale = self._queued.pop(market, 0)
        self._stale += stale
        self.stats.conflated += stale
        if self._stale > self._capacity:
            self._purge_stale()

    def _make_room(self) -> None:
        """Free one slot for a non-book record: conflate the market of the oldest queued book
        record; if only non-book records are queued, drop the oldest of them (counted)."""
        dirty = self.dirty
        for queued in self.items:
            if (type(queued) is Book or type(queued) is BookDelta) and queued.market not in dirty:
                self._conflate(queued.market)
                return
        self._purge_stale()
        self.items.popleft()
        self.stats.dropped += 1

    def _purge_stale(self) -> None:
        """Remove every stale record from the deque (one pass; the deque object is kept)."""
        if not self._stale:
            return
        dirty = self.dirty
        keep = [record for record in self.items
                if not ((type(record) is Book or type(record) is BookDelta)
                        and record.market in dirty)]
        self.items.clear()
        self.items.extend(keep)
        self._stale = 0

    async def get_batch(self, limit: int) -> list[Record]:
        """Up to ``limit`` live records, waiting for the first.

        Returns ``[]`` once closed and empty, or when :attr:`snapshots_due`.
        """
        while not self.depth:
            self._purge_stale()
            if self._closed or self.dirty:  # empty and dirty: snapshots are due
                return []
            if self._data is None:
                self._data = anyio.Event()
            await self._data.wait()
        # depth > 0: at least one live record is queued, so the batch is not empty
        batch = self._pop_live(limit)
        self._wake_publishers()
        return batch

    def _pop_live(self, limit: int) -> list[Record]:
        items, dirty, queued = self.items, self.dirty, self._queued
        batch: list[Record] = []
        while items and len(batch) < limit:
            record = items.popleft()
            if type(record) is Book or type(record) is BookDelta:
                market = record.market
                if market in dirty:
                    self._stale -= 1
                    continue
                left = queued[market] - 1
                if left:
                    queued[market] = left
                else:
                    del queued[market]
            batch.append(record)
        return batch

    def take_dirty(self, limit: int) -> list[str]:
        """Up to ``limit`` dirty markets, now clean, if the queue is at or below low water.

        The caller must take their snapshots before its next await, so that no record of
        those markets can be published between the snapshot and the clean mark.
        """
        if not self.dirty or self.depth > self.low_water:
            return []
        self._purge_stale()
        dirty = self.dirty
        markets = [market for market, _ in zip(dirty, range(limit), strict=False)]
        for market in markets:
            del dirty[market]
        return markets

    def discard(self) -> int:
        """Drop everything queued; return how many live records that was (not counted here)."""
        count = self.depth
        self.items.clear()
        self._queued.clear()
        self._stale = 0
        self.dirty.clear()
        self._wake_publishers()
        return count
