from __future__ import annotations

import contextlib
import errno
import logging
import os
import signal
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import anyio
import pytest

from sinks.base import Reopenable, SinkConfigError, SinkUnavailable
from sinks.fanout import Fanout, SinkSpec
from sinks.file import FileSink
from sinks.records import SCHEMA_VERSION, Book, Record, Status, decode_record, encode_line

pytestmark = pytest.mark.anyio

T0 = 1_700_000_000.0  # 2023-11-14T22:13:20Z


def status(i: int) -> Status:
    return Status(v=SCHEMA_VERSION, state="connected", recv_ts=i)


def book(i: int) -> Book:
    return Book(v=SCHEMA_VERSION, market="btc-up", token="123", seq=i, ts=i, recv_ts=i,
                best_bid="0.515", best_ask="0.52",
                bids=[("0.515", "10.5")], asks=[("0.52", "3")])


def statuses(n: int) -> list[Record]:
    return [status(i) for i in range(n)]


def read_records(path: Path) -> list[Record]:
    data = path.read_bytes()
    assert data == b"" or data.endswith(b"\n")
    return [decode_record(line) for line in data.splitlines()]


class Clock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@contextlib.asynccontextmanager
async def opened(sink: FileSink) -> AsyncIterator[FileSink]:
    await sink.open()
    try:
        yield sink
    finally:
        await sink.aclose()


def rotated(path: Path) -> list[str]:
    return sorted(p.name for p in path.parent.iterdir() if p.name != path.name)


async def test_file_sink_appends_whole_lines(tmp_path: Path) -> None:
    path = tmp_path / "out.ndjson"
    path.write_bytes(b'{"type":"status","v":1,"state":"old","recv_ts":0}\n')
    async with opened(FileSink(path)) as sink:
        await sink.write([book(1), status(2)])
        await sink.write([status(3)])
    records = read_records(path)
    assert records[1:] == [book(1), status(2), status(3)]
    assert records[0] == Status(v=1, state="old", recv_ts=0)


async def test_file_sink_rotates_by_size(tmp_path: Path) -> None:
    path = tmp_path / "out.ndjson"
    line = len(b"".join(_lines([status(0)])))
    async with opened(FileSink(path, max_bytes=2 * line, clock=Clock())) as sink:
        for i in range(5):
            await sink.write([status(i)])
    names = rotated(path)
    assert names == ["out.ndjson.20231114T221320", "out.ndjson.20231114T221320.1"]
    assert read_records(tmp_path / names[0]) == [status(0), status(1)]
    assert read_records(tmp_path / names[1]) == [status(2), status(3)]
    assert read_records(path) == [status(4)]


async def test_file_sink_batch_larger_than_max_bytes_stays_whole(tmp_path: Path) -> None:
    path = tmp_path / "out.ndjson"
    async with opened(FileSink(path, max_bytes=10, clock=Clock())) as sink:
        await sink.write([status(0), status(1), status(2)])
        await sink.write([status(3)])
    assert read_records(tmp_path / "out.ndjson.20231114T221320") == statuses(3)
    assert read_records(path) == [status(3)]


async def test_file_sink_rotates_by_time_on_interval_boundary(tmp_path: Path) -> None:
    path = tmp_path / "out.ndjson"
    clock = Clock(T0)  # 22:13:20, the hour ends at 23:00:00
    async with opened(FileSink(path, rotate_interval_s=3600, clock=clock)) as sink:
        await sink.write([status(0)])
        clock.now = T0 + 2799  # 22:59:59, same hour
        await sink.write([status(1)])
        assert rotated(path) == []
        clock.now = T0 + 2805  # 23:00:05
        await sink.write([status(2)])
    assert rotated(path) == ["out.ndjson.20231114T230005"]
    assert read_records(tmp_path / "out.ndjson.20231114T230005") == [status(0), status(1)]
    assert read_records(path) == [status(2)]


async def test_file_sink_keeps_at_most_keep_rotated_files(tmp_path: Path) -> None:
    path = tmp_path / "out.ndjson"
    (tmp_path / "unrelated.ndjson.20000101T000000").write_bytes(b"")
    (tmp_path / "out.ndjson.bak").write_bytes(b"")
    clock = Clock(T0)
    async with opened(FileSink(path, rotate_interval_s=60, keep=2, clock=clock)) as sink:
        for i in range(5):
            clock.now = T0 + 60 * i
            await sink.write([status(i)])
    names = rotated(path)
    assert names == ["out.ndjson.20231114T221620", "out.ndjson.20231114T221720",
                     "out.ndjson.bak", "unrelated.ndjson.20000101T000000"]
    assert read_records(tmp_path / names[0]) == [status(2)]
    assert read_records(tmp_path / names[1]) == [status(3)]
    assert read_records(path) == [status(4)]


async def test_file_sink_reopen_after_logrotate_rename(tmp_path: Path) -> None:
    path = tmp_path / "out.ndjson"
    moved = tmp_path / "out.ndjson.1"
    async with opened(FileSink(path)) as sink:
        assert isinstance(sink, Reopenable)
        await sink.write([status(0)])
        path.rename(moved)
        await sink.write([status(1)])  # still the old inode, as with any appender
        assert not path.exists()
        sink.reopen()
        await sink.write([status(2)])
    assert read_records(moved) == [status(0), status(1)]
    assert read_records(path) == [status(2)]


async def test_file_sink_open_repairs_torn_last_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "out.ndjson"
    good = b'{"type":"status","v":1,"state":"old","recv_ts":0}\n'
    path.write_bytes(good + b'{"type":"status","v":1,"sta')
    with caplog.at_level(logging.WARNING, logger="sinks.file"):
        async with opened(FileSink(path)) as sink:
            await sink.write([status(1)])
    assert path.read_bytes().startswith(good)
    assert read_records(path) == [Status(v=1, state="old", recv_ts=0), status(1)]
    assert "dropped 27 bytes" in caplog.text


async def test_file_sink_open_repairs_file_without_any_newline(tmp_path: Path) -> None:
    path = tmp_path / "out.ndjson"
    path.write_bytes(b"x" * 70_000)  # longer than one scan chunk
    async with opened(FileSink(path)) as sink:
        await sink.write([status(1)])
    assert read_records(path) == [status(1)]


async def test_file_sink_open_missing_directory_raises_unavailable(tmp_path: Path) -> None:
    sink = FileSink(tmp_path / "missing" / "out.ndjson")
    with pytest.raises(SinkUnavailable, match=r"open .*missing/out\.ndjson: ENOENT"):
        await sink.open()
    await sink.aclose()


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
async def test_file_sink_disk_full_raises_unavailable() -> None:
    async with opened(FileSink("/dev/full")) as sink:
        with pytest.raises(SinkUnavailable, match=r"write /dev/full: ENOSPC") as info:
            await sink.write([status(1)])
    assert isinstance(info.value.__cause__, OSError)
    assert info.value.__cause__.errno == errno.ENOSPC


@pytest.fixture
def file_size_limit() -> Iterator[None]:
    """Lets a test lower RLIMIT_FSIZE (a real short write then EFBIG); restores it after."""
    resource = pytest.importorskip("resource")
    if not hasattr(signal, "SIGXFSZ"):
        pytest.skip("needs SIGXFSZ")
    limits = resource.getrlimit(resource.RLIMIT_FSIZE)
    handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, limits)
        signal.signal(signal.SIGXFSZ, handler)


async def test_file_sink_short_write_leaves_no_partial_line(
    tmp_path: Path, file_size_limit: None
) -> None:
    import resource

    path = tmp_path / "out.ndjson"
    async with opened(FileSink(path)) as sink:
        await sink.write([status(0)])
        size = path.stat().st_size
        hard = resource.getrlimit(resource.RLIMIT_FSIZE)[1]
        resource.setrlimit(resource.RLIMIT_FSIZE, (size + 10, hard))
        try:
            with pytest.raises(SinkUnavailable, match="EFBIG"):
                await sink.write([status(1), status(2)])
        finally:
            resource.setrlimit(resource.RLIMIT_FSIZE, (hard, hard))
        assert path.stat().st_size == size
        await sink.write([status(1), status(2)])  # the runner's retry of the same batch
    assert read_records(path) == [status(0), status(1), status(2)]


async def test_file_sink_through_fanout(tmp_path: Path) -> None:
    path = tmp_path / "out.ndjson"
    fanout = Fanout([SinkSpec(FileSink(path), batch_max=7)])
    async with anyio.create_task_group() as tg:
        await tg.start(fanout.run)
        for i in range(50):
            await fanout.publish(status(i))
        fanout.close()
    assert read_records(path) == [status(i) for i in range(50)]


def test_file_sink_rejects_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="max_bytes"):
        FileSink(tmp_path / "x", max_bytes=0)
    with pytest.raises(ValueError, match="rotate_interval_s"):
        FileSink(tmp_path / "x", rotate_interval_s=-1)
    with pytest.raises(ValueError, match="keep"):
        FileSink(tmp_path / "x", keep=-1)


def _lines(records: list[Record]) -> list[bytes]:
    buffer = bytearray()
    for record in records:
        encode_line(record, buffer)
    return bytes(buffer).splitlines(keepends=True)


def _read_all(fd: int) -> bytes:
    chunks = []
    while True:
        try:
            chunk = os.read(fd, 1 << 16)
        except BlockingIOError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
async def test_file_sink_writes_to_a_fifo_without_seek_or_rotation(tmp_path: Path) -> None:
    path = tmp_path / "events.fifo"
    os.mkfifo(path)
    reader = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # so the sink's open does not block
    try:
        sink = FileSink(path, max_bytes=10, rotate_interval_s=1.0, keep=1, clock=Clock())
        sink.preflight()
        async with opened(sink):
            await sink.write(statuses(3))
            sink._clock.now += 5  # type: ignore[attr-defined]  # a new rotation period
            await sink.write([status(3)])
        data = _read_all(reader)
    finally:
        os.close(reader)
    assert [decode_record(line) for line in data.splitlines()] == statuses(4)
    assert os.listdir(tmp_path) == ["events.fifo"]  # nothing rotated


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc/self/fd")
async def test_file_sink_writes_to_a_pipe_like_dev_stderr(tmp_path: Path) -> None:
    read_fd, write_fd = os.pipe()
    os.set_blocking(read_fd, False)
    try:
        async with opened(FileSink(f"/proc/self/fd/{write_fd}", max_bytes=10)) as sink:
            await sink.write(statuses(2))
            await sink.write([status(2)])
        os.close(write_fd)
        write_fd = -1
        data = _read_all(read_fd)
    finally:
        os.close(read_fd)
        if write_fd >= 0:
            os.close(write_fd)
    assert [decode_record(line) for line in data.splitlines()] == statuses(3)


def test_file_sink_preflight_names_a_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(SinkConfigError, match=r"directory .*/missing does not exist"):
        FileSink(tmp_path / "missing" / "out.ndjson").preflight()


def test_file_sink_preflight_refuses_a_directory_and_a_file_as_parent(tmp_path: Path) -> None:
    with pytest.raises(SinkConfigError, match="is a directory"):
        FileSink(tmp_path).preflight()
    (tmp_path / "plain").write_text("")
    with pytest.raises(SinkConfigError, match="Not a directory"):
        FileSink(tmp_path / "plain" / "out.ndjson").preflight()


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_file_sink_preflight_refuses_a_read_only_directory(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    try:
        with pytest.raises(SinkConfigError, match="not writable"):
            FileSink(locked / "out.ndjson").preflight()
    finally:
        locked.chmod(0o755)


def test_file_sink_preflight_accepts_new_and_existing_files(tmp_path: Path) -> None:
    FileSink(tmp_path / "new.ndjson", rotate_interval_s=3600).preflight()
    (tmp_path / "old.ndjson").write_text("")
    FileSink(tmp_path / "old.ndjson").preflight()
    if os.path.exists("/dev/null"):
        FileSink("/dev/null", max_bytes=10).preflight()


def test_encode_lines_is_encode_line_for_each_record() -> None:
    from sinks.records import encode_lines

    records: list[Record] = [
        Status(v=SCHEMA_VERSION, state="connected", recv_ts=1),
        Book(v=SCHEMA_VERSION, market="m", token="1", seq=1, ts=2, recv_ts=3, best_bid="0.5",
             best_ask=None, bids=[("0.5", "10")], asks=[], run="r"),
    ]
    buffer = bytearray()
    for record in records:
        encode_line(record, buffer)
    assert encode_lines(records) == bytes(buffer)
    assert encode_lines([]) == b""
