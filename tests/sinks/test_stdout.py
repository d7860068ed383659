from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Iterator
from typing import BinaryIO

import msgspec
import pytest

from sinks.base import SinkClosed, SinkUnavailable
from sinks.records import (
    SCHEMA_VERSION,
    Book,
    BookDelta,
    MarketInfo,
    PriceData,
    Record,
    Status,
    decode_record,
)
from sinks.stdout import StdoutSink

pytestmark = pytest.mark.anyio


class RecordingStream(io.BytesIO):
    """A binary stream that counts flushes and what was in it at each flush."""

    def __init__(self) -> None:
        super().__init__()
        self.flushed_at: list[int] = []

    def flush(self) -> None:
        super().flush()
        self.flushed_at.append(len(self.getvalue()))


@contextlib.contextmanager
def broken_pipe(buffering: int) -> Iterator[BinaryIO]:
    """The write end of a pipe whose reader is gone (like `| head` after it exits)."""
    read_fd, write_fd = os.pipe()
    os.close(read_fd)
    stream = os.fdopen(write_fd, "wb", buffering=buffering)
    try:
        yield stream
    finally:
        with contextlib.suppress(BrokenPipeError):
            stream.close()


RECORDS: list[Record] = [
    Book(v=SCHEMA_VERSION, market="m", token="1" * 70, seq=1, ts=5, recv_ts=6,
         best_bid="0.515", best_ask=None, bids=[("0.515", "100")],
         asks=[]),
    BookDelta(v=SCHEMA_VERSION, market="m", token="1", seq=2, ts=7, recv_ts=8, best_bid=None,
              best_ask="0.999", bids=[("0.515", "0")],
              asks=[("0.999", "0.000001")]),
    MarketInfo(v=SCHEMA_VERSION, market="m", recv_ts=1, title="Will it?", token="1",
               tokens={"yes": "1", "no": "2"}, exchange=None, adapter=None, status="FUNDED",
               expiration=None),
    Status(v=SCHEMA_VERSION, state="connected", recv_ts=9, markets=3),
    PriceData(v=SCHEMA_VERSION, recv_ts=10, market=None,
              data=msgspec.Raw(b'{"prices":[0.5, 0.5]}')),
]


async def test_stdout_sink_writes_ndjson_that_decodes_back() -> None:
    stream = RecordingStream()
    sink = StdoutSink(stream)
    await sink.open()
    await sink.write(RECORDS[:2])
    await sink.write(RECORDS[2:])
    await sink.aclose()
    data = stream.getvalue()
    lines = data.splitlines()
    assert data.endswith(b"\n") and len(lines) == len(RECORDS)
    decoded = [decode_record(line) for line in lines]
    assert decoded[:4] == RECORDS[:4]
    assert isinstance(decoded[4], PriceData)
    assert bytes(decoded[4].data) == b'{"prices":[0.5, 0.5]}'
    assert b'"best_bid":"0.515"' in lines[0]
    first_batch = len(lines[0]) + len(lines[1]) + 2
    assert stream.flushed_at[:2] == [first_batch, len(data)]
    assert not stream.closed


@pytest.mark.parametrize("buffering", [0, -1], ids=["raw", "buffered"])
async def test_stdout_sink_epipe_raises_sink_closed(buffering: int) -> None:
    with broken_pipe(buffering) as stream:
        sink = StdoutSink(stream, name="out")
        await sink.open()
        with pytest.raises(SinkClosed, match="EPIPE") as info:
            await sink.write(RECORDS[:1])
        assert isinstance(info.value.__cause__, BrokenPipeError)
        await sink.aclose()


@pytest.fixture
def dev_full() -> Iterator[BinaryIO]:
    if not os.path.exists("/dev/full"):
        pytest.skip("needs /dev/full")
    with open("/dev/full", "wb", buffering=0) as stream:
        yield stream


async def test_stdout_sink_other_os_error_is_unavailable(dev_full: BinaryIO) -> None:
    sink = StdoutSink(dev_full)
    await sink.open()
    with pytest.raises(SinkUnavailable, match="ENOSPC"):
        await sink.write(RECORDS[:1])
    await sink.aclose()


async def test_stdout_sink_defaults_to_sys_stdout(
    capsysbinary: pytest.CaptureFixture[bytes],
) -> None:
    sink = StdoutSink()
    await sink.open()
    await sink.write(RECORDS[3:4])
    await sink.aclose()
    assert decode_record(capsysbinary.readouterr().out) == RECORDS[3]
