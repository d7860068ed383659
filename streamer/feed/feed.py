"""The feed: one Socket.IO session at a time, turned into book events.

A session is one task group owned by :meth:`Feed.run_session`:

- the reader: ``transport.receive()`` → :class:`SocketIOProtocol` → handlers → fan-out
  (an ``orderbookUpdate`` frame, the hot path, is decoded whole in one msgspec call and
  skips the protocol's event objects; see :meth:`Feed._on_book_frame`), under a
  watchdog whose deadline moves on with every frame (``pingInterval + pingTimeout``
  once the Engine.IO open packet told us those numbers);
- ``seed_concurrency`` seeders that fetch REST books for markets that need one (after
  every subscribe, on a crossed book) *outside* the read loop, so a slow REST API never
  delays a pong;
- a watcher that re-sends ``subscribe_market_prices`` when discovery changed the set.

Ordering: every record of a market gets its ``seq`` from that market's synchronizer and
is handed to the fan-out with :meth:`Fanout.publish_nowait` in the same synchronous
step, so records enter every sink queue in ``seq`` order even though two tasks (reader
and seeders) produce them. Backpressure (``block`` sinks) is awaited *before* a record
is made, never between making and enqueueing it.
"""

from __future__ import annotations

import logging
import math
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

import anyio
import msgspec

from orderbook.book import OrderBook
from orderbook.errors import InvalidLevel
from orderbook.types import SCHEMA_VERSION, Book, BookSnapshot, PriceLevel
from sinks.fanout import Fanout
from sinks.records import (
    MarketCreated,
    MarketResolved,
    PriceData,
    Record,
    Status,
    new_run_id,
    record_type,
)
from streamer.config import Settings
from streamer.errors import (
    ConnectRefused,
    HeartbeatTimeout,
    RestError,
    ServerDisconnect,
    SinkBlocked,
)
from streamer.feed.clock import now_ms as now_ms  # re-exported: app, bench
from streamer.feed.depth import top_levels
from streamer.feed.seeding import SeedQueue
from streamer.feed.universe import MarketEntry, Universe
from streamer.ops.histogram import FEED_LATENCY_BUCKETS, Histogram
from streamer.ops.logutil import RateLimitedLog
from streamer.partner.private import PrivateChannels
from streamer.protocol.messages import (
    EVENT_DECODERS,
    ORDERBOOK_EVENT_DECODER,
    OrderbookPayload,
    OrderbookUpdate,
    normalize_token,
    timestamp_ms,
)
from streamer.protocol.session import (
    AckReceived,
    Disconnected,
    EventReceived,
    FrameRejected,
    NamespaceConnected,
    Opened,
    SocketIOProtocol,
)
from streamer.protocol.session import (
    ConnectRefused as ConnectRefusedEvent,
)
from streamer.transport.rest import RestClient
from streamer.transport.websocket import Transport

logger = logging.getLogger(__name__)

_ORDERBOOK_DECODER: Final = EVENT_DECODERS["orderbookUpdate"]
_LIFECYCLE: Final[dict[str, tuple[Any, type[MarketCreated | MarketResolved], str]]] = {
    "marketCreated": (EVENT_DECODERS["marketCreated"], MarketCreated, "created"),
    "marketResolved": (EVENT_DECODERS["marketResolved"], MarketResolved, "resolved"),
}
"""Lifecycle event name -> (payload decoder, pass-through record, discovery hint)."""
_SUBSCRIBE_ENCODER: Final = msgspec.json.Encoder()
_DECODE_ERRORS: Final = (msgspec.DecodeError, msgspec.ValidationError, ValueError,
                         RecursionError)
CHECK_REASONS: Final = frozenset({"stale_probe", "audit"})
"""Seed reasons that first compare REST with the held book and re-seed only on a difference."""


YIELD_MASK: Final = 63
"""The reader yields to the event loop once every 64 frames (when ``frames & YIELD_MASK``
is 0). A fast WebSocket client returns frames already received without suspending, so a
reader that never yields would starve the fan-out, the sinks and every timer for as long
as the socket has data."""

READER_PAUSE_S: Final = 0.001
"""At such a yield, when some sink queue is more than half full, the reader sleeps this
long instead: a sink that writes from a worker thread needs the event loop and the GIL to
finish each batch, and a saturated reader left it neither (its conflating queue overflowed
although the sink itself was fast). Bounded, so a sink that is really slow costs at most
1 ms per 64 frames (the reader still takes well over 20,000 frames a second) and its own
overflow policy applies; counted in ``feed_reader_pauses_total``."""


def _deadline_clock() -> Callable[[], float]:
    """The clock cancel-scope deadlines use, as a cheap callable.

    Under asyncio that is the loop's ``time()``, i.e. ``time.monotonic`` (a direct call
    is cheaper per frame than ``anyio.current_time()``); any other clock is used as is.
    """
    if abs(anyio.current_time() - time.monotonic()) < 0.5:
        return time.monotonic
    return anyio.current_time


def mono_ms() -> int:
    """Monotonic time in milliseconds: freshness, probes and audits (immune to clock steps)."""
    return time.monotonic_ns() // 1_000_000


@dataclass(slots=True)
class FeedStats:
    """Every feed counter in one place (exported as metrics by the edge)."""

    frames: int = 0
    events: Counter[str] = field(default_factory=Counter)
    """Events received by name, except ``orderbookUpdate``: see :attr:`book_events`."""
    book_events: int = 0
    """``orderbookUpdate`` events received (a plain int: the hot path counts it per frame)."""
    unknown_events: Counter[str] = field(default_factory=Counter)
    decode_errors: Counter[str] = field(default_factory=Counter)
    frames_rejected: int = 0
    invalid_books: int = 0
    unknown_market: int = 0
    foreign_token: int = 0
    records: Counter[str] = field(default_factory=Counter)
    seeds: Counter[str] = field(default_factory=Counter)
    """Completed REST (re-)seeds by reason."""
    seeds_superseded: int = 0
    seeds_skipped: int = 0
    """Pending seeds dropped before the REST call: a full WebSocket book arrived first."""
    seed_failures: int = 0
    clock_skew: int = 0
    """Books whose exchange timestamp was too far from the local clock to order by."""
    exceptions: int = 0
    """``exception`` events from the venue (e.g. a refused private subscription)."""
    sink_blocked: int = 0
    """Sessions closed on purpose because a ``block`` sink was full."""
    reader_pauses: int = 0
    """Pauses of the reader (:data:`READER_PAUSE_S`) to let a sink queue more than half
    full catch up."""
    probes: int = 0
    """Staleness probes and audits that compared a REST book with the held one."""
    quiet: int = 0
    """Probes that found a silent market's book unchanged: quiet, not stale."""
    divergences: Counter[str] = field(default_factory=Counter)
    """Held books found different from REST, by how (``stale_probe``, ``audit``)."""
    sessions: int = 0
    disconnects: Counter[str] = field(default_factory=Counter)
    connected: bool = False
    subscribed_markets: int = 0
    last_frame_monotonic: float = 0.0
    latency: Histogram = field(default_factory=lambda: Histogram(FEED_LATENCY_BUCKETS))
    """Local receive time minus exchange time of each book update, seconds."""


class _Subscribe(msgspec.Struct):
    marketSlugs: list[str]
    marketAddresses: list[str]


class Feed:
    """Turns Socket.IO sessions into records for the fan-out.

    The feed outlives sessions: the universe, the synchronizers (and so ``seq``)
    and the stats persist across reconnects.
    """

    def __init__(
        self,
        settings: Settings,
        rest: RestClient,
        fanout: Fanout,
        universe: Universe,
        *,
        on_market_event: Callable[[str, str], None] | None = None,
        private: PrivateChannels | None = None,
        run: str | None = None,
    ) -> None:
        self._settings = settings
        self.run = new_run_id() if run is None else run
        """This run's id, stamped on every record (see :mod:`sinks.records`)."""
        universe.run = self.run
        self._rest = rest
        self._fanout = fanout
        self.universe = universe
        self.stats = FeedStats()
        self.on_market_event = on_market_event
        self.seeds = SeedQueue(settings.rest.seed_backoff, settings.rest.crossed_backoff)
        self._inflight: set[str] = set()
        self._unsent: dict[str, tuple[anyio.CancelScope, str]] = {}
        self._again: dict[str, str] = {}
        """Markets asked for again while their seed was in flight (and already sent)."""
        """Seeds taken off the queue whose request has not gone out yet (waiting for the
        shared pace): a WebSocket book may still withdraw them."""
        self.session_healthy = False
        """The current (or last) session joined the namespace and delivered an event."""
        self._skew_ms = int(settings.feed.max_clock_skew_s * 1000)
        self._wake = anyio.Event()
        self._universe_changed = anyio.Event()
        self._subscribed_version = -1
        self._log_bad = RateLimitedLog(logger, interval_s=10.0)
        self.private = private
        self._snapshot_due = anyio.Event()
        self._latency = self.stats.latency.observe_ms
        self._depth = settings.depth

    # -- public API -----------------------------------------------------------------

    def snapshot_record(self, market: str) -> Book | None:
        """A fresh ``book`` record of ``market`` with its next ``seq`` (conflating sinks)."""
        entry = self.universe.get(market)
        return None if entry is None else entry.sync.snapshot_record(now_ms())

    def remove_market(self, slug: str, status: str) -> None:
        """Stop following ``slug`` now: a ``removed`` record, state evicted, resubscribe."""
        self.publish(self.universe.remove(slug, now_ms(), status))
        self.forget_market(slug)
        self.universe_changed()
        logger.info("market %s removed (%s)", slug, status, extra={"market": slug,
                                                                   "reason": status})

    def forget_market(self, slug: str) -> None:
        """Drop what the feed keeps about a removed market (pending seeds, cached venue).

        A seed of it that has not gone out is withdrawn: if the market comes back, its new
        entry asks afresh (see :meth:`_request_seed`), never through the old entry's call.
        """
        self.seeds.forget(slug)
        self._again.pop(slug, None)
        unsent = self._unsent.get(slug)
        if unsent is not None:
            unsent[0].cancel()
        self._rest.forget(slug)

    def universe_changed(self) -> None:
        """Discovery changed the market set: resubscribe in the live session."""
        self._universe_changed.set()

    def publish(self, record: Record) -> None:
        """Hand one record to every sink (never awaits; see module docstring).

        Records made outside the synchronizers (``status``, ``market``, private ones …) are
        stamped with this run here; book records carry it already.
        """
        if record.run != self.run:
            record = msgspec.structs.replace(record, run=self.run)
        self.stats.records[record_type(record)] += 1
        self._fanout.publish_nowait(record)

    async def run_snapshots(self, interval_s: float) -> None:
        """Every ``interval_s``, a full ``book`` of every seeded market (its next ``seq``).

        So a consumer that starts reading late has a starting point for every market within
        one interval. Only while connected: a disconnected daemon's books are re-seeded, with
        ``book`` records, when it reconnects.
        """
        while True:
            await anyio.sleep(interval_s)
            if not self.stats.connected:
                continue
            for entry in self.universe.active():
                if not self._fanout.ready:
                    await self._fanout.wait_ready()
                record = entry.sync.snapshot_record(now_ms())  # None if unseeded
                if record is not None:
                    self.publish(record)

    def start_run(self, run: str) -> None:
        """Begin a new run: every market's ``seq`` restarts at 1 with a fresh ``book``.

        Used when this daemon becomes the publisher (``--lease``): the ``market`` records
        of the followed markets are re-published first, so a consumer of the new run has
        them. Markets not seeded yet start the run with their next ``book``.
        """
        self.run = self.universe.run = run
        self.universe.retired.clear()  # seq counts per (run, market): a new run starts at 1
        recv_ts = now_ms()
        for entry in self.universe.active():  # the market metadata, under the new run too
            self.publish(entry.info)
        for entry in self.universe.markets.values():
            record = entry.sync.new_run(run, recv_ts)
            if record is not None:
                self.publish(record)

    def emit_status(self, state: str, reason: str | None = None, **extra: int | str) -> None:
        """Publish a ``status`` record."""
        self.publish(Status(v=SCHEMA_VERSION, state=state, recv_ts=now_ms(), reason=reason,
                            **extra))  # type: ignore[arg-type]

    def on_disconnect(self, reason: str, detail: str, attempt: int, delay_s: float) -> None:
        """The supervisor lost the session: count, log once, emit ``status``."""
        self.stats.disconnects[reason] += 1
        healthy = self.session_healthy
        logger.warning("feed disconnected (%s: %s); %s session, reconnecting in %.2fs "
                       "(attempt %d)", reason, detail, "healthy" if healthy else "failed",
                       delay_s, attempt,
                       extra={"reason": reason, "attempt": attempt, "delay_s": round(delay_s, 3),
                              "healthy": healthy})
        self.emit_status("disconnected", f"{reason}: {detail}", attempt=attempt)

    async def before_connect(self) -> None:
        """Hold the next connect until every ``block`` sink has drained to low water."""
        if not self._fanout.drained:
            blocked = ", ".join(self._fanout.blocked_sinks()) or "a block sink"
            logger.warning("waiting for sink %s to drain before reconnecting", blocked,
                           extra={"sink": blocked})
            await self._fanout.wait_drained()

    async def run_session(self, transport: Transport) -> None:
        """Run one connected session until it ends; always raises.

        Raises:
            TransportError: heartbeat timeout, kick, connect error or lost socket.
        """
        protocol = SocketIOProtocol(namespace=self._settings.feed.namespace)
        self.stats.sessions += 1
        self.session_healthy = False
        self._subscribed_version = -1
        self._snapshot_due = anyio.Event()
        try:
            async with anyio.create_task_group() as tg:
                if self.private is not None and self.private.settings.snapshot:
                    tg.start_soon(self._private_snapshots)
                for _ in range(self._settings.rest.seed_concurrency):
                    tg.start_soon(self._seeder)
                tg.start_soon(self._watch_universe, transport, protocol)
                tg.start_soon(self._check_freshness)
                await self._read_loop(transport, protocol)
        finally:
            self.stats.connected = False
            self._inflight.clear()

    # -- the reader -----------------------------------------------------------------

    async def _read_loop(self, transport: Transport, protocol: SocketIOProtocol) -> None:
        # Watchdog: the scope's deadline is moved on only when it has drifted by more than
        # 1/8 of the window (rescheduling an event-loop timer per frame is measurable), and
        # the window carries that 1/8 as slack: the session fails after between 1x and
        # 1.125x the window (pingInterval + pingTimeout) without any frame.
        liveness_s = self._settings.feed.connect_timeout_s
        window = liveness_s * 1.125
        clock = _deadline_clock()
        stats = self.stats
        fanout = self._fanout
        healthy = False
        book_prefix = protocol.event_prefix("orderbookUpdate")
        book_start = protocol.event_data_start
        with anyio.CancelScope(deadline=clock() + window) as watchdog:
            while True:
                frame = await transport.receive()
                now = clock()
                stats.last_frame_monotonic = now
                if watchdog.deadline - now < liveness_s:
                    watchdog.deadline = now + window
                if not fanout.ready:
                    # Never wait for a sink here: pongs would stop and the venue would drop
                    # us anyway. Close on purpose; before_connect() waits for the drain.
                    stats.sink_blocked += 1
                    raise SinkBlocked("sink queue full: "
                                      + (", ".join(fanout.blocked_sinks()) or "block sink"))
                stats.frames += 1
                if not stats.frames & YIELD_MASK:
                    # The client hands over queued frames without suspending: let the
                    # fan-out, the sinks and the timers run, or they starve behind us.
                    if fanout.behind:
                        stats.reader_pauses += 1
                        await anyio.sleep(READER_PAUSE_S)
                    else:
                        await anyio.lowlevel.checkpoint()
                if (frame.startswith(book_prefix) and protocol.accepting_events
                        and self._on_book_frame(frame, book_start)):
                    # The hot path: event array and payload in one decode, no event object.
                    protocol.stats.frames_received += 1
                    stats.book_events += 1
                    if not healthy:
                        self.session_healthy = healthy = True
                    continue
                protocol.receive_text(frame)
                for event in protocol.events_received():
                    if type(event) is EventReceived:
                        if not healthy:
                            self.session_healthy = healthy = True
                        if event.name == "orderbookUpdate":  # the hot path, inlined
                            stats.book_events += 1
                            self._on_orderbook(event.payload)
                        else:
                            self._on_event(event.name, event.payload)
                    elif isinstance(event, Opened):
                        liveness_s = (event.ping_interval_ms + event.ping_timeout_ms) / 1000.0
                        window = liveness_s * 1.125
                        watchdog.deadline = clock() + window
                    else:
                        self._on_control(event, protocol)
                for out in protocol.data_to_send():
                    await transport.send(out)
        raise HeartbeatTimeout(f"no frame for {liveness_s:.1f}s")

    def _on_control(self, event: object, protocol: SocketIOProtocol) -> None:
        if isinstance(event, NamespaceConnected):
            first = self.stats.disconnects.total() == 0
            self.stats.connected = True
            logger.info("feed connected: namespace %s joined", event.namespace)
            self.emit_status("connected")
            self._subscribe(protocol, "bootstrap" if first else "resubscribe")
            if self.private is not None:
                for name, body in self.private.subscribe_frames():
                    protocol.emit(name, body)
                self._snapshot_due.set()
        elif isinstance(event, FrameRejected):
            self.stats.frames_rejected += 1
            self._log_bad.warning("frame", "malformed frame skipped (%s): %.120r",
                                  event.reason, event.frame)
        elif isinstance(event, Disconnected):
            raise ServerDisconnect(f"server closed the session ({event.reason})")
        elif isinstance(event, ConnectRefusedEvent):
            raise ConnectRefused(f"namespace connect refused: {event.message}")
        elif isinstance(event, AckReceived):
            pass  # we request no acks

    def _subscribe(self, protocol: SocketIOProtocol, reason: str) -> None:
        """Send the one subscription with the full union, then re-seed every book."""
        slugs = self.universe.slugs()
        payload = _SUBSCRIBE_ENCODER.encode(
            _Subscribe(marketSlugs=slugs, marketAddresses=self.universe.addresses())
        )
        protocol.emit("subscribe_market_prices", payload)
        if self._settings.feed.lifecycle and self._subscribed_version < 0:
            protocol.emit("subscribe_market_lifecycle", b"{}")
        self._subscribed_version = self.universe.version
        self.stats.subscribed_markets = len(slugs)
        state = "subscribed" if reason == "bootstrap" else "resubscribed"
        self.emit_status(state, reason, markets=len(slugs))
        for slug in slugs:
            entry = self.universe.markets[slug]
            if reason != "universe":
                entry.sync.reset_clock()  # a new session: no exchange time carries over
            if reason != "universe" or not entry.sync.seeded:
                entry.sync.request_snapshot(reason)
                self._request_seed(slug, reason)

    def _on_event(self, name: str, payload: msgspec.Raw) -> None:
        self.stats.events[name] += 1
        if name == "newPriceData":
            self._on_price_data(payload)
        elif name in _LIFECYCLE:
            self._on_lifecycle(name, payload)
        elif self.private is not None and (
            records := self.private.handle(name, payload, now_ms())
        ) is not None:
            for record in records:
                self.publish(record)
        elif name == "exception":
            self._on_exception(payload)
        elif name not in ("system", "authenticated"):
            # One rate-limit key for all unknown names: a venue (or attacker) inventing
            # names must not grow the log or the limiter; the metric keeps the counts.
            self.stats.unknown_events[name[:40]] += 1
            self._log_bad.warning("unknown", "unknown event %.40r ignored (further unknown "
                                  "events are counted in feed_unknown_events_total)", name)

    def _on_exception(self, payload: msgspec.Raw) -> None:
        """``exception`` (a ``WsException``, e.g. a refused private channel): log and count."""
        self.stats.exceptions += 1
        try:
            message = _EXCEPTION_DECODER.decode(payload).message
        except _DECODE_ERRORS:
            message = bytes(payload)[:200].decode("utf-8", "replace")
        self._log_bad.warning("exception", "venue exception: %.200s", message,
                              extra={"reason": "exception"})

    def _on_book_frame(self, frame: str, start: int) -> bool:
        """The hot path: a whole ``orderbookUpdate`` frame; False if it does not decode.

        ``frame[start:]`` is the event array; event and payload are decoded in one call.
        A frame that does not decode is left to the generic path (:meth:`_on_orderbook`
        via the protocol), which counts and logs the error exactly.
        """
        recv_ts = now_ms()
        try:
            update = ORDERBOOK_EVENT_DECODER.decode(frame[start:]).payload
            exchange_ts = timestamp_ms(update.timestamp)
        except _DECODE_ERRORS:
            return False
        self._on_update(update, exchange_ts, recv_ts)
        return True

    def _on_orderbook(self, payload: msgspec.Raw) -> None:
        recv_ts = now_ms()
        try:
            update: OrderbookUpdate = _ORDERBOOK_DECODER.decode(payload)
            exchange_ts = timestamp_ms(update.timestamp)
        except _DECODE_ERRORS as exc:
            self._decode_error("orderbookUpdate", exc)
            return
        self._on_update(update, exchange_ts, recv_ts)

    def _on_update(self, update: OrderbookUpdate, exchange_ts: int, recv_ts: int) -> None:
        ts: int | None = exchange_ts
        lag = recv_ts - exchange_ts
        if -self._skew_ms <= lag <= self._skew_ms:
            self._latency(lag)
        else:
            # Far from our clock (an epoch in microseconds, a venue clock fault): not trusted
            # for ordering, so it cannot freeze the market; the book is still applied.
            self.stats.clock_skew += 1
            self._log_bad.warning("skew", "%s: exchange timestamp %s is %.0fs from the local "
                                  "clock; not used for ordering", update.marketSlug, exchange_ts,
                                  lag / 1000, extra={"market": update.marketSlug})
            ts = None
        entry = self.universe.markets.get(update.marketSlug)
        if entry is None:
            self.stats.unknown_market += 1
            return
        book = update.orderbook
        token = book.tokenId
        if isinstance(token, int):  # a JSON number: its decimal string
            token = str(token)
        elif not token:
            token = entry.token
        if entry.token and token != entry.token:
            self.stats.foreign_token += 1
            return
        sync = entry.sync
        applied = sync.stats.applied
        bids: list[PriceLevel] | msgspec.Raw = book.bids
        asks: list[PriceLevel] | msgspec.Raw = book.asks
        if self._depth is not None:
            bids = top_levels(bids, self._depth, bids=True)
            asks = top_levels(asks, self._depth, bids=False)
        try:
            record = sync.on_update(
                BookSnapshot(entry.slug, token, bids, asks, ts, recv_ts)
            )
        except InvalidLevel as exc:
            self.stats.invalid_books += 1
            self._log_bad.warning("invalid", "invalid book for %s skipped: %s", entry.slug, exc)
            return
        if sync.stats.applied == applied:
            return  # stale, dropped: it says nothing about the market's freshness
        entry.last_update_ms = mono_ms()
        if record is not None:
            self._fanout.publish_nowait(record)  # counted by the synchronizer's stats
        if sync.needs_snapshot and sync.snapshot_reason == "crossed":
            if entry.slug not in self._inflight:
                self.seeds.want_crossed(entry.slug, entry.last_update_ms, time.monotonic())
                self._wake.set()
            elif entry.slug not in self._unsent:
                # The call in flight went out before this book: its answer may be older
                # than what was held before the crossing. Fetch again once it is done.
                self._again[entry.slug] = "crossed"
        else:
            if self.seeds.has_crossed:
                self.seeds.uncrossed(entry.slug)
            slug = entry.slug
            if slug in self.seeds or slug in self._unsent or slug in self._again:
                self._book_arrived(slug)

    def _book_arrived(self, slug: str) -> None:
        """A full WebSocket book was applied: a seed not sent yet is no longer worth a REST
        call, whether it waits in the queue or for the shared pace.

        Audits stay: they exist to compare REST with what the WebSocket gave us.
        """
        reason: str | None
        again = self._again.get(slug)
        if again is not None and again != "audit":
            del self._again[slug]  # the sent call's answer is superseded by this book anyway
            self.stats.seeds_skipped += 1
        unsent = self._unsent.get(slug)
        if unsent is not None:
            scope, reason = unsent
            if reason == "audit":
                return
            scope.cancel()  # before the request went out: nothing reaches the venue
        else:
            reason = self.seeds.reason(slug)
            if reason is None or reason == "audit":
                return
            self.seeds.cancel(slug)
        self.stats.seeds_skipped += 1
        entry = self.universe.markets[slug]
        entry.sync.snapshot_satisfied()

    def _on_price_data(self, payload: msgspec.Raw) -> None:
        try:
            address = _ADDRESS_DECODER.decode(payload).marketAddress
        except _DECODE_ERRORS as exc:
            self._decode_error("newPriceData", exc)
            return
        self.publish(PriceData(v=SCHEMA_VERSION, recv_ts=now_ms(),
                               market=self.universe.amm.get(address or "", address), data=payload))

    def _on_lifecycle(self, name: str, payload: msgspec.Raw) -> None:
        """``marketCreated`` / ``marketResolved``: pass through, then tell discovery."""
        decoder, record_type_, kind = _LIFECYCLE[name]
        try:
            slug: str = decoder.decode(payload).slug
        except _DECODE_ERRORS as exc:
            self._decode_error(name, exc)
            return
        self.publish(record_type_(v=SCHEMA_VERSION, recv_ts=now_ms(), market=slug, data=payload))
        if self.on_market_event is not None:
            self.on_market_event(kind, slug)

    def _decode_error(self, name: str, exc: Exception) -> None:
        self.stats.decode_errors[name] += 1
        self._log_bad.warning("decode:" + name, "undecodable %s payload skipped: %s", name, exc)

    async def _private_snapshots(self) -> None:
        assert self.private is not None
        while True:
            await self._snapshot_due.wait()
            self._snapshot_due = anyio.Event()
            try:
                records = await self.private.snapshot(self._rest)
            except RestError as exc:
                logger.warning("portfolio snapshot failed: %s", exc)
                continue
            if not self._fanout.ready:
                await self._fanout.wait_ready()
            for record in records:
                self.publish(record)

    # -- seeding --------------------------------------------------------------------

    def _request_seed(self, slug: str, reason: str) -> None:
        if slug in self._inflight:
            # A call not sent yet answers this request too, unless it was withdrawn. One
            # already sent may carry a book from before what made this request (a
            # resubscribe after a drop): ask again once it is done, unless this is only a
            # check.
            unsent = self._unsent.get(slug)
            if unsent is None:
                if reason not in CHECK_REASONS:
                    self._again.setdefault(slug, reason)
            elif unsent[0].cancel_called:
                self._again.setdefault(slug, reason)
            return
        entry = self.universe.markets.get(slug)
        verified = entry.last_update_ms if entry is not None else 0
        self.seeds.want(slug, reason, verified, time.monotonic())
        self._wake.set()

    async def _seeder(self) -> None:
        """Take due markets off the seed queue, one REST book at a time.

        Waiting for a market's backoff never holds this task: it sleeps until the next
        market is due or a new request wakes it.
        """
        seeds = self.seeds
        while True:
            item = seeds.pop(time.monotonic())
            if item is None:
                due_in = seeds.next_due_in(time.monotonic())
                with anyio.move_on_after(math.inf if due_in is None else due_in):
                    if self._wake.is_set():
                        self._wake = anyio.Event()
                    await self._wake.wait()
                continue
            slug, reason = item
            if slug in self._inflight:
                self._request_seed(slug, reason)  # answered by that call, or asked again
                continue
            self._inflight.add(slug)
            done = False
            try:
                await self._seed(slug, reason)
                done = True
            finally:
                self._inflight.discard(slug)
                again = self._again.pop(slug, None)
                if self.universe.get(slug) is not None:
                    if not done:  # cancelled with the session: it still needs its book
                        self.seeds.want(slug, reason, 0, time.monotonic())
                    elif again is not None:
                        self.seeds.want(slug, again, 0, time.monotonic())

    def _seed_failed(self, entry: MarketEntry, slug: str, reason: str, exc: Exception) -> None:
        self.stats.seed_failures += 1
        if self.universe.get(slug) is not entry:
            return
        delay = self.seeds.failed(slug, reason, entry.last_update_ms, time.monotonic())
        self._log_bad.warning("seed", "seeding %s failed: %s; retrying in %.1fs",
                              slug, exc, delay,
                              extra={"market": slug, "reason": reason,
                                     "delay_s": round(delay, 3)})
        self._wake.set()

    async def _seed(self, slug: str, reason: str) -> None:
        entry = self.universe.get(slug)
        if entry is None:
            return
        sync = entry.sync
        before = sync.stats.applied

        def sent(tag: str | None) -> None:  # it goes out now: it cannot be withdrawn
            nonlocal before, reason
            if unsent.cancel_called:
                # Withdrawn, but this task woke before the cancellation reached it: stop
                # the request here, before it is written.
                raise _Withdrawn
            before = sync.stats.applied
            self._unsent.pop(slug, None)
            if tag is not None:  # a replay: the live run's request was for this reason
                reason = tag

        with anyio.CancelScope() as unsent:
            self._unsent[slug] = (unsent, reason)
            try:
                payload = await self._rest.orderbook(slug, attempts=1, on_send=sent, tag=reason)
            except RestError as exc:
                self._seed_failed(entry, slug, reason, exc)
                return
            except _Withdrawn:
                return
            finally:
                self._unsent.pop(slug, None)
        if unsent.cancel_called:
            return  # withdrawn before it was sent (a WebSocket book, or the market left)
        self.seeds.succeeded(slug)
        if self.universe.get(slug) is not entry:
            return  # removed (or removed and re-added) while we were fetching
        recv_ts = now_ms()
        if not self._fanout.ready:
            await self._fanout.wait_ready()
        if self._depth is not None:
            payload = msgspec.structs.replace(
                payload, bids=top_levels(payload.bids, self._depth, bids=True),
                asks=top_levels(payload.asks, self._depth, bids=False))
        if sync.seeded and sync.stats.applied != before and not sync.book.is_crossed():
            # A full WS book arrived while we were fetching: it is at least as fresh as
            # anything REST can tell us, and any later change brings another update.
            self.stats.seeds_superseded += 1
            sync.snapshot_satisfied()
            return
        if reason in CHECK_REASONS:
            self.stats.probes += 1
            if same_book(sync.book, payload):
                self.stats.quiet += reason == "stale_probe"
                return
            self.stats.divergences[reason] += 1
            logger.warning("%s: held book differs from REST (%s); re-seeding", slug, reason,
                           extra={"market": slug, "reason": reason})
            self.emit_status("divergence", reason, market=slug)
        token = normalize_token(payload.tokenId) or entry.token
        try:
            record = entry.sync.on_rest_snapshot(
                BookSnapshot(slug, token, payload.bids, payload.asks, None, recv_ts)
            )
        except InvalidLevel as exc:
            # Not applied: the held book may be from before a drop. Ask again later, as for
            # any failed seed, rather than leave it unconfirmed until a probe.
            self.stats.invalid_books += 1
            self._seed_failed(entry, slug, reason, exc)
            return
        entry.last_update_ms = mono_ms()
        self.stats.seeds[reason] += 1
        self.publish(record)

    # -- freshness ------------------------------------------------------------------

    async def _check_freshness(self) -> None:
        """Probe silent markets and audit a sample, through the seeders.

        A silent market is probed once per ``stale_after_s``: the seeder compares the
        REST book with the held one; equal means quiet, different means re-seed. The
        audit walks the markets round-robin, ``audit_sample`` every ``audit_interval_s``.
        """
        health = self._settings.health
        stale_ms = int(health.stale_after_s * 1000)
        audit_ms = int(health.audit_interval_s * 1000)
        next_audit = mono_ms() + audit_ms
        cursor = 0
        while True:
            await anyio.sleep(health.probe_check_s)
            if not self.stats.connected:
                continue
            now = mono_ms()
            entries = self.universe.active()
            for entry in entries:
                if (entry.sync.seeded and now - entry.last_update_ms > stale_ms
                        and now - entry.last_check_ms > stale_ms):
                    entry.last_check_ms = now
                    self._request_seed(entry.slug, "stale_probe")
            if audit_ms and health.audit_sample and entries and now >= next_audit:
                next_audit = now + audit_ms
                for _ in range(min(health.audit_sample, len(entries))):
                    entry = entries[cursor % len(entries)]
                    cursor += 1
                    if entry.sync.seeded:
                        self._request_seed(entry.slug, "audit")

    # -- subscription changes -------------------------------------------------------

    async def _watch_universe(self, transport: Transport, protocol: SocketIOProtocol) -> None:
        while True:
            await self._universe_changed.wait()
            self._universe_changed = anyio.Event()
            if self.stats.connected and self._subscribed_version != self.universe.version:
                self._subscribe(protocol, "universe")
                for out in protocol.data_to_send():
                    await transport.send(out)


def same_book(book: OrderBook, payload: OrderbookPayload) -> bool:
    """Whether a REST book equals the held one, level for level (exact numeric keys).

    The REST book is read exactly as :meth:`OrderBook.replace` would apply it (duplicate
    prices last-wins, size-0 levels absent); one with an invalid level is not the same.
    """
    rest = OrderBook()
    try:
        rest.replace(payload.bids, payload.asks)
    except InvalidLevel:
        return False
    return rest == book


class _Withdrawn(Exception):
    """A seed withdrawn after its task was woken to send it (internal to the feed)."""


class _Exception(msgspec.Struct):
    message: Any = None


_EXCEPTION_DECODER: Final = msgspec.json.Decoder(_Exception)


class _Address(msgspec.Struct):
    marketAddress: str | None = None


_ADDRESS_DECODER: Final = msgspec.json.Decoder(_Address)
