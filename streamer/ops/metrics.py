"""Prometheus export: the only module that imports ``prometheus_client``.

The hot path never touches Prometheus. The feed, the synchronizers and the fan-out count
in plain ints (:class:`~streamer.feed.feed.FeedStats`, :class:`~orderbook.sync.SyncStats`,
:class:`~sinks.fanout.SinkStats`); :class:`StatsCollector` reads them at scrape time, in
the event-loop thread (the HTTP server in :mod:`streamer.ops.health` runs there too, so a
scrape never races a mutation). Only histograms need work at event time, and that work
is :meth:`Histogram.observe`: one ``bisect`` and two additions.

Every exported name (``limitless_streamer_`` prefix; ``_total`` counters, ``_seconds``
base units):

================================================  =======  ===============================
name                                              type     labels
================================================  =======  ===============================
build_info                                        gauge    version, python, book_core
ready                                             gauge    (1 when /readyz says ready)
feed_connected                                    gauge
feed_sessions_total                               counter
feed_reconnects_total                             counter  reason (exception type)
feed_frames_total                                 counter
feed_last_frame_age_seconds                       gauge    (once a frame was stamped)
feed_events_total                                 counter  event (unknown names → other)
feed_unknown_events_total                         counter
feed_decode_errors_total                          counter  event
feed_frames_rejected_total                        counter
feed_invalid_books_total                          counter
feed_unknown_market_total                         counter
feed_foreign_token_total                          counter
feed_clock_skew_total                             counter  (timestamps not used for ordering)
feed_exceptions_total                             counter  (venue ``exception`` events)
feed_sink_blocked_total                           counter  (sessions closed for a full block sink)
feed_reader_pauses_total                          counter  (reader pauses for a sink half full)
records_emitted_total                             counter  type (book, book_delta, …)
book_updates_total                                counter  (WS books, all markets)
book_identical_suppressed_total                   counter
book_stale_dropped_total                          counter
book_crossed_total                                counter
book_seeds_total                                  counter  reason (REST (re-)seeds)
book_seeds_superseded_total                       counter
book_seed_failures_total                          counter
book_seeds_skipped_total                          counter  (a WS book made the REST call moot)
book_seeds_pending                                gauge    (markets waiting for a REST book)
book_checks_total                                 counter  (staleness probes + audits done)
book_checks_quiet_total                           counter  (probes: book unchanged, quiet)
book_divergences_total                            counter  reason (stale_probe, audit)
markets_subscribed                                gauge
markets_active                                    gauge
markets_unseeded                                  gauge
markets_divergent                                 gauge    (re-seed pending, divergent reason)
markets_update_age_max_seconds                    gauge    (oldest update, active markets)
markets_confirmed_age_max_seconds                 gauge    (oldest update-or-check)
market_best_bid / market_best_ask / market_spread gauge    market           (per_market)
market_levels                                     gauge    market, side     (per_market)
market_update_age_seconds                         gauge    market           (per_market)
market_confirmed_age_seconds                      gauge    market           (per_market)
market_seeded                                     gauge    market           (per_market)
rest_requests_total                               counter  endpoint, status ("error": no reply)
rest_retries_total                                counter  endpoint
rest_throttled_total                              counter  endpoint (HTTP 429)
rest_retry_wait_seconds_total                     counter  endpoint
rest_request_duration_seconds                     hist.    endpoint
rest_budget_acquired_total                        counter  (bound RateBudget)
rest_budget_wait_seconds_total                    counter
rest_budget_pauses_total                          counter  (429 pauses of every caller)
feed_latency_seconds                              hist.    (local receive − exchange time)
lease_held                                        gauge    (--lease: 1 while holding)
lease_takeovers_total                             counter  (--lease: acquisitions)
lease_lost_total                                  counter  reason (late, taken)
lease_errors_total                                counter  (--lease: failed broker calls)
records_fenced_total                              counter  (--lease: records held back)
process_latency_seconds                           hist.    sink (receive → sink write done)
sink_queue_depth / sink_queue_capacity            gauge    sink
sink_queue_max_depth / sink_in_flight             gauge    sink
sink_records_enqueued_total / _written_total      counter  sink
sink_records_dropped_total                        counter  sink
sink_records_conflated_total                      counter  sink   (if SinkStats.conflated)
sink_snapshots_total                              counter  sink   (if SinkStats.snapshots)
sink_errors_total / sink_retries_total            counter  sink
sink_state                                        gauge    sink, state (1 = current)
sink_spool_bytes / sink_spool_records             gauge    sink   (sinks with a ``spool``)
sink_spool_capacity_bytes                         gauge    sink
sink_broker_connected                             gauge    sink   (spooled broker sinks)
sink_broker_published_total / _rejected_total     counter  sink
sink_spooled_total / sink_replayed_total          counter  sink
sink_spool_full_total / sink_broker_outages_total counter  sink
================================================  =======  ===============================

Plus ``process_*`` and ``python_*`` from prometheus_client's own collectors
(``process_metrics=True``).
"""

from __future__ import annotations

import platform
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from decimal import Decimal
from operator import attrgetter
from typing import TYPE_CHECKING, Any, Final, Protocol

from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector

from orderbook import book
from streamer import __version__
from streamer.ops.histogram import FEED_LATENCY_BUCKETS, Histogram
from streamer.transport.rest import ENDPOINT_ACTIVE, ENDPOINT_MARKET, ENDPOINT_ORDERBOOK

if TYPE_CHECKING:
    from sinks.fanout import SinkStats
    from sinks.records import Record
    from streamer.feed.feed import FeedStats
    from streamer.feed.universe import MarketEntry, Universe

__all__ = [
    "DIVERGENT_REASONS",
    "FEED_LATENCY_BUCKETS",
    "KNOWN_EVENTS",
    "PREFIX",
    "PROCESS_LATENCY_BUCKETS",
    "FanoutLike",
    "FeedLike",
    "Histogram",
    "Metrics",
    "RestStats",
    "StatsCollector",
    "feed_readiness",
]

PREFIX: Final = "limitless_streamer_"

PROCESS_LATENCY_BUCKETS: Final = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                                  2.5, 5.0, 10.0)
"""Record ``recv_ts`` is epoch milliseconds, so nothing finer than 1 ms is meaningful."""
REST_DURATION_BUCKETS: Final = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

KNOWN_EVENTS: Final = frozenset({
    "orderbookUpdate", "newPriceData", "marketCreated", "marketResolved", "system",
    "authenticated",
})
"""Event names exported as label values; any other (peer-chosen) name becomes ``other``."""
OTHER: Final = "other"
_CHECKS_ZERO: Final = {"stale_probe": 0, "audit": 0}
_RECV_TS: Final = attrgetter("recv_ts")
_DECODED_ZERO: Final = {"orderbookUpdate": 0, "newPriceData": 0, "marketCreated": 0,
                        "marketResolved": 0}
"""Events the feed decodes: their decode-error series start at 0 (rate() works at once)."""

DIVERGENT_REASONS: Final = frozenset({"crossed", "audit", "stale_probe", "divergence"})
"""``sync.snapshot_reason`` values that mean the held book is known to be wrong.

A pending re-seed for one of these makes ``/readyz`` fail. ``initial`` (never seeded) fails
it too, through ``seeded``; ``bootstrap``/``resubscribe``/``universe`` re-seeds after a
(re)subscribe do not: the held book is merely unconfirmed, not known to be wrong.
"""


KNOWN_ENDPOINTS: Final = (ENDPOINT_ACTIVE, ENDPOINT_MARKET, ENDPOINT_ORDERBOOK)


class RestStats:
    """REST counters; implements :class:`streamer.transport.rest.RestObserver`.

    Pass ``metrics.rest`` as the ``observer`` of the :class:`RestClient`.

    Args:
        endpoints: endpoint templates whose retry/429 counters start at 0.

    Attributes:
        requests: attempts by ``(endpoint, status)``; status ``"error"`` = no HTTP reply.
        retries: retries by endpoint.
        throttled: HTTP 429 replies by endpoint.
        retry_wait_s: seconds slept before retries, by endpoint.
        durations: attempt durations by endpoint.
    """

    __slots__ = ("durations", "requests", "retries", "retry_wait_s", "throttled")

    def __init__(self, endpoints: Iterable[str] = KNOWN_ENDPOINTS) -> None:
        # Known endpoints start at 0 so rate() and alerts see a series before the first
        # retry or 429 (Prometheus practice: initialise label values you know).
        self.requests: Counter[tuple[str, str]] = Counter()
        self.retries: Counter[str] = Counter({e: 0 for e in endpoints})
        self.throttled: Counter[str] = Counter({e: 0 for e in endpoints})
        self.retry_wait_s: dict[str, float] = {e: 0.0 for e in endpoints}
        self.durations: dict[str, Histogram] = {}

    def on_response(
        self, endpoint: str, status: int | None, elapsed_s: float, attempt: int
    ) -> None:
        """Count one attempt (``RestObserver``)."""
        self.requests[(endpoint, "error" if status is None else str(status))] += 1
        if status == 429:
            self.throttled[endpoint] += 1
        hist = self.durations.get(endpoint)
        if hist is None:
            hist = self.durations[endpoint] = Histogram(REST_DURATION_BUCKETS)
        hist.observe(elapsed_s)

    def on_retry(self, endpoint: str, status: int | None, delay_s: float) -> None:
        """Count one retry and its delay (``RestObserver``)."""
        self.retries[endpoint] += 1
        self.retry_wait_s[endpoint] = self.retry_wait_s.get(endpoint, 0.0) + delay_s


class FeedLike(Protocol):
    """What the collector reads from the feed (``streamer.feed.feed.Feed`` fits)."""

    @property
    def stats(self) -> FeedStats: ...

    @property
    def universe(self) -> Universe: ...


class FanoutLike(Protocol):
    """What the collector reads from the fan-out (``sinks.fanout.Fanout`` fits)."""

    @property
    def stats(self) -> Mapping[str, SinkStats]: ...


class BudgetLike(Protocol):
    """What the collector reads from the REST rate budget (``streamer.feed.budget.RateBudget``)."""

    acquired: int
    waited_s: float
    pauses: int


def feed_readiness(feed: FeedLike | None) -> tuple[bool, str]:
    """Ready = connected, subscribed, every active book seeded and not known-divergent.

    Args:
        feed: the bound feed, or ``None`` before it exists.

    Returns:
        ``(ready, reason)``; the reason is one short line for ``/readyz``.
    """
    if feed is None:
        return False, "feed not started"
    stats = feed.stats
    if not stats.connected:
        return False, "feed not connected"
    # Feed._subscribe runs in the same synchronous step that sets ``connected``, so
    # ``connected`` implies ``subscribed`` unless the feed says otherwise.
    if not getattr(stats, "subscribed", True):
        return False, "feed connected but not subscribed"
    active = feed.universe.active()
    unseeded = [e.slug for e in active if not e.sync.seeded]
    if unseeded:
        return False, f"{len(unseeded)} market(s) not seeded yet, e.g. {unseeded[0]}"
    divergent = [e.slug for e in active if _divergent(e)]
    if divergent:
        return False, f"{len(divergent)} market(s) known divergent, e.g. {divergent[0]}"
    return True, f"ready: {len(active)} market(s) live"


def _divergent(entry: MarketEntry) -> bool:
    sync = entry.sync
    return sync.needs_snapshot and sync.snapshot_reason in DIVERGENT_REASONS


class Metrics:
    """Owns the registry and the collector; the app binds the live objects to it.

    Args:
        registry: where to register (tests pass a fresh ``CollectorRegistry``); default: a
            new private registry (never prometheus_client's global one).
        per_market: export per-market series (6 per market); switch off for very large
            universes (aggregates such as ``markets_update_age_max_seconds`` stay).
        process_metrics: also register prometheus_client's process/platform/GC collectors.

    Attributes:
        registry: the registry served on ``/metrics``.
        rest: REST counters; pass as the RestClient ``observer``.
        feed_latency: exported when the feed has no ``stats.latency`` histogram of its own.
        process_latency: receive → sink-write latency per sink, fed by :meth:`on_written`.
    """

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        *,
        per_market: bool = True,
        process_metrics: bool = True,
    ) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.per_market = per_market
        self.rest = RestStats()
        self.feed_latency = Histogram(FEED_LATENCY_BUCKETS)
        self.process_latency: dict[str, Histogram] = {}
        self.feed: FeedLike | None = None
        self.fanout: FanoutLike | None = None
        self.budget: BudgetLike | None = None
        self.sinks: Sequence[object] = ()
        self.allowances: Any = None
        """The AllowanceWatcher (issue 5), when partner profiles are watched."""
        self.lease: Any = None
        """The Lease task (hot standby), when ``--lease`` is given."""
        self.gate: Any = None
        self.registry.register(StatsCollector(self))
        if process_metrics:
            ProcessCollector(registry=self.registry)
            PlatformCollector(registry=self.registry)
            GCCollector(registry=self.registry)

    def bind(
        self,
        *,
        feed: FeedLike | None = None,
        fanout: FanoutLike | None = None,
        budget: BudgetLike | None = None,
        sinks: Sequence[object] | None = None,
        allowances: Any = None,
        lease: Any = None,
        gate: Any = None,
    ) -> None:
        """Attach the live objects read at every scrape.

        Args:
            feed: the feed (its stats, universe and books).
            fanout: the fan-out (per-sink queue stats).
            budget: the shared REST rate budget.
            sinks: the sink objects (``spec.sink``); those with a ``spool`` and delivery
                ``stats`` (spooled broker sinks) get spool and broker series.
        """
        if feed is not None:
            self.feed = feed
        if fanout is not None:
            self.fanout = fanout
        if budget is not None:
            self.budget = budget
        if sinks is not None:
            self.sinks = tuple(sinks)
        if allowances is not None:
            self.allowances = allowances
        if lease is not None:
            self.lease = lease
        if gate is not None:
            self.gate = gate

    def on_written(self, sink: str, batch: Sequence[Record]) -> None:
        """A sink's ``write(batch)`` returned: observe receive → write latency per record."""
        hist = self.process_latency.get(sink)
        if hist is None:
            hist = self.process_latency[sink] = Histogram(PROCESS_LATENCY_BUCKETS)
        hist.observe_ages_ms(time.time() * 1000.0, map(_RECV_TS, batch))

    def readiness(self) -> tuple[bool, str]:
        """``/readyz``: every sink delivering, and the feed ready (:func:`feed_readiness`).

        A sink that is failing, stopped, blocked or behind makes the daemon not ready, with
        the sink named in the reason: records are not reaching a consumer on time.
        """
        unhealthy = getattr(self.fanout, "unhealthy_sinks", None)
        if unhealthy is not None:
            bad = unhealthy()
            if bad:
                return False, "sink " + "; ".join(f"{name} {why}" for name, why in bad)
        return feed_readiness(self.feed)

    def render(self, accept: str = "") -> tuple[bytes, str]:
        """The registry in the format the ``Accept`` header asks for.

        Returns:
            ``(body, content_type)``; Prometheus text 0.0.4 unless OpenMetrics is accepted.
        """
        encoder, content_type = choose_encoder(accept)
        return encoder(self.registry), content_type


# -- the collector ---------------------------------------------------------------------------


def _counter(name: str, doc: str, labels: Sequence[str] = ()) -> CounterMetricFamily:
    return CounterMetricFamily(PREFIX + name, doc, labels=labels)


def _gauge(name: str, doc: str, labels: Sequence[str] = ()) -> GaugeMetricFamily:
    return GaugeMetricFamily(PREFIX + name, doc, labels=labels)


def _histogram(
    name: str, doc: str, items: Iterable[tuple[Sequence[str], Histogram]],
    labels: Sequence[str] = (),
) -> HistogramMetricFamily:
    family = HistogramMetricFamily(PREFIX + name, doc, labels=labels)
    for values, hist in items:
        family.add_metric(list(values), hist.cumulative(), hist.total)
    return family


def _by_label(family: CounterMetricFamily | GaugeMetricFamily,
              values: Mapping[str, float] | int | float | None) -> None:
    """Add a ``Counter``/dict by label value, or a bare number as label value ``all``."""
    if values is None:
        return
    if isinstance(values, Mapping):
        for key, value in sorted(values.items()):
            family.add_metric([str(key)], float(value))
    else:
        family.add_metric(["all"], float(values))


def _bounded(counts: Mapping[str, int], known: frozenset[str]) -> dict[str, int]:
    """Fold peer-chosen label values outside ``known`` into ``other`` (bounded cardinality)."""
    out: dict[str, int] = {}
    for key, value in counts.items():
        label = key if key in known else OTHER
        out[label] = out.get(label, 0) + value
    return out


class StatsCollector(Collector):
    """Reads the bound stats objects at scrape time (see the module docstring)."""

    def __init__(self, metrics: Metrics) -> None:
        self._m = metrics

    def collect(self) -> Iterator[Metric]:
        """Yield every family; called by the registry on each scrape."""
        m = self._m
        info = _gauge("build_info", "Build information (value is always 1); book_core is c "
                      "(the C fast path) or python (not built, or turned off).",
                      ["version", "python", "book_core"])
        info.add_metric([__version__, platform.python_version(),
                         "c" if book.C_PLAN is not None else "python"], 1.0)
        yield info
        ready = _gauge("ready", "1 when /readyz reports ready, else 0.")
        ready.add_metric([], 1.0 if m.readiness()[0] else 0.0)
        yield ready
        if m.feed is not None:
            yield from self._feed(m.feed.stats)
            yield from self._books(m.feed)
            if m.per_market:
                yield from self._markets(m.feed.universe)
        yield from self._rest(m.rest)
        yield from self._latency(m)
        if m.fanout is not None:
            yield from self._sinks(m.fanout.stats)
        yield from self._delivery(m.sinks)
        private = getattr(m.feed, "private", None)
        if private is not None:
            yield from self._private(private.stats)
        if m.allowances is not None:
            yield from self._allowances(m.allowances)
        if m.lease is not None:
            yield from self._lease(m.lease, m.gate)

    # -- hot standby ---------------------------------------------------------------------------

    def _lease(self, lease: Any, gate: Any) -> Iterator[Metric]:
        stats = lease.stats
        held = _gauge("lease_held", "1 while this daemon holds the lease and publishes, "
                                    "0 while it is a hot standby.")
        held.add_metric([], 1.0 if stats.held and gate is not None and gate.holding else 0.0)
        yield held
        yield self._plain("lease_takeovers_total",
                          "Times this daemon acquired the lease (each starts a new run).",
                          stats.takeovers)
        lost = _counter("lease_lost_total", "Times this daemon stopped publishing because "
                        "its lease was late, taken or lost.", ["reason"])
        for reason in ("late", "taken"):
            lost.add_metric([reason], float(stats.lost.get(reason, 0)))
        yield lost
        yield self._plain("lease_errors_total", "Lease broker calls that failed.",
                          stats.errors)
        if gate is not None:
            yield self._plain("records_fenced_total", "Records not published because this "
                              "daemon did not hold the lease for their run.", gate.fenced)

    # -- private channels and allowances (issue 5) --------------------------------------------

    def _private(self, p: Any) -> Iterator[Metric]:
        c = _counter("private_events", "Private-channel events received, by name.", ["event"])
        _by_label(c, p.events)
        yield c
        yield self._plain("private_duplicates", "Order events dropped as duplicate eventIds.",
                          p.duplicates)
        c = _counter("private_decode_errors",
                     "Private payloads that did not decode (passed through raw).", ["event"])
        _by_label(c, p.decode_errors)
        yield c
        yield self._plain("private_auth_rejections",
                          "Server notices refusing a private channel's credentials.",
                          p.auth_rejections)
        yield self._plain("private_snapshots", "Portfolio snapshots fetched.", p.snapshots)
        yield self._plain("private_snapshot_failures", "Portfolio snapshots that failed.",
                          p.snapshot_failures)

    def _allowances(self, watcher: Any) -> Iterator[Metric]:
        ready = _gauge("allowance_ready",
                       "1 when the partner sub-account's allowances are all confirmed, 0 when "
                       "not, absent before the first answer.", ["profile"])
        targets = _gauge("allowance_targets", "Allowance targets by status.",
                         ["profile", "status"])
        problem = _gauge("allowance_problem",
                         "1 while a credentials/scope or unknown-profile problem persists.",
                         ["profile"])
        for pid, state in sorted(watcher.state.items()):
            label = str(pid)
            if state.ready is not None:
                ready.add_metric([label], 1.0 if state.ready else 0.0)
            for status, count in sorted(state.counts.items()):
                targets.add_metric([label, status], float(count))
            problem.add_metric([label], 1.0 if state.problem else 0.0)
        yield ready
        yield targets
        yield problem
        c = _counter("allowance_calls", "Allowance API calls by operation and outcome.",
                     ["call"])
        _by_label(c, watcher.stats.calls)
        yield c

    # -- feed ---------------------------------------------------------------------------------

    def _feed(self, s: FeedStats) -> Iterator[Metric]:
        g = _gauge("feed_connected", "1 while the Socket.IO namespace is joined.")
        g.add_metric([], 1.0 if s.connected else 0.0)
        yield g
        yield self._plain("feed_sessions", "WebSocket sessions started.", s.sessions)
        c = _counter("feed_reconnects", "Sessions lost, by reason (exception type).", ["reason"])
        _by_label(c, s.disconnects)
        yield c
        yield self._plain("feed_frames", "WebSocket text frames received.", s.frames)
        g = _gauge("feed_last_frame_age_seconds", "Seconds since the last frame.")
        last = getattr(s, "last_frame_monotonic", 0.0)
        if last:
            g.add_metric([], max(0.0, time.monotonic() - last))
        yield g
        c = _counter("feed_events", "Socket.IO events received, by event name.", ["event"])
        events = _bounded(s.events, KNOWN_EVENTS)
        if s.book_events:
            events["orderbookUpdate"] = events.get("orderbookUpdate", 0) + s.book_events
        _by_label(c, events)
        yield c
        yield self._plain("feed_unknown_events", "Events with an unknown name (ignored).",
                          s.unknown_events.total())
        c = _counter("feed_decode_errors", "Event payloads that failed to decode.", ["event"])
        _by_label(c, {**_DECODED_ZERO, **_bounded(s.decode_errors, KNOWN_EVENTS)})
        yield c
        yield self._plain("feed_frames_rejected", "Malformed frames skipped.", s.frames_rejected)
        yield self._plain("feed_invalid_books", "Books with invalid levels refused.",
                          s.invalid_books)
        yield self._plain("feed_unknown_market", "Books for a market not followed.",
                          s.unknown_market)
        yield self._plain("feed_foreign_token", "Books for another token of a followed market.",
                          s.foreign_token)
        yield self._plain("feed_clock_skew", "Books whose exchange timestamp was too far from "
                          "the local clock to order by (applied, stamped locally).",
                          s.clock_skew)
        yield self._plain("feed_exceptions", "The venue's exception events.", s.exceptions)
        yield self._plain("feed_sink_blocked", "Sessions closed on purpose because a block "
                          "sink's queue was full.", s.sink_blocked)
        yield self._plain("feed_reader_pauses", "1 ms pauses of the WebSocket reader to let a "
                          "sink queue more than half full catch up.", s.reader_pauses)
        c = _counter("book_seeds", "REST (re-)seeds applied, by reason.", ["reason"])
        _by_label(c, s.seeds)
        yield c
        yield self._plain("book_seeds_superseded",
                          "REST seeds skipped: a WebSocket book arrived during the fetch.",
                          s.seeds_superseded)
        yield self._plain("book_seed_failures", "REST seed fetches that failed (retried).",
                          s.seed_failures)
        yield self._plain("book_seeds_skipped", "Pending REST seeds dropped before the call: "
                          "a full WebSocket book arrived first.", s.seeds_skipped)
        seeds = getattr(self._m.feed, "seeds", None)
        if seeds is not None:
            g = _gauge("book_seeds_pending", "Markets waiting for a REST book.")
            g.add_metric([], float(len(seeds)))
            yield g
        yield self._plain("book_checks", "Held books compared with REST (staleness probes "
                          "and audits).", s.probes)
        yield self._plain("book_checks_quiet", "Staleness probes that found the book "
                          "unchanged (a quiet market, not a stale one).", s.quiet)
        c = _counter("book_divergences", "Held books found to differ from REST, by check.",
                     ["reason"])
        _by_label(c, {**_CHECKS_ZERO, **s.divergences})
        yield c
        g = _gauge("markets_subscribed", "Markets in the live subscription.")
        g.add_metric([], float(s.subscribed_markets))
        yield g

    @staticmethod
    def _plain(name: str, doc: str, value: float) -> CounterMetricFamily:
        return CounterMetricFamily(PREFIX + name, doc, value=float(value))

    def _books(self, feed: FeedLike) -> Iterator[Metric]:
        totals = Counter[str]()
        universe = feed.universe
        # removed markets' counters too: a counter never goes down
        for st in (*(e.sync.stats for e in universe.markets.values()), universe.removed_stats):
            totals["updates"] += st.updates
            totals["identical"] += st.identical_suppressed
            totals["stale"] += st.stale_dropped
            totals["crossed"] += st.crossed
            totals["book"] += st.books_emitted
            totals["book_delta"] += st.deltas_emitted
        # Book records are counted by their synchronizer (the feed publishes WS deltas
        # without touching stats.records); everything else by the feed.
        records = {k: v for k, v in feed.stats.records.items() if k not in _BOOK_TYPES}
        c = _counter("records_emitted", "Records handed to the fan-out, by type.", ["type"])
        _by_label(c, {**records, "book": totals["book"], "book_delta": totals["book_delta"]})
        yield c
        yield self._plain("book_updates", "WebSocket books received (all markets).",
                          totals["updates"])
        yield self._plain("book_identical_suppressed",
                          "WebSocket books identical to the held one (nothing emitted).",
                          totals["identical"])
        yield self._plain("book_stale_dropped",
                          "WebSocket books older than the held one (dropped).", totals["stale"])
        yield self._plain("book_crossed", "Applied books with best bid >= best ask.",
                          totals["crossed"])
        active = feed.universe.active()
        now = time.monotonic()
        ages = [a for a in (_age(e.last_update_ms, now) for e in active) if a is not None]
        confirmed = [a for a in (_age(_confirmed_ms(e), now) for e in active) if a is not None]
        for name, doc, value in (
            ("markets_active", "Markets followed now.", len(active)),
            ("markets_unseeded", "Followed markets without a full book yet.",
             sum(1 for e in active if not e.sync.seeded)),
            ("markets_divergent", "Markets with a re-seed pending for a divergent reason.",
             sum(1 for e in active if _divergent(e))),
        ):
            g = _gauge(name, doc)
            g.add_metric([], float(value))
            yield g
        for name, doc, values in (
            ("markets_update_age_max_seconds",
             "Seconds since the least recently updated market was last updated.", ages),
            ("markets_confirmed_age_max_seconds",
             "Largest time since a market was last updated or checked against REST.",
             confirmed),
        ):
            g = _gauge(name, doc)
            if values:
                g.add_metric([], max(values))
            yield g

    def _markets(self, universe: Universe) -> Iterator[Metric]:
        bid = _gauge("market_best_bid", "Best bid price.", ["market"])
        ask = _gauge("market_best_ask", "Best ask price.", ["market"])
        spread = _gauge("market_spread", "Best ask minus best bid.", ["market"])
        levels = _gauge("market_levels", "Price levels on one side.", ["market", "side"])
        age = _gauge("market_update_age_seconds",
                     "Seconds since the last WebSocket book or REST seed.", ["market"])
        confirmed = _gauge("market_confirmed_age_seconds",
                           "Seconds since the last update or REST check of the book.",
                           ["market"])
        seeded = _gauge("market_seeded", "1 once a full book is held.", ["market"])
        now = time.monotonic()
        for entry in universe.active():
            label = [entry.slug]
            book = entry.sync.book
            best_bid, best_ask = book.best_bid(), book.best_ask()
            if best_bid is not None:
                bid.add_metric(label, float(best_bid))
            if best_ask is not None:
                ask.add_metric(label, float(best_ask))
            if best_bid is not None and best_ask is not None:
                spread.add_metric(label, float(Decimal(best_ask) - Decimal(best_bid)))  # exact
            levels.add_metric([entry.slug, "bid"], float(book.n_bids))
            levels.add_metric([entry.slug, "ask"], float(book.n_asks))
            seconds = _age(entry.last_update_ms, now)
            if seconds is not None:
                age.add_metric(label, seconds)
            seconds = _age(_confirmed_ms(entry), now)
            if seconds is not None:
                confirmed.add_metric(label, seconds)
            seeded.add_metric(label, 1.0 if entry.sync.seeded else 0.0)
        yield from (bid, ask, spread, levels, age, confirmed, seeded)

    # -- REST, latency, sinks -------------------------------------------------------------------

    def _rest(self, r: RestStats) -> Iterator[Metric]:
        c = _counter("rest_requests", "REST attempts by endpoint and HTTP status.",
                     ["endpoint", "status"])
        for (endpoint, status), n in sorted(r.requests.items()):
            c.add_metric([endpoint, status], float(n))
        yield c
        for name, doc, values in (
            ("rest_retries", "REST retries by endpoint.", r.retries),
            ("rest_throttled", "HTTP 429 replies by endpoint.", r.throttled),
            ("rest_retry_wait_seconds", "Seconds slept before REST retries.", r.retry_wait_s),
        ):
            c = _counter(name, doc, ["endpoint"])
            _by_label(c, values)
            yield c
        budget = self._m.budget
        for name, doc, attr in (
            ("rest_budget_acquired", "Requests admitted by the shared REST rate budget.",
             "acquired"),
            ("rest_budget_wait_seconds", "Seconds callers waited for the REST rate budget.",
             "waited_s"),
            ("rest_budget_pauses", "Pauses of every REST caller after an HTTP 429.", "pauses"),
        ):
            c = _counter(name, doc)
            if budget is not None:
                c.add_metric([], float(getattr(budget, attr)))
            yield c
        yield _histogram("rest_request_duration_seconds", "REST attempt duration.",
                         (([e], h) for e, h in sorted(r.durations.items())), ["endpoint"])

    def _latency(self, m: Metrics) -> Iterator[Metric]:
        own = getattr(m.feed.stats, "latency", None) if m.feed is not None else None
        hist = own if isinstance(own, Histogram) else m.feed_latency
        yield _histogram("feed_latency_seconds",
                         "Local receive time minus exchange timestamp of book updates.",
                         [((), hist)])
        sinks = set(m.process_latency)
        if m.fanout is not None:
            sinks.update(m.fanout.stats)
        empty = Histogram(PROCESS_LATENCY_BUCKETS)
        yield _histogram("process_latency_seconds",
                         "Local receive time to the end of the sink write, per record.",
                         (([s], m.process_latency.get(s, empty)) for s in sorted(sinks)),
                         ["sink"])

    def _sinks(self, stats: Mapping[str, SinkStats]) -> Iterator[Metric]:
        gauges = {
            "sink_queue_depth": ("Records waiting in the sink queue.", "depth"),
            "sink_queue_capacity": ("Bound of the sink queue.", "capacity"),
            "sink_queue_max_depth": ("Highest queue depth seen.", "max_depth"),
            "sink_in_flight": ("Records in the batch being written.", "in_flight"),
        }
        counters = {
            "sink_records_enqueued": ("Records accepted into the sink queue.", "enqueued"),
            "sink_records_written": ("Records written by the sink.", "written"),
            "sink_records_dropped": ("Records lost (overflow, rejected, shutdown).", "dropped"),
            "sink_records_conflated": ("Records replaced by a newer one (conflation).",
                                       "conflated"),
            "sink_snapshots": ("Fresh book snapshots written in place of conflated records.",
                               "snapshots"),
            "sink_errors": ("Failed sink open/write calls.", "errors"),
            "sink_retries": ("Sink retries after a transient failure.", "retries"),
        }
        for name, (doc, attr) in gauges.items():
            yield _per_sink(_gauge(name, doc, ["sink"]), stats, attr)
        for name, (doc, attr) in counters.items():
            yield _per_sink(_counter(name, doc, ["sink"]), stats, attr)
        state = _gauge("sink_state", "1 for the sink's current state.", ["sink", "state"])
        for sink, st in sorted(stats.items()):
            current = str(st.state)
            for value in _SINK_STATES:
                state.add_metric([sink, value], 1.0 if value == current else 0.0)
        yield state

    def _delivery(self, sinks: Sequence[object]) -> Iterator[Metric]:
        """Spool and broker numbers of sinks that have them (``sinks.delivery.SpooledSink``)."""
        named = sorted(((str(getattr(s, "name", "?")), s) for s in sinks), key=lambda p: p[0])
        spools = [(n, getattr(s, "spool", None)) for n, s in named]
        stats = [(n, getattr(s, "stats", None)) for n, s in named]
        for name, (doc, attr) in _SPOOL_GAUGES.items():
            g = _gauge(name, doc, ["sink"])
            for sink, spool in spools:
                value = getattr(spool, attr, None)
                if isinstance(value, int | float):
                    g.add_metric([sink], float(value))
            yield g
        g = _gauge("sink_broker_connected", "1 while the sink's broker link is up.", ["sink"])
        for sink, st in stats:
            connected = getattr(st, "connected", None)
            if isinstance(connected, bool):
                g.add_metric([sink], 1.0 if connected else 0.0)
        yield g
        for name, (doc, attr) in _DELIVERY_COUNTERS.items():
            c = _counter(name, doc, ["sink"])
            for sink, st in stats:
                value = getattr(st, attr, None)
                if isinstance(value, int) and not isinstance(value, bool):
                    c.add_metric([sink], float(value))
            yield c


_SPOOL_GAUGES: Final = {
    "sink_spool_bytes": ("Bytes of the sink's disk spool files.", "disk_bytes"),
    "sink_spool_records": ("Records in the sink's disk spool, not yet delivered.", "pending"),
    "sink_spool_capacity_bytes": ("Bound of the sink's disk spool.", "max_bytes"),
}
_DELIVERY_COUNTERS: Final = {
    "sink_broker_published": ("Records the broker confirmed (replays included).", "published"),
    "sink_broker_rejected": ("Records the broker refused for good.", "rejected"),
    "sink_spooled": ("Records written to the disk spool.", "spooled"),
    "sink_replayed": ("Spooled records delivered after an outage.", "replayed"),
    "sink_spool_full": ("Batches refused because the spool was full.", "spool_full"),
    "sink_broker_outages": ("Times the broker went from up to down.", "outages"),
}
_BOOK_TYPES: Final = frozenset({"book", "book_delta"})
_SINK_STATES: Final = ("opening", "open", "failing", "closed", "disabled", "stopped")


def _per_sink(family: Any, stats: Mapping[str, SinkStats], attr: str) -> Any:
    for sink, st in sorted(stats.items()):
        value = getattr(st, attr, None)
        if isinstance(value, int | float):
            family.add_metric([sink], float(value))
    return family


def _age(epoch_ms: int, now_s: float) -> float | None:
    """Seconds from ``epoch_ms`` (monotonic clock, ms) to ``now_s``; ``None`` for 0 (never)."""
    if not epoch_ms:
        return None
    return max(0.0, now_s - epoch_ms / 1000.0)


def _confirmed_ms(entry: MarketEntry) -> int:
    """When the book was last updated or a staleness probe/audit was sent for it.

    ``last_check_ms`` is stamped when the probe is requested; a probe that finds the book
    unchanged leaves ``last_update_ms`` alone (the market is quiet), one that finds it
    different re-seeds it (which moves ``last_update_ms``).
    """
    return max(entry.last_update_ms, entry.last_check_ms)
