from __future__ import annotations

import gc
import itertools
import logging
from collections.abc import Iterator, Sequence
from pathlib import Path

import anyio
import nats
import pytest
from nats.js.api import StreamConfig

from sinks.base import SinkClosed, SinkUnavailable
from sinks.delivery import to_message
from sinks.fanout import Fanout, OverflowPolicy, SinkSpec
from sinks.nats import NatsConfig, NatsJetStreamSink
from sinks.records import Record, decode_record, record_type
from sinks.spool import Spool
from sinks.url import parse_sink_url
from tests.brokers.conftest import (
    BrokerProcess,
    assert_in_order_without_gaps,
    book_keys,
    make_records,
    read_jetstream,
    wait_until,
)

pytestmark = [pytest.mark.anyio, pytest.mark.brokers, pytest.mark.integration]

logger = logging.getLogger(__name__)

PREFIX = "limitless.test"
STREAM = "LIMITLESS_TEST"
OUTAGE_S = 3.0


def fast_backoff() -> Iterator[float]:
    return itertools.repeat(0.0)


def sink_for(server: BrokerProcess, spool_dir: Path | None, name: str = "nats",
             ack_timeout_s: float = 2.0) -> NatsJetStreamSink:
    config = NatsConfig(server=f"nats://127.0.0.1:{server.port}", prefix=PREFIX,
                        ack_timeout_s=ack_timeout_s)
    spool = Spool(spool_dir, max_bytes=50_000_000) if spool_dir is not None else None
    return NatsJetStreamSink(config, spool=spool, name=name, backoff=fast_backoff)


async def read_back(server: BrokerProcess) -> list[Record]:
    messages = await read_jetstream(server.port, STREAM, f"{PREFIX}.>")
    records = [decode_record(message.data) for message in messages]
    for message, record in zip(messages, records, strict=True):
        market = getattr(record, "market", None) or "_"
        assert message.subject == f"{PREFIX}.{record_type(record)}.{market}"
        assert message.headers is not None
        expected = to_message(record, lambda kind, market: "").msg_id
        assert message.headers["Nats-Msg-Id"] == expected
    return records


async def publish_all(fanout: Fanout, records: Sequence[Record]) -> None:
    for record in records:
        await fanout.publish(record)


async def test_nats_sink_creates_stream_and_delivers_every_record_in_order(
    nats_server: BrokerProcess, tmp_path: Path
) -> None:
    url = (f"nats://127.0.0.1:{nats_server.port}/{PREFIX}?max_age=1h&dup_window=1m"
           f"&spool={tmp_path / 'spool'}&spool_max=10MB")
    spec = parse_sink_url(url + "&batch=128&policy=block")  # lossless: no daemon here
    sink = spec.sink
    assert isinstance(sink, NatsJetStreamSink)
    records = make_records(markets=5, per_market=200)
    fanout = Fanout([spec])
    async with anyio.create_task_group() as tg:
        await tg.start(fanout.run)
        await publish_all(fanout, records)
        fanout.close()
    assert await read_back(nats_server) == records  # same content, same order
    assert (sink.stats.published, sink.stats.spooled, sink.stats.outages) == (len(records), 0, 0)
    assert fanout.stats[sink.name].written == len(records)
    nc = await nats.connect(f"nats://127.0.0.1:{nats_server.port}")
    try:
        info = await nc.jetstream().stream_info(STREAM)
    finally:
        await nc.close()
    assert info.config.subjects == [f"{PREFIX}.>"]
    assert (info.config.max_age, info.config.duplicate_window) == (3600.0, 60.0)


async def test_nats_sink_broker_killed_midstream_loses_and_duplicates_nothing(
    nats_server: BrokerProcess, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    sink = sink_for(nats_server, tmp_path / "spool")
    records = make_records(markets=4, per_market=900)
    before, during, after = records[:1200], records[1200:2700], records[2700:]
    # A small blocking queue paces the producer to the sink: when ``before`` is queued, most
    # of it was acknowledged and a batch is in flight as the broker dies.
    fanout = Fanout([SinkSpec(sink, policy=OverflowPolicy.BLOCK, queue_size=200,
                              batch_max=100)], drain_timeout_s=20)
    with anyio.fail_after(60):
        async with anyio.create_task_group() as tg:
            await tg.start(fanout.run)
            await publish_all(fanout, before)
            nats_server.kill()
            acked_before_kill = sink.stats.published
            # The feed goes on during the outage: ~OUTAGE_S of records arriving.
            chunk = 50
            for start in range(0, len(during), chunk):
                await publish_all(fanout, during[start:start + chunk])
                await anyio.sleep(OUTAGE_S * chunk / len(during))
            await nats_server.astart()
            await publish_all(fanout, after)
            fanout.close()
    got = await read_back(nats_server)
    missing = book_keys(records) - book_keys(got)
    extra = book_keys(got) - book_keys(records)
    assert (sum(missing.values()), sum(extra.values())) == (0, 0)
    assert len(got) == len(records)
    assert_in_order_without_gaps(got)
    assert 0 < acked_before_kill < len(before)
    assert sink.stats.outages >= 1 and sink.stats.spooled > 0
    logger.info("outage: %d published, %d read back, missing %d, extra %d, %s, "
                "duplicate acks %d", len(records), len(got), sum(missing.values()),
                sum(extra.values()), sink.stats, sink.duplicates)
    assert sink.stats.replayed == sink.stats.spooled
    assert sink.spool is not None and sink.spool.pending == 0
    assert fanout.stats[sink.name].dropped == 0
    gc.collect()  # an unretrieved future logs from its finalizer
    assert not [r for r in caplog.records if "never retrieved" in r.getMessage()]


async def test_nats_sink_spool_survives_sink_restart(
    nats_server: BrokerProcess, tmp_path: Path
) -> None:
    nats_server.kill()
    first, second = make_records(3, 100), make_records(3, 50, start_seq=101)
    sink = sink_for(nats_server, tmp_path / "spool")
    await sink.open()  # the broker is down: the sink opens anyway and spools
    for start in range(0, len(first), 64):
        await sink.write(first[start:start + 64])
    assert not sink.stats.connected
    assert sink.stats.spooled == len(first)
    await sink.aclose()

    await nats_server.astart()
    restarted = sink_for(nats_server, tmp_path / "spool")
    await restarted.open()
    assert restarted.spool is not None and restarted.spool.pending == len(first)
    await restarted.write(second)  # replays the spool first, then publishes these
    await restarted.aclose()
    assert await read_back(nats_server) == first + second
    assert restarted.stats.replayed == len(first)


async def test_nats_sink_active_active_pair_stores_one_copy(
    nats_server: BrokerProcess, tmp_path: Path
) -> None:
    records = make_records(markets=4, per_market=250)
    sinks = [sink_for(nats_server, tmp_path / f"spool-{i}", name=f"nats-{i}") for i in (0, 1)]
    fanouts = [Fanout([SinkSpec(sink, batch_max=64)]) for sink in sinks]
    async with anyio.create_task_group() as tg:
        for fanout in fanouts:
            await tg.start(fanout.run)
        for record in records:  # both daemons see the same events at about the same time
            for fanout in fanouts:
                await fanout.publish(record)
        for fanout in fanouts:
            fanout.close()
    got = await read_back(nats_server)
    assert sorted(book_keys(got).values()) == [1] * len(book_keys(records))
    assert len(got) == len(records)
    assert_in_order_without_gaps(got)
    assert sum(sink.stats.published for sink in sinks) == 2 * len(records)
    assert sum(sink.duplicates for sink in sinks) == len(records)  # JetStream dropped those


async def test_nats_sink_refuses_existing_stream_with_other_settings(
    nats_server: BrokerProcess,
) -> None:
    nc = await nats.connect(f"nats://127.0.0.1:{nats_server.port}")
    try:
        await nc.jetstream().add_stream(StreamConfig(
            name=STREAM, subjects=[f"{PREFIX}.>"], max_age=86400.0, duplicate_window=10.0))
    finally:
        await nc.close()
    sink = sink_for(nats_server, None)
    with pytest.raises(SinkClosed, match="dup_window 10s, the URL asks for 120s"):
        await sink.open()
    await sink.aclose()


async def test_nats_sink_without_spool_reports_outage(nats_server: BrokerProcess) -> None:
    sink = sink_for(nats_server, None)
    await sink.open()
    records = make_records(2, 10)
    await sink.write(records[:10])
    nats_server.kill()
    with pytest.raises(SinkUnavailable):
        await sink.write(records[10:])
    await nats_server.astart()
    await sink.write(records[10:])  # the fan-out's retry: the same batch, now delivered
    await sink.aclose()
    assert await read_back(nats_server) == records


async def test_nats_sink_replay_after_lost_acks_is_deduplicated(
    nats_server: BrokerProcess, tmp_path: Path
) -> None:
    records = make_records(3, 60)
    first, unsure, last = records[:60], records[60:120], records[120:]
    sink = sink_for(nats_server, tmp_path / "spool", ack_timeout_s=0.5)
    await sink.open()
    await sink.write(first)
    nats_server.pause()  # the batch reaches the broker's socket, its acks never come back
    await sink.write(unsure)
    assert (sink.stats.outages, sink.stats.spooled) == (1, len(unsure)), sink.stats
    nats_server.resume()

    async def broker_stored_the_unsure_batch() -> bool:
        nc = await nats.connect(f"nats://127.0.0.1:{nats_server.port}")
        try:
            info = await nc.jetstream().stream_info(STREAM)
        finally:
            await nc.close()
        return info.state.messages == len(first) + len(unsure)

    await wait_until(broker_stored_the_unsure_batch)
    await sink.write(last)  # reconnects, replays ``unsure`` (same ids), then ``last``
    await sink.aclose()
    assert sink.stats.replayed == len(unsure)
    assert sink.duplicates == len(unsure)  # sent twice, stored once
    assert await read_back(nats_server) == records
