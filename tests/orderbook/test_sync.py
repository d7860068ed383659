from __future__ import annotations

from collections.abc import Sequence

import msgspec
import pytest

from orderbook import (
    SCHEMA_VERSION,
    Book,
    BookDelta,
    BookSnapshot,
    BookSynchronizer,
    InvalidLevel,
    OrderBook,
    PriceLevel,
)

MARKET = "btc-above-100k"
TOKEN = "19633204485790857949828516737993423758628930235371629943999544859324645414627"

BIDS = [("0.50", "10"), ("0.49", "20")]
ASKS = [("0.52", "11"), ("0.53", "21")]


def levels(pairs: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    return list(pairs)


def snap(
    bids: Sequence[tuple[str, str]] = BIDS,
    asks: Sequence[tuple[str, str]] = ASKS,
    *,
    ts: int | None = 1_000,
    recv_ts: int = 5_000,
    token: str = TOKEN,
) -> BookSnapshot:
    return BookSnapshot(
        market=MARKET,
        token=token,
        bids=[PriceLevel(p, s) for p, s in bids],
        asks=[PriceLevel(p, s) for p, s in asks],
        ts=ts,
        recv_ts=recv_ts,
    )


def rest(
    bids: Sequence[tuple[str, str]] = BIDS,
    asks: Sequence[tuple[str, str]] = ASKS,
    *,
    recv_ts: int = 5_000,
) -> BookSnapshot:
    return snap(bids, asks, ts=None, recv_ts=recv_ts)


def replay(records: Sequence[Book | BookDelta]) -> OrderBook:
    book = OrderBook()
    for record in sorted(records, key=lambda r: r.seq):
        if isinstance(record, Book):
            book.clear()
        book.apply_delta(record.bids, record.asks)
    return book


def test_sync_initial_state_needs_snapshot() -> None:
    sync = BookSynchronizer(MARKET, TOKEN)
    assert sync.needs_snapshot
    assert sync.snapshot_reason == "initial"
    assert (sync.seq, sync.last_ts, sync.seeded) == (0, None, False)
    assert len(sync.book) == 0


def test_sync_rest_seed_emits_full_book_and_clears_needs_snapshot() -> None:
    sync = BookSynchronizer(MARKET, TOKEN)
    record = sync.on_rest_snapshot(rest(recv_ts=7_000))
    assert record == Book(
        v=SCHEMA_VERSION,
        market=MARKET,
        token=TOKEN,
        seq=1,
        ts=7_000,
        recv_ts=7_000,
        best_bid="0.50",
        best_ask="0.52",
        bids=levels(BIDS),
        asks=levels(ASKS),
    )
    assert not sync.needs_snapshot
    assert sync.snapshot_reason is None
    assert sync.seeded
    assert sync.stats.books_emitted == 1


def test_sync_rest_seed_resets_the_stale_check() -> None:
    sync = BookSynchronizer(MARKET, TOKEN)
    sync.on_update(snap(ts=1_000))
    sync.on_rest_snapshot(rest(recv_ts=999_999))
    assert sync.last_ts is None
    # An exchange time behind the local receive time is still accepted afterwards.
    assert sync.on_update(snap([("0.50", "1")], ts=1_001)) is not None
    assert sync.last_ts == 1_001


def test_sync_a_far_future_timestamp_freezes_nothing_after_a_seed_or_reset() -> None:
    sync = BookSynchronizer(MARKET, TOKEN)
    sync.on_update(snap(ts=1_767_225_600_000_000))  # epoch microseconds read as ms
    assert sync.on_update(snap([("0.50", "1")], ts=1_767_225_601_000)) is None  # stale
    assert sync.stats.stale_dropped == 1
    sync.reset_clock()
    assert sync.on_update(snap([("0.50", "1")], ts=1_767_225_601_000)) is not None
    sync.on_update(snap(ts=1_767_225_600_000_000))
    sync.on_rest_snapshot(rest())
    assert sync.on_update(snap([("0.49", "1")], ts=1_767_225_602_000)) is not None


def test_sync_rest_seed_ts_prefers_snapshot_ts_when_given() -> None:
    sync = BookSynchronizer(MARKET, TOKEN)
    record = sync.on_rest_snapshot(snap(ts=1_234, recv_ts=5_000))
    assert (record.ts, record.recv_ts) == (1_234, 5_000)
    assert sync.last_ts is None


def test_sync_first_ws_update_without_seed_emits_full_book() -> None:
    sync = BookSynchronizer(MARKET, TOKEN)
    record = sync.on_update(snap(ts=1_000, recv_ts=1_050))
    assert isinstance(record, Book)
    assert (record.seq, record.ts, record.recv_ts) == (1, 1_000, 1_050)
    assert (record.bids, record.asks) == (levels(BIDS), levels(ASKS))
    assert sync.last_ts == 1_000
    assert sync.seeded
    # The REST seed after subscribing is still wanted.
    assert sync.needs_snapshot


def test_sync_update_after_seed_emits_only_changed_levels() -> None:
    sync = BookSynchronizer(MARKET, TOKEN)
    sync.on_rest_snapshot(rest())
    record = sync.on_update(
        snap([("0.51", "5"), ("0.50", "10")], [("0.52", "11"), ("0.53", "22")], ts=2_000)
    )
    assert record == BookDelta(
        v=SCHEMA_VERSION,
        market=MARKET,
        token=TOKEN,
        seq=2,
        ts=2_000,
        recv_ts=5_000,
        best_bid="0.51",
        best_ask="0.52",
        bids=levels([("0.51", "5"), ("0.49", "0")]),
        asks=levels([("0.53", "22")]),
    )
    assert sync.stats.deltas_emitted == 1


def test_sync_delta_best_prices_are_none_for_empty_side() -> None:
    sync = BookSynchronizer(MARKET, TOKEN)
    sync.on_rest_snapshot(rest())
    record = sync.on_update(snap(BIDS, [], ts=2_000))
    assert isinstance(record, BookDelta)
    assert (record.best_bid, record.best_ask) == ("0.50", None)
    assert record.asks == levels([("0.52", "0"), ("0.53", "0")])


def test_sync_identical_update_is_suppressed_but_advances_last_ts() -> None:
    sync = BookSynchronizer(MARKET, TOKEN)
    sync.on_update(snap(ts=1_000))
    assert sync.on_update(snap(ts=2_000)) is None
    assert sync.stats.identical_suppressed == 1
    assert sync.last_ts == 2_000
    assert sync.seq == 1


def test_sync_equal_size_spelling_is_suppressed() -> None:
    sync = BookSynchronizer(MARKET, TOKEN)
    sync.on_update(snap([("0.5", "100")], [], ts=1_000))
    assert sync.on_update(snap([("0.50", "100.0")], [], ts=1_001)) is None
    assert sync.stats.identical_suppressed == 1


def test_sync_stale_update_is_dropped() -> None:
    sync = BookSynchronizer(MARKET, TOKEN)
    sync.on_update(snap(ts=2_000))
    before = sync.book.copy()
    assert sync.on_update(snap([("0.1", "1")], [], ts=1_999)) is None
    assert sync.book == before
    assert (sync.seq, sync.last_ts) == (1, 2_000)
    assert sync.stats.stale_dropped == 1


def test_sync_equal_timestamp_is_applied() -> None:
    sync = BookSynchronizer(MARKET, TOKEN)
    sync.on_update(snap(ts=2_000))
    record = sync.on_update(snap([("0.50", "11")], ASKS, ts=2_000))
    assert isinstance(record, BookDelta)
    assert record.bids == levels([("0.50", "11"), ("0.49", "0")])
    assert sync.stats.stale_dropped == 0


def test_sync_update_without_exchange_ts_uses_recv_ts_and_keeps_last_ts() -> None:
    sync = BookSynchronizer(MARKET, TOKEN)
    sync.on_update(snap(ts=2_000))
    record = sync.on_update(snap([("0.50", "1")], ts=None, recv_ts=9_000))
    assert record is not None
    assert record.ts == 9_000
    assert sync.last_ts == 2_000


def test_sync_crossed_update_requests_snapshot_and_still_emits() -> None:
    sync = BookSynchronizer(MARKET, TOKEN)
    sync.on_rest_snapshot(rest())
    record = sync.on_update(snap([("0.52", "1")], ASKS, ts=2_000))
    assert isinstance(record, BookDelta)
    assert record.best_bid == record.best_ask == "0.52"
    assert sync.needs_snapshot
    assert sync.snapshot_reason == "crossed"
    assert sync.stats.crossed == 1


def test_sync_crossed_first_book_requests_snapshot() -> None:
    sync = BookSynchronizer(MARKET, TOKEN)
    sync.request_snapshot("resubscribe")
    record = sync.on_update(snap([("0.6", "1")], ASKS, ts=1))
    assert isinstance(record, Book)
    assert record.best_bid == "0.6"
    assert sync.stats.crossed == 1
    assert (sync.needs_snapshot, sync.snapshot_reason) == (True, "crossed")


def test_sync_crossed_rest_book_is_counted_without_rerequest() -> None:
    sync = BookSynchronizer(MARKET, TOKEN)
    record = sync.on_rest_snapshot(rest([("0.53", "1")], ASKS))
    assert record.best_bid == "0.53"
    assert sync.stats.crossed == 1
    assert not sync.needs_snapshot


def test_sync_invalid_ws_update_raises_and_leaves_state() -> None:
    sync = BookSynchronizer(MARKET, TOKEN)
    sync.on_update(snap(ts=1_000))
    before = sync.book.copy()
    with pytest.raises(InvalidLevel):
        sync.on_update(snap([("0.51", "1")], [("Infinity", "1")], ts=2_000))
    assert sync.book == before
    assert (sync.seq, sync.last_ts) == (1, 1_000)
    assert sync.stats.invalid == 1
    # the next valid update diffs against the untouched book
    record = sync.on_update(snap([("0.51", "1")], ASKS, ts=2_000))
    assert isinstance(record, BookDelta)
    assert record.seq == 2


def test_sync_invalid_rest_snapshot_raises_and_keeps_needs_snapshot() -> None:
    sync = BookSynchronizer(MARKET, TOKEN)
    with pytest.raises(InvalidLevel):
        sync.on_rest_snapshot(rest([("0.5", "NaN")]))
    assert sync.needs_snapshot
    assert (sync.seq, sync.seeded, len(sync.book)) == (0, False, 0)
    assert sync.stats.invalid == 1


def test_sync_invalid_first_update_does_not_seed() -> None:
    sync = BookSynchronizer(MARKET, TOKEN)
    with pytest.raises(InvalidLevel):
        sync.on_update(snap([("-0.5", "1")], ts=1_000))
    assert (sync.seq, sync.seeded, sync.last_ts) == (0, False, None)
    record = sync.on_update(snap(ts=1_000))
    assert isinstance(record, Book)
    assert record.seq == 1


def test_sync_request_snapshot_sets_reason() -> None:
    sync = BookSynchronizer(MARKET, TOKEN)
    sync.on_rest_snapshot(rest())
    sync.request_snapshot("resubscribe")
    assert (sync.needs_snapshot, sync.snapshot_reason) == (True, "resubscribe")
    sync.request_snapshot("stale")
    assert sync.snapshot_reason == "stale"
    sync.on_rest_snapshot(rest())
    assert (sync.needs_snapshot, sync.snapshot_reason) == (False, None)


def test_sync_token_change_is_recorded() -> None:
    sync = BookSynchronizer(MARKET, TOKEN)
    sync.on_update(snap(ts=1))
    record = sync.on_update(snap([("0.50", "1")], token="42", ts=2))
    assert record is not None
    assert record.token == "42"
    assert sync.token == "42"
    assert sync.on_rest_snapshot(rest()).token == TOKEN


def test_sync_seq_strictly_increases_by_one_per_record() -> None:
    sync = BookSynchronizer(MARKET, TOKEN)
    outputs = [
        sync.on_update(snap(ts=1)),
        sync.on_update(snap(ts=1)),  # identical: nothing
        sync.on_update(snap(ts=0)),  # stale: nothing
        sync.on_rest_snapshot(rest([("0.4", "1")])),
        sync.on_update(snap([("0.45", "2")], ts=3)),
        sync.on_rest_snapshot(rest()),
        sync.on_update(snap([("0.3", "2")], [], ts=4)),
    ]
    records = [r for r in outputs if r is not None]
    assert [r.seq for r in records] == [1, 2, 3, 4, 5]
    assert [type(r) for r in records] == [Book, Book, BookDelta, Book, BookDelta]
    assert sync.seq == 5
    assert sync.stats.updates == 5
    assert (sync.stats.books_emitted, sync.stats.deltas_emitted) == (3, 2)
    assert (sync.stats.identical_suppressed, sync.stats.stale_dropped) == (1, 1)


def test_sync_replay_of_records_reproduces_book() -> None:
    sync = BookSynchronizer(MARKET, TOKEN)
    inputs = [
        rest(),
        snap([("0.51", "1"), ("0.50", "10")], ASKS, ts=10),
        snap([("0.51", "2")], [("0.55", "1"), ("0.52", "4")], ts=11),
        snap([("0.1", "9")], [("0.55", "1")], ts=9),  # stale
        rest([("0.4", "3")], [("0.6", "3")]),
        snap([("0.41", "3"), ("0.4", "3")], [("0.6", "3.000")], ts=12),
    ]
    records: list[Book | BookDelta] = []
    for item in inputs:
        record = sync.on_update(item) if item.ts is not None else sync.on_rest_snapshot(item)
        if record is not None:
            records.append(record)
    assert replay(records) == sync.book
    assert sync.book.levels() == (levels([("0.41", "3"), ("0.4", "3")]), levels([("0.6", "3")]))


def test_sync_records_encode_with_type_tag_and_exact_decimals() -> None:
    sync = BookSynchronizer(MARKET, TOKEN)
    book = msgspec.json.decode(msgspec.json.encode(sync.on_update(snap(ts=1))))
    delta = msgspec.json.decode(
        msgspec.json.encode(sync.on_update(snap([("0.515", "1.50")], ASKS, ts=2)))
    )
    assert book["type"] == "book"
    assert delta["type"] == "book_delta"
    assert delta["bids"][0] == ["0.515", "1.50"]
