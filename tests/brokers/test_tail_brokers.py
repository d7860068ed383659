"""``tail`` reading back from a real JetStream stream and real Redis streams."""

from __future__ import annotations

import io
import time

import anyio
import pytest

from sinks.fanout import Fanout, OverflowPolicy, SinkSpec
from sinks.records import Record
from sinks.url import parse_sink_url
from streamer.errors import ConfigError
from streamer.tools.tail import open_source, tail
from tests.brokers.conftest import BrokerProcess, make_records

pytestmark = [pytest.mark.anyio, pytest.mark.integration, pytest.mark.brokers]


async def _publish(url: str, records: list[Record]) -> None:
    spec = parse_sink_url(url)  # lossless, no daemon to take conflation snapshots from
    fanout = Fanout([SinkSpec(spec.sink, policy=OverflowPolicy.BLOCK)])
    async with anyio.create_task_group() as tg:
        await tg.start(fanout.run)
        for record in records:
            await fanout.publish(record)
        fanout.close()


def _with_gap(records: list[Record]) -> tuple[list[Record], Record]:
    victim = next(r for r in records if getattr(r, "market", None) == "market-1"
                  and getattr(r, "seq", 0) == 5)
    return [r for r in records if r is not victim], victim


@pytest.mark.parametrize("per_market", [False, True])
async def test_tail_reads_redis_back_and_flags_a_gap(valkey_server: BrokerProcess,
                                                     per_market: bool) -> None:
    records, victim = _with_gap(make_records(markets=3, per_market=20))
    url = (f"redis://127.0.0.1:{valkey_server.port}/0?stream=tail"
           f"&per_market={'true' if per_market else 'false'}")
    await _publish(url, records)
    err = io.StringIO()
    report = await tail(open_source(url), out=None, err=err)
    assert report.records == len(records)
    assert [(g.market, g.expected, g.got) for g in report.gaps] == [("market-1", 5, 6)]
    assert report.replayer.book("market-0") is not None


async def test_tail_reads_jetstream_back_and_flags_a_gap(nats_server: BrokerProcess) -> None:
    records, victim = _with_gap(make_records(markets=3, per_market=20))
    url = f"nats://127.0.0.1:{nats_server.port}/tail.books"
    await _publish(url, records)
    err = io.StringIO()
    report = await tail(open_source(url), out=None, err=err)
    assert report.records == len(records)
    assert [(g.market, g.expected, g.got) for g in report.gaps] == [("market-1", 5, 6)]
    assert "GAP in market-1" in err.getvalue()


async def test_tail_from_book_starts_at_every_markets_newest_book(
    nats_server: BrokerProcess,
) -> None:
    from decimal import Decimal as D

    from orderbook.sync import BookSynchronizer
    from orderbook.types import BookSnapshot, PriceLevel

    syncs = {m: BookSynchronizer(m, "1", "run-1") for m in ("a", "b", "c")}
    records: list[Record] = []
    for step in range(1, 61):
        for index, (market, sync) in enumerate(syncs.items()):
            bids = [PriceLevel(str(D("0.40") - D(j) / 1000), str(step + j + index))
                    for j in range(3)]
            asks = [PriceLevel(str(D("0.60") + D(j) / 1000), str(5 + j)) for j in range(3)]
            record = sync.on_update(BookSnapshot(market, "1", bids, asks, step, step))
            assert record is not None
            records.append(record)
            if step in (20 + index * 5, 40 + index * 5):  # periodic snapshots, staggered
                snapshot = sync.snapshot_record(step)
                assert snapshot is not None
                records.append(snapshot)
    url = f"nats://127.0.0.1:{nats_server.port}/late.books"
    await _publish(url, records)
    report = await tail(open_source(url, from_book=True), out=None, err=io.StringIO())
    first_of_newest = records.index(next(r for r in records if r.market == "a"  # type: ignore[union-attr]
                                         and r.seq == 42))  # type: ignore[union-attr]
    assert report.records == len(records) - first_of_newest  # not from the start
    assert not report.gaps and not report.replayer.restarts
    for market, sync in syncs.items():
        assert report.replayer.book(market) == sync.book
    with pytest.raises(Exception, match="needs a nats:// URL"):
        open_source(f"redis://127.0.0.1:{nats_server.port}/0?stream=x", from_book=True)


async def test_tail_reads_kafka_back_and_flags_a_gap(kafka_broker: BrokerProcess) -> None:
    records, victim = _with_gap(make_records(markets=3, per_market=20))
    topic = f"tail-{time.monotonic_ns()}"
    url = f"kafka://127.0.0.1:{kafka_broker.port}/{topic}"
    await _publish(url + "?create=true&partitions=2", records)
    err = io.StringIO()
    report = await tail(open_source(url), out=None, err=err)
    assert report.records == len(records)
    assert [(g.market, g.expected, g.got) for g in report.gaps] == [("market-1", 5, 6)]
    assert "GAP in market-1" in err.getvalue()
    with pytest.raises(ConfigError, match="topic 'absent-topic' does not exist"):
        await tail(open_source(f"kafka://127.0.0.1:{kafka_broker.port}/absent-topic"),
                   out=None, err=err)
