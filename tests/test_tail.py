"""``tail``: read back NDJSON, rebuild books, flag seq gaps."""

from __future__ import annotations

import io
from decimal import Decimal as D
from pathlib import Path

import pytest

from orderbook.sync import BookSynchronizer
from orderbook.types import BookSnapshot, PriceLevel
from sinks.records import Record, encode_line
from streamer.cli import main
from streamer.tail import file_lines, summary, tail


def _records() -> tuple[list[Record], BookSynchronizer]:
    sync = BookSynchronizer("m", "1")
    out: list[Record] = []
    for i in range(1, 30):
        bids = [PriceLevel(str(D("0.40") - D(j) / 1000), i + j) for j in range(5)]
        asks = [PriceLevel(str(D("0.60") + D(j) / 1000), str(10 + (i % 3) + j))
                for j in range(5)]
        record = sync.on_update(BookSnapshot("m", "1", bids, asks, i, i))
        if record is not None:
            out.append(record)
    return out, sync


def _write(path: Path, records: list[Record]) -> None:
    buf = bytearray()
    for record in records:
        encode_line(record, buf)
    path.write_bytes(bytes(buf))


@pytest.mark.anyio
async def test_tail_rebuilds_the_book_exactly(tmp_path: Path) -> None:
    records, sync = _records()
    path = tmp_path / "e.ndjson"
    _write(path, records)
    err = io.StringIO()
    report = await tail(file_lines(str(path)), out=None, err=err)
    assert report.records == len(records) and not report.gaps
    assert report.replayer.book("m") == sync.book
    assert "m: seq 29, in sync" in summary(report)


@pytest.mark.anyio
async def test_tail_flags_a_gap_and_resyncs_on_the_next_book(tmp_path: Path) -> None:
    records, _ = _records()
    path = tmp_path / "e.ndjson"
    _write(path, records[:10] + records[11:])
    err = io.StringIO()
    report = await tail(file_lines(str(path)), out=None, err=err)
    assert [(g.expected, g.got) for g in report.gaps] == [(11, 12)]
    assert "GAP in m: expected seq 11, got 12" in err.getvalue()
    assert report.replayer.book("m") is None  # out of sync until a full book arrives


def test_tail_command_exit_status(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    records, _ = _records()
    good, bad = tmp_path / "good.ndjson", tmp_path / "bad.ndjson"
    _write(good, records)
    _write(bad, records[:5] + records[6:])
    assert main(["tail", "--quiet", f"file:{good}"]) == 0
    assert main(["tail", "--quiet", "--summary", f"file:{bad}"]) == 1
    assert "OUT OF SYNC" in capsys.readouterr().err
    assert main(["tail", "gopher://x"]) == 2
