"""The Kafka sink against a real Apache Kafka broker (KRaft, one per session)."""

from __future__ import annotations

import itertools
import re
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import anyio
import pytest
from prometheus_client import CollectorRegistry

from orderbook.book import OrderBook
from orderbook.types import Book, BookDelta
from sinks.base import SinkClosed
from sinks.delivery import to_message
from sinks.fanout import Fanout, OverflowPolicy, SinkSpec
from sinks.kafka import KafkaConfig, KafkaSink, partition_for
from sinks.records import Record, decode_record, record_type
from sinks.spool import Spool
from sinks.url import parse_sink_url
from streamer import app
from streamer.config import load_settings
from streamer.errors import ConfigError
from streamer.feed.feed import Feed
from streamer.ops.metrics import Metrics
from streamer.simulator import Simulator, SimulatorConfig
from tests.books import numeric
from tests.brokers.conftest import (
    BrokerProcess,
    assert_in_order_without_gaps,
    book_keys,
    make_records,
    read_kafka,
)

pytestmark = [pytest.mark.anyio, pytest.mark.brokers, pytest.mark.integration]

OUTAGE_S = 3.0
"""Killed this long before the restart begins (the restart itself takes seconds more)."""
_topics = itertools.count()


def new_topic(name: str) -> str:
    return f"{name}-{next(_topics)}-{time.monotonic_ns()}"


def fast_backoff() -> Iterator[float]:
    return itertools.repeat(0.05)


async def read_back(broker: BrokerProcess, topic: str, partitions: int) -> list[Record]:
    """Records per partition in offset order; checks key, partition and headers of each."""
    consumed = await read_kafka(broker.port, topic)
    records = [decode_record(c.value) for c in consumed]
    for c, record in zip(consumed, records, strict=True):
        market = getattr(record, "market", None)
        assert c.key == (market.encode() if market else None)
        assert c.partition == partition_for(c.key, partitions)
        headers = dict(c.headers)
        assert headers["type"] == record_type(record).encode()
        assert headers["id"] == to_message(record, lambda k, m: "").msg_id.encode()
        seq = getattr(record, "seq", None)
        assert headers.get("seq") == (None if seq is None else str(seq).encode())
    return records


def per_market(records: list[Record]) -> dict[str | None, list[Record]]:
    grouped: dict[str | None, list[Record]] = defaultdict(list)
    for record in records:
        grouped[getattr(record, "market", None)].append(record)
    return grouped


async def publish(url: str, records: list[Record]) -> Fanout:
    spec = parse_sink_url(url)  # lossless, no daemon to take conflation snapshots from
    fanout = Fanout([SinkSpec(spec.sink, policy=OverflowPolicy.BLOCK)])
    async with anyio.create_task_group() as tg:
        await tg.start(fanout.run)
        for record in records:
            await fanout.publish(record)
        fanout.close()
    return fanout


async def test_kafka_sink_creates_topic_and_keeps_each_market_in_order(
    kafka_broker: BrokerProcess, tmp_path: Path
) -> None:
    topic = new_topic("books")
    url = (f"kafka://127.0.0.1:{kafka_broker.port}/{topic}?create=true&partitions=3"
           f"&compression=gzip&linger=2ms&batch_size=64KiB&spool={tmp_path / 'spool'}"
           "&batch=128")
    records = make_records(markets=6, per_market=100)
    fanout = await publish(url, records)
    [stats] = fanout.stats.values()
    assert stats.written == len(records)
    got = await read_back(kafka_broker, topic, partitions=3)
    assert sorted(got, key=records.index) == records  # every record once
    assert per_market(got) == per_market(records)  # each market in order
    assert len({partition_for(m.encode(), 3) for m in per_market(got) if m}) > 1


async def test_kafka_sink_missing_topic_is_a_one_line_error(
    kafka_broker: BrokerProcess,
) -> None:
    topic = new_topic("absent")
    sink = parse_sink_url(f"kafka://127.0.0.1:{kafka_broker.port}/{topic}").sink
    with pytest.raises(SinkClosed, match=re.escape(f"topic '{topic}' does not exist")) as info:
        await sink.open()
    assert "\n" not in str(info.value) and "create=true" in str(info.value)
    await sink.aclose()


async def test_daemon_with_a_missing_topic_stops_with_a_config_error(
    kafka_broker: BrokerProcess,
) -> None:
    """Exit 2 with one line (the CLI maps ConfigError), not a daemon running without it."""
    topic = new_topic("absent")
    sim = Simulator(SimulatorConfig(seed=3, markets=2, groups=0, rate_hz=20.0, quirks=False))
    spec = parse_sink_url(f"kafka://127.0.0.1:{kafka_broker.port}/{topic}")
    async with anyio.create_task_group() as tg:
        address = await tg.start(sim.run)
        settings = load_settings(None, {"api_url": address.api_url, "ws_url": address.ws_url,
                                        "all_markets": True, "metrics_addr": "127.0.0.1:0"})
        with anyio.fail_after(30), pytest.raises(ConfigError, match=re.escape(
                f"topic '{topic}' does not exist; create it, or add create=true")):
            await app.run(settings, None, handle_signals=False, specs=[spec],
                          metrics=Metrics(CollectorRegistry(), process_metrics=False))
        tg.cancel_scope.cancel()


def record_key(record: Record) -> str:
    """The record's ``id`` (:func:`read_back` checks the header equals it)."""
    return to_message(record, lambda kind, market: "").msg_id


async def replay_after_lost_acks(broker: BrokerProcess, tmp_path: Path) -> tuple[int, int]:
    """One round: a batch whose acks never came (broker frozen) is spooled and replayed by a
    new producer, which skips what it finds stored already. Asserts what is guaranteed (see
    :mod:`sinks.kafka`): nothing lost, each market in order, and a record stored twice is an
    exact copy (same bytes, same ``id``) of one of the unsure batch. Returns (records the
    check found stored and skipped, records stored twice)."""
    topic = new_topic("unsure")
    records = make_records(markets=3, per_market=60)
    first, unsure, last = records[:60], records[60:120], records[120:]
    config = KafkaConfig(bootstrap=(f"127.0.0.1:{broker.port}",), topic=topic,
                         create=True, partitions=2, ack_timeout_s=1.0, linger_ms=0)
    sink = KafkaSink(config, spool=Spool(tmp_path / "spool", max_bytes=10_000_000),
                     backoff=fast_backoff)
    await sink.open()
    await sink.write(first)
    broker.pause()  # the batch reaches the broker's socket; its acks come too late
    try:
        await sink.write(unsure)
        assert (sink.stats.outages, sink.stats.spooled) == (1, len(unsure)), sink.stats
    finally:
        broker.resume()
    with anyio.fail_after(30):
        while sink.spool is not None and sink.spool.pending:
            await sink.flush()
            await anyio.sleep(0.05)
    await sink.write(last)
    await sink.aclose()
    got = await read_back(broker, topic, partitions=2)  # checks each id against its record
    stored = Counter(record_key(record) for record in got)
    assert set(stored) == {record_key(record) for record in records}  # nothing lost
    twice = stored - Counter(record_key(record) for record in records)
    assert set(twice) <= {record_key(record) for record in unsure}
    assert max(twice.values(), default=1) == 1
    copies: dict[str, list[Record]] = defaultdict(list)
    for record in got:
        copies[record_key(record)].append(record)
    assert all(copy == same[0] for same in copies.values() for copy in same)  # exact copies
    distinct = [same[0] for same in copies.values()]  # in order of first arrival
    assert per_market(distinct) == per_market(records)
    assert sink.stats.replayed == len(unsure)
    assert sink.skipped + sum(twice.values()) <= len(unsure)
    return sink.skipped, sum(twice.values())


async def test_kafka_sink_replay_after_lost_acks_skips_what_was_stored(
    kafka_broker: BrokerProcess, tmp_path: Path
) -> None:
    """Three rounds of :func:`replay_after_lost_acks`. Usually the frozen broker stores the
    unsure batch as soon as it resumes, before the new producer reads the partition ends:
    the check finds it and nothing is stored twice. Rarely the broker stores it only after
    that read, and the batch is stored twice (the window documented in :mod:`sinks.kafka`);
    so this asserts the common case in at least one round, which fails if the check does
    not work at all (every stored record would then be resent in every round)."""
    rounds = [await replay_after_lost_acks(kafka_broker, tmp_path / f"round-{i}")
              for i in range(3)]
    print(f"kafka unsure batch of 60, (skipped, stored twice) per round: {rounds}")
    assert any(skipped > 0 and twice == 0 for skipped, twice in rounds), rounds


async def test_kafka_outage_midstream_loses_and_duplicates_nothing(
    kafka_broker: BrokerProcess, tmp_path: Path
) -> None:
    """The daemon against the simulator; the broker is SIGKILLed for OUTAGE_S mid-stream and
    restarted on the same log directory. The topic then holds every record once, each
    market's seq in order, and the books rebuilt from it equal the simulator's."""
    topic = new_topic("outage")
    sim = Simulator(SimulatorConfig(seed=7, markets=4, groups=0, rate_hz=40.0, quirks=False))
    spec = parse_sink_url(f"kafka://127.0.0.1:{kafka_broker.port}/{topic}?create=true"
                          f"&partitions=2&ack_timeout=2s&spool={tmp_path / 'spool'}"
                          "&batch=64")
    sink = spec.sink
    assert isinstance(sink, KafkaSink)
    feeds: list[Feed] = []

    def deltas() -> int:
        return sum(e.sync.stats.deltas_emitted for f in feeds for e in f.universe.markets.values())

    async with anyio.create_task_group() as tg:
        address = await tg.start(sim.run)
        settings = load_settings(None, {"api_url": address.api_url, "ws_url": address.ws_url,
                                        "all_markets": True, "metrics_addr": "127.0.0.1:0"})
        tg.start_soon(partial(app.run, settings, None, on_feed=feeds.append,
                              handle_signals=False, specs=[spec],
                              metrics=Metrics(CollectorRegistry(), process_metrics=False)))
        with anyio.fail_after(30):
            while sink.stats.published < 100:
                await anyio.sleep(0.05)
        kafka_broker.kill()
        killed_at, before = anyio.current_time(), deltas()
        await anyio.sleep(OUTAGE_S)  # the feed goes on; the sink spools
        during = deltas() - before
        await kafka_broker.astart()
        down_s = anyio.current_time() - killed_at
        with anyio.fail_after(60):
            while sink.stats.replayed < sink.stats.spooled or sink.stats.spooled == 0:
                await anyio.sleep(0.05)
        sim.pause()

        def caught_up() -> bool:  # the daemon holds what the paused simulator sent last
            markets = feeds[0].universe.markets
            return all(slug in markets and numeric(markets[slug].sync.book.levels())
                       == sim.exchange.book(slug) for slug in sim.exchange.book_slugs())

        with anyio.fail_after(20):
            while not caught_up():
                await anyio.sleep(0.05)
        tg.cancel_scope.cancel()  # the fan-out drains its queue into Kafka on the way out
    got = await read_back(kafka_broker, topic, partitions=2)
    books = [r for r in got if isinstance(r, Book | BookDelta)]
    keys = book_keys(books)
    duplicated = sum(n - 1 for n in keys.values())
    assert duplicated == 0
    assert_in_order_without_gaps(got)  # per market: seq 1, 2, 3 ... (nothing lost)
    rebuilt: dict[str, OrderBook] = {}
    for record in books:
        if isinstance(record, Book):
            book = rebuilt[record.market] = OrderBook()
            book.apply_delta(record.bids, record.asks)
        else:
            rebuilt[record.market].apply_delta(record.bids, record.asks)
    for slug in sim.exchange.book_slugs():
        assert numeric(rebuilt[slug].levels()) == sim.exchange.book(slug), slug
    assert down_s >= OUTAGE_S and during > 0
    assert sink.stats.outages >= 1 and sink.stats.spooled > 0
    assert sink.stats.replayed == sink.stats.spooled
    print(f"kafka outage: broker down {down_s:.1f}s, {len(books)} book records read back "
          f"({sink.stats.spooled} spooled and replayed, {sink.skipped} found stored), "
          f"0 lost, {duplicated} duplicated")
