"""``tail`` reading back from a real JetStream stream and real Redis streams."""

from __future__ import annotations

import io
import time

import anyio
import pytest

from sinks.fanout import Fanout
from sinks.records import Record
from sinks.url import parse_sink_url
from streamer.errors import ConfigError
from streamer.tail import open_source, tail
from tests.brokers.conftest import BrokerProcess, make_records

pytestmark = [pytest.mark.anyio, pytest.mark.integration, pytest.mark.brokers]


async def _publish(url: str, records: list[Record]) -> None:
    fanout = Fanout([parse_sink_url(url)])
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
