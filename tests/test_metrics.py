"""streamer.ops.metrics: values read from the live stats objects at scrape time."""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from orderbook.sync import BookSynchronizer
from orderbook.types import SCHEMA_VERSION, BookSnapshot, PriceLevel
from sinks.delivery import DeliveryStats
from sinks.fanout import Fanout, SinkSpec, SinkState
from sinks.memory import MemorySink
from sinks.records import MarketInfo, Status
from sinks.spool import Spool
from streamer.feed.budget import RatePacer
from streamer.feed.feed import FeedStats
from streamer.feed.retry import Backoff
from streamer.feed.universe import MarketEntry, Universe
from streamer.ops.histogram import FEED_LATENCY_BUCKETS
from streamer.ops.metrics import (
    PREFIX,
    Histogram,
    Metrics,
    feed_readiness,
)
from streamer.transport.rest import ENDPOINT_ORDERBOOK, RestClient, RetryPolicy

P = PREFIX


# -- fakes ------------------------------------------------------------------------------------


class ExtStats(FeedStats):
    """FeedStats plus the attributes the lead adds later (a subclass gets a __dict__)."""


@dataclass
class FakeFeed:
    stats: FeedStats = field(default_factory=FeedStats)
    universe: Universe = field(default_factory=Universe)


def _info(slug: str) -> MarketInfo:
    return MarketInfo(v=SCHEMA_VERSION, market=slug, recv_ts=0, title=slug, token="1",
                      tokens={"yes": "1"}, exchange=None, adapter=None, status="FUNDED",
                      expiration=None)


def _levels(*pairs: tuple[str, str]) -> list[PriceLevel]:
    return [PriceLevel(p, s) for p, s in pairs]


def add_market(universe: Universe, slug: str, *, seeded: bool = True,
               bid: str = "0.40", ask: str = "0.45", ts: int | None = None) -> MarketEntry:
    sync = BookSynchronizer(slug, "1")
    entry = MarketEntry(slug, "1", sync, _info(slug))
    universe.markets[slug] = entry
    if seeded:
        sync.on_rest_snapshot(BookSnapshot(slug, "1", _levels((bid, "10"), ("0.30", "5")),
                                           _levels((ask, "7")), None, 0))
    if ts is not None:
        sync.on_update(BookSnapshot(slug, "1", _levels((bid, "10"), ("0.30", "5")),
                                    _levels((ask, "8")), ts, ts))
        entry.last_update_ms = ts  # as Feed._on_orderbook does
    return entry


def fresh(**kwargs: Any) -> Metrics:
    return Metrics(CollectorRegistry(), process_metrics=False, **kwargs)


def value(m: Metrics, name: str, **labels: str) -> float | None:
    return m.registry.get_sample_value(P + name, labels)


# -- Histogram --------------------------------------------------------------------------------


def test_histogram_counts_are_cumulative_with_le_semantics() -> None:
    h = Histogram((0.1, 1.0))
    for v in (0.05, 0.1, 0.5, 2.0, float("nan")):
        h.observe(v)
    assert h.cumulative() == [("0.1", 2.0), ("1.0", 3.0), ("+Inf", 4.0)]
    assert h.count == 4
    assert h.total == pytest.approx(2.65)


def test_histogram_observe_ms_puts_each_value_where_observe_does() -> None:
    # observe_ms looks small values up in a table made once; it must agree with the bisect
    # of observe(ms / 1000) on every bucket edge, at the table's end and past it.
    values = [-5, -1, 0, 1, 4, 5, 6, 9, 10, 11, 24, 25, 26, 999, 1000, 1001, 1023, 1024,
              1025, 2500, 29_999, 30_000, 30_001, 10**9]
    for value in values:
        table, plain = Histogram(FEED_LATENCY_BUCKETS), Histogram(FEED_LATENCY_BUCKETS)
        table.observe_ms(value)
        plain.observe(value / 1000.0)
        assert table.counts == plain.counts, value
        assert table.total == plain.total


@pytest.mark.parametrize("bounds", [(), (1.0, 1.0), (2.0, 1.0), (1.0, math.inf)])
def test_histogram_rejects_bad_bounds(bounds: tuple[float, ...]) -> None:
    with pytest.raises(ValueError):
        Histogram(bounds)


# -- feed counters ----------------------------------------------------------------------------


def test_metrics_feed_counters_move_with_stats() -> None:
    m, feed = fresh(), FakeFeed()
    m.bind(feed=feed)
    assert value(m, "feed_frames_total") == 0
    assert value(m, "feed_connected") == 0
    s = feed.stats
    s.frames += 5
    s.connected = True
    s.sessions = 2
    s.events["orderbookUpdate"] += 3
    s.book_events += 4  # the read loop's own counter (a plain int on the hot path)
    s.decode_errors["orderbookUpdate"] += 1
    s.disconnects["ServerDisconnect"] += 2
    s.frames_rejected += 4
    s.records["status"] += 7
    s.seeds["resubscribe"] += 6
    s.seeds_superseded += 1
    s.subscribed_markets = 9
    assert value(m, "feed_frames_total") == 5
    assert value(m, "feed_connected") == 1
    assert value(m, "feed_sessions_total") == 2
    assert value(m, "feed_events_total", event="orderbookUpdate") == 7
    assert value(m, "feed_decode_errors_total", event="orderbookUpdate") == 1
    assert value(m, "feed_reconnects_total", reason="ServerDisconnect") == 2
    assert value(m, "feed_frames_rejected_total") == 4
    assert value(m, "records_emitted_total", type="status") == 7
    assert value(m, "book_seeds_total", reason="resubscribe") == 6
    assert value(m, "book_seeds_superseded_total") == 1
    assert value(m, "markets_subscribed") == 9


def test_metrics_unknown_event_names_fold_into_other() -> None:
    m, feed = fresh(), FakeFeed()
    m.bind(feed=feed)
    for i in range(50):
        feed.stats.events[f"junk{i}"] += 1
        feed.stats.unknown_events[f"junk{i}"] += 1
    feed.stats.events["newPriceData"] += 2
    families = {f.name: f for f in text_string_to_metric_families(m.render()[0].decode())}
    events = families[P + "feed_events"].samples
    assert {s.labels["event"] for s in events} == {"other", "newPriceData"}
    assert value(m, "feed_events_total", event="other") == 50
    assert value(m, "feed_unknown_events_total") == 50


def test_metrics_checks_and_divergences_start_at_zero_and_move() -> None:
    m, feed = fresh(), FakeFeed()
    m.bind(feed=feed)
    assert value(m, "book_divergences_total", reason="audit") == 0
    assert value(m, "book_divergences_total", reason="stale_probe") == 0
    feed.stats.probes += 5
    feed.stats.quiet += 3
    feed.stats.divergences["audit"] += 2
    assert value(m, "book_checks_total") == 5
    assert value(m, "book_checks_quiet_total") == 3
    assert value(m, "book_divergences_total", reason="audit") == 2


def test_metrics_records_emitted_counts_book_records_once() -> None:
    m, feed = fresh(), FakeFeed()
    m.bind(feed=feed)
    entry = add_market(feed.universe, "a")  # one REST seed: one book record
    feed.stats.records["book"] += 1  # Feed.publish counts the seed's record too
    feed.stats.records["status"] += 2
    entry.sync.stats.deltas_emitted += 4  # WS deltas: counted by the synchronizer only
    assert value(m, "records_emitted_total", type="book") == 1
    assert value(m, "records_emitted_total", type="book_delta") == 4
    assert value(m, "records_emitted_total", type="status") == 2


def test_metrics_last_frame_age_appears_once_stamped() -> None:
    m, feed = fresh(), FakeFeed()
    m.bind(feed=feed)
    assert value(m, "feed_last_frame_age_seconds") is None
    feed.stats.last_frame_monotonic = time.monotonic() - 3.0
    age = value(m, "feed_last_frame_age_seconds")
    assert age is not None and 3.0 <= age < 60.0


# -- books and markets ------------------------------------------------------------------------


def test_metrics_book_counters_sum_over_all_markets_including_removed() -> None:
    m, feed = fresh(), FakeFeed()
    m.bind(feed=feed)
    a = add_market(feed.universe, "a")
    b = add_market(feed.universe, "b")
    a.sync.stats.identical_suppressed = 3
    b.sync.stats.identical_suppressed = 4
    b.sync.stats.stale_dropped = 2
    b.sync.stats.books_emitted = 5
    before = value(m, "records_emitted_total", type="book")
    feed.universe.remove("b", 0)  # removed markets keep counting: counters never go down
    assert value(m, "book_identical_suppressed_total") == 7
    assert value(m, "book_stale_dropped_total") == 2
    assert value(m, "records_emitted_total", type="book") == before
    assert value(m, "markets_active") == 1
    add_market(feed.universe, "b").sync.stats.stale_dropped = 1  # it comes back: still adds up
    assert value(m, "book_stale_dropped_total") == 3


def test_metrics_per_market_series_report_book_state() -> None:
    m, feed = fresh(), FakeFeed()
    m.bind(feed=feed)
    now_ms = int(time.monotonic() * 1000)  # freshness is on the monotonic clock
    add_market(feed.universe, "btc", bid="0.40", ask="0.45", ts=now_ms - 2000)
    add_market(feed.universe, "eth", seeded=False)
    assert value(m, "market_best_bid", market="btc") == pytest.approx(0.40)
    assert value(m, "market_best_ask", market="btc") == pytest.approx(0.45)
    assert value(m, "market_spread", market="btc") == pytest.approx(0.05)
    assert value(m, "market_levels", market="btc", side="bid") == 2
    assert value(m, "market_levels", market="btc", side="ask") == 1
    assert value(m, "market_seeded", market="btc") == 1
    assert value(m, "market_seeded", market="eth") == 0
    assert value(m, "market_best_bid", market="eth") is None  # empty book: no price
    age = value(m, "market_update_age_seconds", market="btc")
    assert age is not None and 1.5 <= age < 60
    assert value(m, "market_update_age_seconds", market="eth") is None
    assert value(m, "markets_unseeded") == 1
    assert value(m, "markets_update_age_max_seconds") == pytest.approx(age, abs=1.0)


def test_metrics_per_market_switch_off_removes_per_market_series() -> None:
    m, feed = fresh(per_market=False), FakeFeed()
    m.bind(feed=feed)
    add_market(feed.universe, "btc", ts=int(time.time() * 1000))
    text = m.render()[0].decode()
    assert P + "market_" not in text
    assert 'market="btc"' not in text
    assert value(m, "markets_active") == 1  # aggregates stay
    assert value(m, "markets_update_age_max_seconds") is not None


def test_metrics_confirmed_age_counts_staleness_checks() -> None:
    m, feed = fresh(), FakeFeed()
    m.bind(feed=feed)
    now_ms = int(time.monotonic() * 1000)  # freshness is on the monotonic clock
    quiet = add_market(feed.universe, "quiet", ts=now_ms - 3_600_000)  # no update for 1 h
    quiet.last_check_ms = now_ms - 5_000  # but a probe checked it 5 s ago
    add_market(feed.universe, "busy", ts=now_ms - 1_000)
    update_age = value(m, "market_update_age_seconds", market="quiet")
    confirmed_age = value(m, "market_confirmed_age_seconds", market="quiet")
    assert update_age is not None and 3590 < update_age < 3700
    assert confirmed_age is not None and 4 < confirmed_age < 60
    max_update = value(m, "markets_update_age_max_seconds")
    assert max_update is not None and 3590 < max_update < 3700
    max_confirmed = value(m, "markets_confirmed_age_max_seconds")
    assert max_confirmed is not None and 4 < max_confirmed < 60


def test_feed_readiness_requires_connection_seeds_and_no_divergence() -> None:
    feed = FakeFeed()
    assert feed_readiness(None) == (False, "feed not started")
    assert feed_readiness(feed)[0] is False
    feed.stats.connected = True
    entry = add_market(feed.universe, "a")
    add_market(feed.universe, "b", seeded=False)
    ready, reason = feed_readiness(feed)
    assert not ready and "not seeded" in reason and "b" in reason
    del feed.universe.markets["b"]
    assert feed_readiness(feed)[0] is True
    entry.sync.request_snapshot("resubscribe")  # unconfirmed, not known wrong
    assert feed_readiness(feed)[0] is True
    entry.sync.request_snapshot("audit")
    ready, reason = feed_readiness(feed)
    assert not ready and "divergent" in reason


def test_feed_readiness_honours_subscribed_flag_when_present() -> None:
    stats = ExtStats(connected=True)
    stats.subscribed = False  # type: ignore[attr-defined]
    assert feed_readiness(FakeFeed(stats=stats)) == (False, "feed connected but not subscribed")


def test_metrics_ready_gauge_follows_readiness() -> None:
    m, feed = fresh(), FakeFeed()
    m.bind(feed=feed)
    assert value(m, "ready") == 0
    feed.stats.connected = True
    assert value(m, "ready") == 1


# -- sinks, latency, REST ---------------------------------------------------------------------


def _status(recv_ts: int) -> Status:
    return Status(v=SCHEMA_VERSION, state="connected", recv_ts=recv_ts)


def test_metrics_sink_series_read_fanout_stats() -> None:
    fanout = Fanout([SinkSpec(sink=MemorySink(name="mem"), queue_size=5)])
    m = fresh()
    m.bind(fanout=fanout)
    fanout.publish_nowait(_status(0))
    fanout.publish_nowait(_status(0))
    stats = fanout.stats["mem"]
    stats.written += 3
    stats.dropped += 2
    stats.state = SinkState.FAILING
    assert value(m, "sink_queue_depth", sink="mem") == 2
    assert value(m, "sink_queue_capacity", sink="mem") == 5
    assert value(m, "sink_records_enqueued_total", sink="mem") == 2
    assert value(m, "sink_records_written_total", sink="mem") == 3
    assert value(m, "sink_records_dropped_total", sink="mem") == 2
    assert value(m, "sink_state", sink="mem", state="failing") == 1
    assert value(m, "sink_state", sink="mem", state="open") == 0
    assert value(m, "process_latency_seconds_count", sink="mem") == 0


def test_metrics_sink_optional_attributes_exported_when_present() -> None:
    fanout = Fanout([SinkSpec(sink=MemorySink(name="mem"))])
    fanout.stats["mem"].conflated = 3
    fanout.stats["mem"].snapshots = 2
    m = fresh()
    m.bind(fanout=fanout)
    assert value(m, "sink_records_conflated_total", sink="mem") == 3
    assert value(m, "sink_snapshots_total", sink="mem") == 2


def test_metrics_spool_and_broker_series_read_spooled_sinks(tmp_path: Path) -> None:
    @dataclass
    class Spooled:  # the attributes SpooledSink has: name, spool, stats
        name: str
        spool: Spool
        stats: DeliveryStats

    spool = Spool(tmp_path / "spool", max_bytes=8192)
    spool.disk_bytes, spool.pending = 4096, 12
    delivery = DeliveryStats()
    delivery.spooled, delivery.outages, delivery.connected = 12, 1, False
    m = fresh()
    m.bind(sinks=[MemorySink(name="mem"), Spooled("nats", spool, delivery)])
    assert value(m, "sink_spool_bytes", sink="nats") == 4096
    assert value(m, "sink_spool_records", sink="nats") == 12
    assert value(m, "sink_spool_capacity_bytes", sink="nats") == 8192
    assert value(m, "sink_spooled_total", sink="nats") == 12
    assert value(m, "sink_broker_outages_total", sink="nats") == 1
    assert value(m, "sink_broker_connected", sink="nats") == 0
    assert value(m, "sink_spool_bytes", sink="mem") is None


def test_metrics_on_written_observes_receive_to_write_latency() -> None:
    m = fresh()
    now_ms = int(time.time() * 1000)
    m.on_written("mem", [_status(now_ms - 400), _status(now_ms - 3000)])
    assert value(m, "process_latency_seconds_count", sink="mem") == 2
    assert value(m, "process_latency_seconds_bucket", sink="mem", le="0.25") == 0
    assert value(m, "process_latency_seconds_bucket", sink="mem", le="0.5") == 1
    assert value(m, "process_latency_seconds_bucket", sink="mem", le="5.0") == 2


def test_metrics_feed_latency_uses_feed_histogram_when_present() -> None:
    m = fresh()
    m.feed_latency.observe(0.02)
    assert value(m, "feed_latency_seconds_count") == 1
    stats = ExtStats()
    own = Histogram((0.1,))
    own.observe(0.05)
    own.observe(0.07)
    stats.latency = own  # type: ignore[attr-defined]
    m.bind(feed=FakeFeed(stats=stats))
    assert value(m, "feed_latency_seconds_count") == 2
    assert value(m, "feed_latency_seconds_bucket", le="0.1") == 2


@pytest.mark.anyio
async def test_metrics_rest_observer_counts_statuses_retries_and_429s() -> None:
    replies = iter([429, 503, 200])

    def handler(request: httpx.Request) -> httpx.Response:
        status = next(replies)
        if status != 200:
            return httpx.Response(status, json={"message": "slow down"})
        return httpx.Response(200, json={"bids": [], "asks": [], "tokenId": "1"})

    async def no_sleep(_: float) -> None:
        await anyio.lowlevel.checkpoint()

    m = fresh()
    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        rest = RestClient(client, base_url="http://sim.test", observer=m.rest, sleep=no_sleep,
                          retry=RetryPolicy(max_attempts=4, backoff=Backoff(initial_s=0.5)))
        await rest.orderbook("btc")
    ep = ENDPOINT_ORDERBOOK
    assert value(m, "rest_requests_total", endpoint=ep, status="429") == 1
    assert value(m, "rest_requests_total", endpoint=ep, status="503") == 1
    assert value(m, "rest_requests_total", endpoint=ep, status="200") == 1
    assert value(m, "rest_throttled_total", endpoint=ep) == 1
    assert value(m, "rest_retries_total", endpoint=ep) == 2
    assert value(m, "rest_request_duration_seconds_count", endpoint=ep) == 3
    assert value(m, "rest_throttled_total", endpoint="/markets/active") == 0  # pre-initialised


@pytest.mark.anyio
async def test_metrics_rest_budget_read_from_the_bound_budget() -> None:
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        await anyio.lowlevel.checkpoint()

    m = fresh()
    assert value(m, "rest_budget_acquired_total") is None
    budget = RatePacer(2, 0.5, clock=lambda: 100.0, sleep=sleep)
    m.bind(budget=budget)
    async with budget.slot():
        pass
    async with budget.slot():  # the next start is 0.5 s after the first
        pass
    budget.pause(3.0)
    assert value(m, "rest_budget_acquired_total") == 2
    assert value(m, "rest_budget_wait_seconds_total") == pytest.approx(sum(slept))
    assert value(m, "rest_budget_wait_seconds_total") == pytest.approx(0.5)
    assert value(m, "rest_budget_pauses_total") == 1


# -- naming -----------------------------------------------------------------------------------


def test_metrics_names_follow_prometheus_conventions() -> None:
    fanout = Fanout([SinkSpec(sink=MemorySink(name="mem"))])
    m, feed = fresh(), FakeFeed()
    m.bind(feed=feed, fanout=fanout)
    add_market(feed.universe, "btc", ts=int(time.time() * 1000))
    families = list(text_string_to_metric_families(m.render()[0].decode()))
    assert len(families) > 50
    for family in families:
        assert family.name.startswith(P), family.name
        assert "_ms" not in family.name and "millis" not in family.name
        for sample in family.samples:
            if family.type == "counter":
                assert sample.name.endswith("_total"), sample.name
            if family.type == "histogram":
                assert family.name.endswith("_seconds"), family.name
        if re.search(r"_age(_|$)|latency|duration", family.name):
            assert family.name.endswith("_seconds"), family.name


def test_metrics_registries_are_independent_and_process_metrics_optional() -> None:
    a = Metrics(CollectorRegistry())
    b = Metrics(CollectorRegistry(), process_metrics=False)
    assert b"process_" in a.render()[0] or b"python_info" in a.render()[0]
    assert b"python_info" not in b.render()[0]
    body, content_type = a.render("application/openmetrics-text; version=1.0.0")
    assert content_type.startswith("application/openmetrics-text")
    assert body.rstrip().endswith(b"# EOF")


def test_histogram_observe_ages_counts_each_stamp_as_observe_would() -> None:
    from streamer.ops.histogram import Histogram

    bounds = (0.005, 0.1, 1.0)
    batch, one = Histogram(bounds), Histogram(bounds)
    stamps = [1000, 1000, 998, 900, 1000, 0]
    batch.observe_ages_ms(1001.0, stamps)
    for stamp in stamps:
        one.observe((1001.0 - stamp) / 1000.0)
    assert batch.counts == one.counts == [4, 0, 1, 1]
    assert abs(batch.total - one.total) < 1e-9
    batch.observe_ages_ms(float("nan"), [1])  # NaN ignored, as observe does
    assert batch.counts == one.counts
