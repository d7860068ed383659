from __future__ import annotations

import itertools
import logging
from collections.abc import Iterator, Sequence
from pathlib import Path

import anyio
import pytest
from redis.asyncio import Redis

from sinks.base import SinkUnavailable
from sinks.delivery import to_message
from sinks.fanout import Fanout, OverflowPolicy, SinkSpec
from sinks.records import Book, BookDelta, Record, decode_record, record_type
from sinks.redis import RedisConfig, RedisStreamSink
from sinks.spool import Spool
from sinks.url import parse_sink_url
from tests.brokers.conftest import (
    BrokerProcess,
    assert_in_order_without_gaps,
    book_keys,
    make_records,
    read_redis,
    wait_until,
)

pytestmark = [pytest.mark.anyio, pytest.mark.brokers, pytest.mark.integration]

logger = logging.getLogger(__name__)

KEY = "limitless-test"
OUTAGE_S = 3.0


def no_backoff() -> Iterator[float]:
    return itertools.repeat(0.0)


def sink_for(server: BrokerProcess, spool_dir: Path | None, *, per_market: bool = False,
             timeout_s: float = 2.0) -> RedisStreamSink:
    config = RedisConfig(host="127.0.0.1", port=server.port, stream=KEY, per_market=per_market,
                         timeout_s=timeout_s)
    spool = Spool(spool_dir, max_bytes=50_000_000) if spool_dir is not None else None
    return RedisStreamSink(config, spool=spool, backoff=no_backoff)


def decode_entries(entries: Sequence[dict[bytes, bytes]]) -> list[Record]:
    records = [decode_record(fields[b"data"]) for fields in entries]
    for fields, record in zip(entries, records, strict=True):
        kind = record_type(record)
        assert fields[b"type"] == kind.encode()
        assert fields[b"id"] == to_message(record, lambda k, m: "").msg_id.encode()
        if isinstance(record, Book | BookDelta):
            assert (fields[b"market"], fields[b"seq"]) == (record.market.encode(),
                                                           str(record.seq).encode())
    return records


async def read_back(server: BrokerProcess) -> list[Record]:
    streams = await read_redis(server.port, KEY)
    return decode_entries(streams.get(KEY, []))


async def publish_all(fanout: Fanout, records: Sequence[Record]) -> None:
    for record in records:
        await fanout.publish(record)


async def stream_length(server: BrokerProcess) -> int:
    client = Redis(host="127.0.0.1", port=server.port)
    try:
        return int(await client.xlen(KEY))
    finally:
        await client.aclose()


async def test_redis_sink_delivers_every_record_in_order(
    valkey_server: BrokerProcess, tmp_path: Path
) -> None:
    url = (f"redis://127.0.0.1:{valkey_server.port}/0?stream={KEY}&maxlen=100000"
           f"&spool={tmp_path / 'spool'}&batch=128&policy=block")  # lossless: no daemon here
    spec = parse_sink_url(url)
    sink = spec.sink
    assert isinstance(sink, RedisStreamSink)
    records = make_records(markets=5, per_market=200)
    fanout = Fanout([spec])
    async with anyio.create_task_group() as tg:
        await tg.start(fanout.run)
        await publish_all(fanout, records)
        fanout.close()
    assert await read_back(valkey_server) == records
    assert (sink.stats.published, sink.stats.spooled, sink.stats.outages) == (len(records), 0, 0)


async def test_redis_sink_per_market_streams(valkey_server: BrokerProcess) -> None:
    records = make_records(markets=3, per_market=40)
    sink = sink_for(valkey_server, None, per_market=True)
    await sink.open()
    await sink.write(records)
    await sink.aclose()
    streams = await read_redis(valkey_server.port, f"{KEY}:*")
    assert sorted(streams) == [f"{KEY}:_", f"{KEY}:market-0", f"{KEY}:market-1",
                               f"{KEY}:market-2"]
    for index in range(3):
        market = f"market-{index}"
        got = decode_entries(streams[f"{KEY}:{market}"])
        assert got == [r for r in records if getattr(r, "market", None) == market]
    assert len(streams[f"{KEY}:_"]) == len([r for r in records
                                            if getattr(r, "market", None) is None])


async def test_redis_sink_trims_streams_to_about_maxlen(valkey_server: BrokerProcess) -> None:
    config = RedisConfig(host="127.0.0.1", port=valkey_server.port, stream=KEY, maxlen=100)
    sink = RedisStreamSink(config)
    records = make_records(markets=2, per_market=500)
    await sink.open()
    for start in range(0, len(records), 100):
        await sink.write(records[start:start + 100])
    await sink.aclose()
    got = await read_back(valkey_server)
    assert 100 <= len(got) < 300  # approximate: trimmed in whole macro nodes
    assert got == records[-len(got):]


async def test_redis_sink_broker_killed_midstream_loses_and_duplicates_nothing(
    valkey_server: BrokerProcess, tmp_path: Path
) -> None:
    sink = sink_for(valkey_server, tmp_path / "spool")
    records = make_records(markets=4, per_market=900)
    before, during, after = records[:1200], records[1200:2700], records[2700:]
    fanout = Fanout([SinkSpec(sink, policy=OverflowPolicy.BLOCK, queue_size=200,
                              batch_max=100)], drain_timeout_s=20)
    with anyio.fail_after(60):
        async with anyio.create_task_group() as tg:
            await tg.start(fanout.run)
            await publish_all(fanout, before)
            valkey_server.kill()
            acked_before_kill = sink.stats.published
            chunk = 50
            for start in range(0, len(during), chunk):
                await publish_all(fanout, during[start:start + chunk])
                await anyio.sleep(OUTAGE_S * chunk / len(during))
            await valkey_server.astart()
            await publish_all(fanout, after)
            fanout.close()
    got = await read_back(valkey_server)
    missing = book_keys(records) - book_keys(got)
    extra = book_keys(got) - book_keys(records)
    logger.info("outage: %d published, %d read back, missing %d, extra %d, %s, skipped %d",
                len(records), len(got), sum(missing.values()), sum(extra.values()),
                sink.stats, sink.skipped)
    assert (sum(missing.values()), sum(extra.values())) == (0, 0)
    assert len(got) == len(records)
    assert_in_order_without_gaps(got)
    assert 0 < acked_before_kill < len(before)
    assert sink.stats.outages >= 1 and sink.stats.spooled > 0
    assert sink.stats.replayed == sink.stats.spooled
    assert fanout.stats[sink.name].dropped == 0


async def test_redis_sink_spool_survives_sink_restart(
    valkey_server: BrokerProcess, tmp_path: Path
) -> None:
    valkey_server.kill()
    first, second = make_records(3, 100), make_records(3, 50, start_seq=101)
    sink = sink_for(valkey_server, tmp_path / "spool")
    await sink.open()
    for start in range(0, len(first), 64):
        await sink.write(first[start:start + 64])
    assert (sink.stats.connected, sink.stats.spooled) == (False, len(first))
    await sink.aclose()

    await valkey_server.astart()
    restarted = sink_for(valkey_server, tmp_path / "spool")
    await restarted.open()
    assert restarted.spool is not None and restarted.spool.pending == len(first)
    await restarted.write(second)
    await restarted.aclose()
    assert await read_back(valkey_server) == first + second
    assert restarted.stats.replayed == len(first)


async def test_redis_sink_replay_after_lost_reply_skips_stored_entries(
    valkey_server: BrokerProcess, tmp_path: Path
) -> None:
    records = make_records(3, 60)
    first, unsure, last = records[:60], records[60:120], records[120:]
    sink = sink_for(valkey_server, tmp_path / "spool", timeout_s=0.5)
    await sink.open()
    await sink.write(first)
    valkey_server.pause()  # the pipeline reaches the server's socket, the replies never come
    await sink.write(unsure)
    assert (sink.stats.outages, sink.stats.spooled) == (1, len(unsure))
    valkey_server.resume()

    async def server_ran_the_unsure_pipeline() -> bool:
        return await stream_length(valkey_server) == len(first) + len(unsure)

    await wait_until(server_ran_the_unsure_pipeline)
    await sink.write(last)  # reconnects, finds ``unsure`` stored, skips it, adds ``last``
    await sink.aclose()
    assert sink.skipped == len(unsure)
    assert await read_back(valkey_server) == records


async def test_redis_sink_without_spool_reports_outage(valkey_server: BrokerProcess) -> None:
    sink = sink_for(valkey_server, None)
    await sink.open()
    records = make_records(2, 10)
    await sink.write(records[:10])
    valkey_server.kill()
    with pytest.raises(SinkUnavailable):
        await sink.write(records[10:])
    await valkey_server.astart()
    await sink.write(records[10:])
    await sink.aclose()
    assert await read_back(valkey_server) == records
