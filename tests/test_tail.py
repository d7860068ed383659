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
from streamer.tools.tail import file_lines, summary, tail


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
    assert "m: run , seq 29, in sync" in summary(report)


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
    assert "OUT OF SYNC" in capsys.readouterr().out
    assert main(["tail", "gopher://x"]) == 2


def test_tail_missing_file_exits_2_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nope.ndjson"
    assert main(["tail", f"file:{missing}"]) == 2
    assert main(["tail", str(missing)]) == 2
    assert main(["tail", str(tmp_path)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 3, lines
    assert all(str(tmp_path) in line and "Traceback" not in line for line in lines)
    assert "No such file" in lines[0] and "directory" in lines[2]


def test_tail_accepts_a_bare_path_and_prints_the_summary_to_stdout(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    records, _ = _records()
    path = tmp_path / "good.ndjson"
    _write(path, records)
    assert main(["tail", "--quiet", "--summary", str(path)]) == 0
    out, err = capsys.readouterr()
    assert "m: run , seq 29, in sync" in out
    assert err == ""


def _closed_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.integration
@pytest.mark.parametrize("url", ["nats://127.0.0.1:{port}/books?stream=B",
                                 "redis://user:hunter2pw@127.0.0.1:{port}/0?stream=b"])
def test_tail_unreachable_broker_exits_2_in_one_line(
    url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["tail", url.format(port=_closed_port())]) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "cannot read" in lines[0], err
    assert "Traceback" not in err and "hunter2pw" not in err


@pytest.mark.integration
def test_tail_into_a_closed_pipe_exits_0_quietly(tmp_path: Path) -> None:
    import subprocess
    import sys

    records, _ = _records()
    path = tmp_path / "e.ndjson"
    _write(path, records * 200)  # more than a pipe buffer
    result = subprocess.run(f"{sys.executable} -m streamer tail {path} | head -n 1",
                            shell=True, capture_output=True, timeout=60,
                            executable="/bin/bash")
    assert result.stdout.count(b"\n") == 1
    assert b"Traceback" not in result.stderr and b"BrokenPipe" not in result.stderr
    status = subprocess.run(
        f"set -o pipefail; {sys.executable} -m streamer tail --quiet {path} | head -c0; "
        f"{sys.executable} -m streamer tail {path} | head -n 1 >/dev/null; "
        "echo ${PIPESTATUS[0]}",
        shell=True, capture_output=True, timeout=60, executable="/bin/bash")
    assert status.stdout.strip().splitlines()[-1] == b"0", status.stderr
