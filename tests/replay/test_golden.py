"""The committed recording (tests/data/replay/sim) replayed through the whole daemon.

When the output changes on purpose: ``.venv/bin/python -m tests.replay.regenerate``.
"""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from orderbook.types import Book, BookDelta
from sinks.records import encode
from streamer.cli import main
from tests.replay.harness import IGNORED, comparable, first_difference, read, replay_records
from tests.replay.regenerate import EXPECTED, LIVE, RECORDING

pytestmark = [pytest.mark.integration]


@pytest.mark.anyio
async def test_replay_committed_recording_gives_expected_records() -> None:
    records, stats = await replay_records(RECORDING)
    got, expected = comparable(records), read(EXPECTED)
    assert got == expected, first_difference(expected, got)
    assert stats.sessions >= 3 and stats.rest_orphans == 0 and stats.frames_skipped == 0


@pytest.mark.anyio
async def test_replay_committed_recording_book_records_equal_live_run() -> None:
    records, _ = await replay_records(RECORDING)
    live = [row for row in read(LIVE) if row["type"] in ("book", "book_delta")]
    got = comparable(records, books_only=True)
    assert got == [{k: row.get(k) for k in got[0]} for row in live]
    assert any(row["type"] == "book" and row["seq"] > 1 for row in got)  # re-seeded after drops


@pytest.mark.anyio
async def test_replay_twice_gives_identical_bytes() -> None:
    first, _ = await replay_records(RECORDING)
    second, _ = await replay_records(RECORDING)
    assert [encode(r) for r in first] == [encode(r) for r in second]


@pytest.mark.anyio
async def test_replay_from_resumes_at_a_session_with_full_books() -> None:
    full, _ = await replay_records(RECORDING)
    part, stats = await replay_records(RECORDING, start="+5")
    assert stats.sessions < 3
    books = [r for r in part if isinstance(r, Book | BookDelta)]
    assert books and len(books) < len([r for r in full if isinstance(r, Book | BookDelta)])
    seen: set[str] = set()
    for record in books:  # each market starts over with a whole book, seq 1
        if record.market not in seen:
            assert isinstance(record, Book) and record.seq == 1
            seen.add(record.market)


@pytest.mark.anyio
async def test_replay_to_stops_early() -> None:
    full, _ = await replay_records(RECORDING)
    part, _ = await replay_records(RECORDING, end="+3")
    assert 0 < len(part) < len(full)
    assert comparable(part) == comparable(full)[: len(part)]


def test_replay_command_writes_the_expected_records(tmp_path: Path) -> None:
    out = tmp_path / "out.ndjson"
    code = main(["replay", str(RECORDING), "--max-speed", "--sink", f"file:{out}",
                 "--log-level", "error"])
    assert code == 0
    rows = [{k: v for k, v in msgspec.json.decode(line).items() if k not in IGNORED}
            for line in out.read_bytes().splitlines()]
    assert rows == read(EXPECTED), first_difference(read(EXPECTED), rows)
