"""Replayer: the consumer rules across runs (restart, straggler, gap, late join)."""

from __future__ import annotations

from decimal import Decimal as D

from orderbook.book import OrderBook
from orderbook.replay import Replayer
from orderbook.sync import BookSynchronizer
from orderbook.types import Book, BookDelta, BookSnapshot, PriceLevel


def _feed(sync: BookSynchronizer, start: int, n: int) -> list[Book | BookDelta]:
    out: list[Book | BookDelta] = []
    for i in range(start, start + n):
        bids = [PriceLevel(str(D("0.40") - D(j) / 1000), str(i + j)) for j in range(3)]
        asks = [PriceLevel(str(D("0.60") + D(j) / 1000), str(10 + i % 4 + j)) for j in range(3)]
        record = sync.on_update(BookSnapshot("m", "1", bids, asks, i, i))
        if record is not None:
            out.append(record)
    return out


def _levels(book: OrderBook | None) -> object:
    assert book is not None
    return book.levels()


def test_a_new_run_is_a_restart_not_duplicates() -> None:
    a, b = BookSynchronizer("m", "1", "run-a"), BookSynchronizer("m", "1", "run-b")
    first, second = _feed(a, 1, 20), _feed(b, 40, 5)
    replayer = Replayer()
    for record in first + second:
        assert replayer.apply(record) is None
    assert replayer.duplicates == 0 and not replayer.gaps
    assert [(r.old_run, r.new_run) for r in replayer.restarts] == [("run-a", "run-b")]
    assert _levels(replayer.book("m")) == b.book.levels() != a.book.levels()
    assert replayer.runs == {"run-a", "run-b"}


def test_records_of_a_run_already_left_are_ignored() -> None:
    a, b = BookSynchronizer("m", "1", "run-a"), BookSynchronizer("m", "1", "run-b")
    first, second = _feed(a, 1, 10), _feed(b, 40, 5)
    straggler = _feed(a, 11, 3)
    replayer = Replayer()
    for record in first + second + straggler:
        replayer.apply(record)
    assert replayer.stale_runs == len(straggler) and len(replayer.restarts) == 1
    assert _levels(replayer.book("m")) == b.book.levels()


def test_a_gap_within_a_run_unsyncs_until_the_next_book() -> None:
    sync = BookSynchronizer("m", "1", "r")
    records = _feed(sync, 1, 10)
    replayer = Replayer()
    for record in records[:4] + records[5:]:
        replayer.apply(record)
    assert [(g.expected, g.got, g.run) for g in replayer.gaps] == [(5, 6, "r")]
    assert replayer.book("m") is None
    replayer.apply(sync.snapshot_record(99) or records[0])
    assert _levels(replayer.book("m")) == sync.book.levels()


def test_a_new_run_missing_its_first_records_is_a_gap() -> None:
    a, b = BookSynchronizer("m", "1", "run-a"), BookSynchronizer("m", "1", "run-b")
    first, second = _feed(a, 1, 5), _feed(b, 40, 5)
    replayer = Replayer()
    for record in first + second[2:]:
        replayer.apply(record)
    assert [(g.expected, g.got, g.run) for g in replayer.gaps] == [(1, 3, "run-b")]
    assert replayer.book("m") is None


def test_a_late_joiner_starts_at_any_book_without_a_gap() -> None:
    sync = BookSynchronizer("m", "1", "r")
    records = _feed(sync, 1, 10)
    late = sync.snapshot_record(100)
    assert late is not None
    more = _feed(sync, 11, 5)
    replayer = Replayer()
    for record in [records[-1], late, *more]:
        replayer.apply(record)
    assert not replayer.gaps and not replayer.restarts
    assert _levels(replayer.book("m")) == sync.book.levels()


def test_new_run_restarts_seq_with_a_book() -> None:
    sync = BookSynchronizer("m", "1", "r1")
    _feed(sync, 1, 5)
    book = sync.new_run("r2", 50)
    assert isinstance(book, Book) and (book.run, book.seq) == ("r2", 1)
    nxt = _feed(sync, 6, 3)
    assert [(r.run, r.seq) for r in nxt] == [("r2", 2), ("r2", 3), ("r2", 4)]
    fresh = BookSynchronizer("n", "1", "r1")
    assert fresh.new_run("r2", 1) is None and fresh.seq == 0
