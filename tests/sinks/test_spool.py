from __future__ import annotations

import itertools
import logging
import os
import re
from collections.abc import Sequence
from pathlib import Path

import anyio
import anyio.lowlevel
import msgspec
import pytest

from sinks import fanout as fanout_module
from sinks.base import SinkConfigError, SinkRejected, SinkUnavailable
from sinks.delivery import (
    LinkDown,
    Message,
    SpooledSink,
    book_message_id,
    message_id,
    record_id,
    to_message,
)
from sinks.fanout import Fanout, OverflowPolicy, SinkSpec
from sinks.nats import NatsConfig
from sinks.records import (
    SCHEMA_VERSION,
    Book,
    BookDelta,
    Record,
    Status,
    decode_record,
    encode,
)
from sinks.redis import RedisConfig
from sinks.spool import FRAME_HEADER_BYTES, Spool, SpoolCorrupt, framed_size
from sinks.url import parse_sink_url

pytestmark = pytest.mark.anyio


def payloads(n: int, start: int = 0, size: int = 20) -> list[bytes]:
    return [f"record-{i:06d}".encode().ljust(size, b".") for i in range(start, start + n)]


def segment_files(path: Path) -> list[str]:
    return sorted(entry for entry in os.listdir(path) if entry.endswith(".seg"))


def size_of(path: Path) -> int:
    return os.path.getsize(path)


def write_at(path: Path, offset: int | None, data: bytes) -> None:
    """Overwrite at ``offset``, or append when ``offset`` is None."""
    with open(path, "r+b") as handle:
        handle.seek(0, os.SEEK_END) if offset is None else handle.seek(offset)
        handle.write(data)


async def opened(path: Path, max_bytes: int = 10_000, segment_bytes: int = 200) -> Spool:
    spool = Spool(path, max_bytes=max_bytes, segment_bytes=segment_bytes)
    await spool.open()
    return spool


async def drain(spool: Spool, limit: int = 7) -> list[bytes]:
    out: list[bytes] = []
    while spool.pending:
        batch = await spool.read(limit)
        assert batch.payloads, "pending records but nothing read"
        out.extend(batch.payloads)
        await spool.commit(batch)
    return out


async def test_spool_reads_in_order_across_segments(tmp_path: Path) -> None:
    spool = await opened(tmp_path)
    for start in range(0, 30, 6):
        assert await spool.append(payloads(6, start))
    assert spool.pending == 30
    assert len(segment_files(tmp_path)) == 3  # a new segment once one reaches 200 bytes
    first = await spool.read(4)
    assert first.payloads == payloads(4)
    assert (await spool.read(4)).payloads == payloads(4)  # read does not consume
    await spool.commit(first)
    assert spool.pending == 26
    assert await drain(spool) == payloads(26, 4)
    await spool.aclose()


async def test_spool_commit_deletes_delivered_segments_and_all_when_drained(
    tmp_path: Path,
) -> None:
    spool = await opened(tmp_path)
    for start in range(0, 40, 5):
        assert await spool.append(payloads(5, start))
    before = segment_files(tmp_path)
    disk_before = spool.disk_bytes
    batch = await spool.read(25)
    await spool.commit(batch)
    after = segment_files(tmp_path)
    assert after == before[len(before) - len(after):] and len(after) < len(before)
    assert spool.disk_bytes < disk_before
    assert spool.disk_bytes == sum(size_of(tmp_path / name) for name in after)
    assert await drain(spool) == payloads(15, 25)
    assert segment_files(tmp_path) == []
    assert spool.disk_bytes == 0
    assert await spool.append(payloads(2, 100))  # a new segment after a drained spool
    assert await drain(spool) == payloads(2, 100)
    await spool.aclose()


async def test_spool_resumes_after_restart_from_committed_position(tmp_path: Path) -> None:
    spool = await opened(tmp_path)
    assert await spool.append(payloads(10))
    await spool.commit(await spool.read(4))
    uncommitted = await spool.read(3)  # delivered, but the process dies before commit
    assert uncommitted.payloads == payloads(3, 4)
    await spool.aclose()

    again = await opened(tmp_path)
    assert again.pending == 6
    assert await drain(again) == payloads(6, 4)  # at-least-once: 4..6 are replayed
    await again.aclose()


async def test_spool_drops_torn_tail_on_open_and_resumes(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    spool = await opened(tmp_path, segment_bytes=10_000)
    assert await spool.append(payloads(5))
    await spool.aclose()
    (segment,) = segment_files(tmp_path)
    whole = size_of(tmp_path / segment)
    # a crash in the middle of a frame
    write_at(tmp_path / segment, None, b"\x00\x00\x00\x40\x12\x34\x56\x78partial")

    again = await opened(tmp_path, segment_bytes=10_000)
    assert again.pending == 5
    assert size_of(tmp_path / segment) == whole
    assert "dropped 15 bytes of a torn or corrupt record" in caplog.text
    assert await again.append(payloads(2, 5))
    assert await drain(again) == payloads(7)
    await again.aclose()


async def test_spool_truncates_segment_at_bad_crc(tmp_path: Path) -> None:
    spool = await opened(tmp_path, segment_bytes=10_000)
    assert await spool.append(payloads(4))
    await spool.aclose()
    (segment,) = segment_files(tmp_path)
    frame = FRAME_HEADER_BYTES + 20
    write_at(tmp_path / segment, 2 * frame + FRAME_HEADER_BYTES + 3, b"X")  # third payload

    again = await opened(tmp_path, segment_bytes=10_000)
    assert again.pending == 2
    assert await drain(again) == payloads(2)
    await again.aclose()


async def test_spool_full_rejects_whole_batch_until_space_is_freed(tmp_path: Path) -> None:
    record_bytes = FRAME_HEADER_BYTES + 20
    spool = await opened(tmp_path, max_bytes=10 * record_bytes, segment_bytes=4 * record_bytes)
    assert await spool.append(payloads(4))  # one batch never spans two segments
    assert await spool.append(payloads(4, 4))
    assert not await spool.append(payloads(3, 8))  # 11 > 10: nothing written
    assert spool.pending == 8
    assert await spool.append(payloads(2, 8))  # exactly full
    assert not await spool.append(payloads(1, 10))
    assert spool.disk_bytes == 10 * record_bytes
    await spool.commit(await spool.read(4))  # frees the first segment
    assert spool.disk_bytes == 6 * record_bytes
    assert await spool.append(payloads(4, 10))
    assert await drain(spool) == payloads(10, 4)
    await spool.aclose()


async def test_spool_fits_tells_whether_a_batch_can_ever_fit(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=100)
    assert spool.fits(payloads(3))
    assert not spool.fits(payloads(4))
    assert framed_size(payloads(4)) == 4 * (FRAME_HEADER_BYTES + 20)


async def test_spool_commit_of_a_stale_batch_is_refused(tmp_path: Path) -> None:
    spool = await opened(tmp_path)
    assert await spool.append(payloads(4))
    batch = await spool.read(2)
    await spool.commit(batch)
    with pytest.raises(ValueError, match="read position"):
        await spool.commit(batch)
    await spool.aclose()


async def test_spool_bad_ack_file_is_reported(tmp_path: Path) -> None:
    (tmp_path / "ack").write_bytes(b"garbage")
    with pytest.raises(SpoolCorrupt, match="ack"):
        await Spool(tmp_path, max_bytes=1000).open()


async def test_spool_survives_restart_after_segments_were_deleted(tmp_path: Path) -> None:
    spool = await opened(tmp_path)
    assert await spool.append(payloads(30))
    await spool.commit(await spool.read(12))
    await spool.aclose()
    again = await opened(tmp_path)
    assert again.pending == 18
    assert await again.append(payloads(3, 30))
    assert await drain(again) == payloads(21, 12)
    await again.aclose()
    third = await opened(tmp_path)
    assert (third.pending, segment_files(tmp_path)) == (0, [])
    await third.aclose()


def test_spool_rejects_bad_sizes(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="max_bytes"):
        Spool(tmp_path, max_bytes=0)
    with pytest.raises(ValueError, match="segment_bytes"):
        Spool(tmp_path, max_bytes=10, segment_bytes=-1)


# -- spooled delivery, against a fake broker link -----------------------------------------------


def status(i: int) -> Status:
    return Status(v=SCHEMA_VERSION, state="connected", recv_ts=i, markets=i)


def statuses(n: int, start: int = 0) -> list[Record]:
    return [status(i) for i in range(start, start + n)]


class FakeLink:
    """A broker in memory: ``up`` switches it; ``fail_mid_batch=k`` stores k then dies."""

    name = "fake"

    def __init__(self, *, up: bool = True) -> None:
        self.up = up
        self.stored: list[Message] = []
        self.connects = 0
        self.fail_mid_batch: int | None = None

    def message(self, record: Record) -> Message:
        return to_message(record, lambda kind, market: f"route.{kind}")

    async def connect(self) -> None:
        await anyio.lowlevel.checkpoint()
        self.connects += 1
        if not self.up:
            raise LinkDown("connection refused")

    async def publish(self, messages: Sequence[Message]) -> int:
        await anyio.lowlevel.checkpoint()
        if not self.up:
            raise LinkDown("connection closed")
        if self.fail_mid_batch is not None:
            self.stored.extend(messages[: self.fail_mid_batch])
            self.fail_mid_batch, self.up = None, False
            raise LinkDown("connection lost mid-batch")
        self.stored.extend(messages)
        return 0

    async def close(self) -> None:
        await anyio.lowlevel.checkpoint()

    def records(self) -> list[Record]:
        return [decode_record(message.data) for message in self.stored]

    def deduped(self) -> list[Record]:
        """What a broker that drops repeated ids (JetStream) would keep."""
        seen: set[str] = set()
        kept: list[Record] = []
        for message in self.stored:
            if message.msg_id not in seen:
                seen.add(message.msg_id)
                kept.append(decode_record(message.data))
        return kept


def spooled_sink(tmp_path: Path, link: FakeLink, max_bytes: int = 1_000_000) -> SpooledSink:
    return SpooledSink("fake", link, spool=Spool(tmp_path / "spool", max_bytes=max_bytes),
                       backoff=lambda: itertools.repeat(0.0))


async def test_spooled_sink_spools_while_down_and_replays_in_order(tmp_path: Path) -> None:
    link = FakeLink(up=False)
    sink = spooled_sink(tmp_path, link)
    await sink.open()  # down at start: no error, records go to the spool
    await sink.write(statuses(5))
    await sink.write(statuses(5, 5))
    assert (link.stored, sink.stats.spooled, sink.stats.connected) == ([], 10, False)
    link.up = True
    await sink.write(statuses(3, 10))  # reconnect, replay the spool, then these
    assert link.records() == statuses(13)
    assert (sink.stats.replayed, sink.stats.published) == (10, 13)
    assert sink.spool is not None and sink.spool.pending == 0
    await sink.aclose()


async def test_spooled_sink_spools_whole_batch_after_failure_mid_batch(tmp_path: Path) -> None:
    link = FakeLink()
    sink = spooled_sink(tmp_path, link)
    await sink.open()
    await sink.write(statuses(4))
    link.fail_mid_batch = 2
    await sink.write(statuses(4, 4))  # 4 and 5 stored, then the link dies: all four spooled
    assert (sink.stats.outages, sink.stats.spooled) == (1, 4)
    link.up = True
    await sink.write(statuses(2, 8))
    assert link.records() == statuses(6) + statuses(6, 4)  # 4 and 5 sent twice, same ids
    assert link.deduped() == statuses(10)
    await sink.aclose()


async def test_spooled_sink_full_spool_raises_unavailable_and_counts(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    link = FakeLink(up=False)
    sink = spooled_sink(tmp_path, link, max_bytes=700)
    await sink.open()
    await sink.write(statuses(5))
    with pytest.raises(SinkUnavailable, match="spool full"):
        await sink.write(statuses(5, 5))
    with pytest.raises(SinkUnavailable):
        await sink.write(statuses(5, 5))  # the fan-out's retry of the same batch
    assert (sink.stats.spool_full, sink.stats.spooled) == (2, 5)
    assert caplog.text.count("is full") == 1  # logged once per episode
    with pytest.raises(SinkRejected, match="can never fit"):
        await sink.write(statuses(50, 100))
    link.up = True
    await sink.write(statuses(5, 5))  # replay frees the spool first
    assert link.records() == statuses(10)
    await sink.aclose()


async def test_spooled_sink_survives_restart(tmp_path: Path) -> None:
    link = FakeLink(up=False)
    sink = spooled_sink(tmp_path, link)
    await sink.open()
    await sink.write(statuses(7))
    await sink.aclose()
    link.up = True
    again = spooled_sink(tmp_path, link)
    await again.open()
    assert again.needs_flush
    await again.flush()
    assert link.records() == statuses(7)
    assert not again.needs_flush
    await again.aclose()


async def test_spool_replay_after_restart_keeps_the_old_runs_ids(tmp_path: Path) -> None:
    old_run = [book_delta(i, seq=i, run="run-old") for i in range(1, 6)]
    link = FakeLink(up=False)
    sink = spooled_sink(tmp_path, link)
    await sink.open()
    await sink.write(old_run)
    await sink.aclose()
    link.up = True
    again = spooled_sink(tmp_path, link)  # the restarted daemon: a new run
    await again.open()
    await again.write([book_delta(9, seq=1, run="run-new", kind=Book)])
    assert [m.msg_id for m in link.stored] == [book_message_id(r) for r in old_run] + [
        book_message_id(book_delta(9, seq=1, run="run-new", kind=Book))]
    assert [(r.run, r.seq) for r in link.records()] == [  # type: ignore[union-attr]
        *(("run-old", i) for i in range(1, 6)), ("run-new", 1)]
    await again.aclose()


async def test_spooled_sink_without_spool_raises_unavailable(tmp_path: Path) -> None:
    link = FakeLink(up=False)
    sink = SpooledSink("fake", link)
    with pytest.raises(SinkUnavailable):
        await sink.open()
    with pytest.raises(SinkUnavailable):
        await sink.write(statuses(1))
    link.up = True
    await sink.write(statuses(1))
    assert link.records() == statuses(1)
    assert not sink.needs_flush
    await sink.aclose()


async def test_fanout_flushes_idle_spooled_sink(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(fanout_module, "IDLE_FLUSH_S", 0.01)
    link = FakeLink(up=False)
    sink = spooled_sink(tmp_path, link)
    fanout = Fanout([SinkSpec(sink)])
    async with anyio.create_task_group() as tg:
        await tg.start(fanout.run)
        for record in statuses(3):
            await fanout.publish(record)
        with anyio.fail_after(5):
            while sink.stats.spooled < 3:
                await anyio.lowlevel.checkpoint()
        link.up = True  # no new records: the idle flush delivers the spool
        with anyio.fail_after(5):
            while sink.needs_flush:
                await anyio.lowlevel.checkpoint()
        fanout.close()
    assert link.records() == statuses(3)


def book_delta(recv_ts: int, seq: int = 7, size: str = "5", run: str = "r1",
               kind: type[Book] | type[BookDelta] = BookDelta) -> Book | BookDelta:
    return kind(v=SCHEMA_VERSION, market="m", token="1", seq=seq, ts=1000,
                recv_ts=recv_ts, best_bid="0.5", best_ask=None,
                bids=[("0.5", str(size))], asks=[], run=run)


def test_book_message_id_names_run_market_type_seq() -> None:
    def msg_id(record: Record) -> str:
        return to_message(record, lambda kind, market: "r").msg_id

    # The same record sent twice (retry, replay) has one id, whatever else is in it ...
    assert msg_id(book_delta(1)) == msg_id(book_delta(2, size="6"))
    # ... and no two records share one: a conflation book repeating an earlier book's
    # levels, the same seq in another run, another type or another market all differ.
    ids = {msg_id(book_delta(1, seq=seq, run=run, kind=kind))
           for seq in (1, 2) for run in ("r1", "r2") for kind in (Book, BookDelta)}
    assert len(ids) == 8
    assert book_message_id(book_delta(1)) != book_message_id(
        msgspec.structs.replace(book_delta(1), market="n"))
    message = to_message(book_delta(5), lambda kind, market: f"{kind}.{market}")
    assert (message.route, message.kind, message.market, message.seq) == (
        "book_delta.m", "book_delta", "m", 7)
    assert message.msg_id == book_message_id(book_delta(0, size="9")) == record_id(
        book_delta(0), b"")
    assert len(message.msg_id) == 32


def test_message_id_of_other_records_hashes_every_byte() -> None:
    from sinks.records import MarketInfo

    def info(recv_ts: int, title: str, run: str = "r1") -> bytes:
        return encode(MarketInfo(v=SCHEMA_VERSION, market="m", recv_ts=recv_ts, title=title,
                                 token="1", tokens={"yes": "1"}, exchange=None, adapter=None,
                                 status=None, expiration=None, run=run))

    assert message_id("market", info(1, "a")) == message_id("market", info(1, "a"))
    assert message_id("market", info(1, "a")) != message_id("market", info(2, "a"))
    assert message_id("market", info(1, "a")) != message_id("market", info(1, "a", "r2"))
    assert message_id("status", encode(status(1))) != message_id("status", encode(status(2)))


# -- queue-sink URLs ----------------------------------------------------------------------------


def test_nats_url_defaults_and_options(tmp_path: Path) -> None:
    from sinks.nats import NatsJetStreamSink

    spec = parse_sink_url("nats://127.0.0.1/limitless.books")
    sink = spec.sink
    assert isinstance(sink, NatsJetStreamSink)
    config = sink.config
    assert (config.server, config.prefix, config.stream_name, config.retention) == (
        "nats://127.0.0.1:4222", "limitless.books", "LIMITLESS_BOOKS", "limits")
    assert (config.max_age_s, config.dup_window_s, config.storage, config.replicas) == (
        86400.0, 120.0, "file", 1)
    assert (sink.name, sink.spool) == ("nats:127.0.0.1:4222/limitless.books", None)

    spec = parse_sink_url(
        f"nats://u:secret@h:4333/p?stream=S1&retention=interest&max_age=2h&dup_window=5m"
        f"&storage=memory&replicas=3&ack_timeout=1s&spool={tmp_path}&spool_max=5MB"
        f"&policy=conflate")
    sink = spec.sink
    assert isinstance(sink, NatsJetStreamSink)
    assert sink.config == NatsConfig(server="nats://u:secret@h:4333", prefix="p", stream="S1",
                                     retention="interest", max_age_s=7200.0,
                                     dup_window_s=300.0, storage="memory", replicas=3,
                                     ack_timeout_s=1.0)
    assert sink.spool is not None and sink.spool.max_bytes == 5_000_000
    assert "secret" not in sink.name
    assert spec.policy is OverflowPolicy.CONFLATE


def test_redis_url_defaults_and_options(tmp_path: Path) -> None:
    from sinks.redis import RedisStreamSink

    sink = parse_sink_url("redis://127.0.0.1").sink
    assert isinstance(sink, RedisStreamSink)
    assert sink.config == RedisConfig(host="127.0.0.1")
    assert (sink.config.port, sink.config.stream, sink.config.maxlen) == (6379, "limitless",
                                                                          100_000)
    sink = parse_sink_url(f"redis://me:p%40ss@h:6380/3?stream=k&per_market=yes&maxlen=none"
                          f"&timeout=500ms&spool={tmp_path}").sink
    assert isinstance(sink, RedisStreamSink)
    assert sink.config == RedisConfig(host="h", port=6380, db=3, username="me", password="p@ss",
                                      stream="k", per_market=True, maxlen=None, timeout_s=0.5)
    assert sink.config.key("m-1") == "k:m-1" and sink.config.key(None) == "k:_"
    assert sink.spool is not None and sink.spool.max_bytes == 10**9


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("nats://127.0.0.1", "subject prefix ''"),
        ("nats://127.0.0.1/a..b", "subject prefix 'a..b'"),
        ("nats://127.0.0.1/a.*", "subject prefix 'a.*'"),
        ("nats://127.0.0.1/a?stream=x.y", "stream name 'x.y'"),
        ("nats://127.0.0.1/a?retention=forever", "'forever'"),
        ("nats://127.0.0.1/a?max_age=1m&dup_window=2m", "must not exceed max_age"),
        ("nats://127.0.0.1/a?replicas=0", "option 'replicas'"),
        ("nats:///a", "needs a host"),
        ("nats://127.0.0.1/a?spool_max=1GB", "option 'spool_max' needs 'spool'"),
        ("nats://127.0.0.1/a?spool=/x&spool_max=lots", "option 'spool_max'"),
        ("nats://127.0.0.1/a?maxlen=3", "unknown option 'maxlen'"),
        ("redis://h/x", "database number"),
        ("redis://h:port/0", "bad host:port"),
        ("redis://h/0?per_market=maybe", "option 'per_market'"),
        ("redis://h/0?maxlen=0", "option 'maxlen': must be >= 1"),
        ("redis://h/0?stream=", "stream key must not be empty"),
        ("redis://h/0?retention=limits", "unknown option 'retention'"),
    ],
)
def test_queue_sink_url_rejects(url: str, message: str) -> None:
    with pytest.raises(SinkConfigError, match=re.escape(message)):
        parse_sink_url(url)


async def test_spooled_sink_outage_logs_carry_sink_attempt_and_delay_fields(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    link = FakeLink()
    sink = SpooledSink("fake", link, spool=Spool(tmp_path / "spool", max_bytes=1_000_000),
                       backoff=lambda: iter([0.0, 0.0, 7.5]))
    await sink.open()
    with caplog.at_level(logging.DEBUG, logger="sinks.delivery"):
        link.up = False
        await sink.write(statuses(1))  # the outage: attempt 1 scheduled
        await sink.write(statuses(1, 1))  # reconnect fails: attempt 2
        await sink.write(statuses(1, 2))  # and again: attempt 3, 7.5 s away
    retries = [r for r in caplog.records if getattr(r, "reason", None) == "broker_unavailable"]
    assert [(r.sink, r.attempt, r.delay_s) for r in retries] == [  # type: ignore[attr-defined]
        ("fake", 1, 0.0), ("fake", 2, 0.0), ("fake", 3, 7.5)]
    await sink.aclose()
