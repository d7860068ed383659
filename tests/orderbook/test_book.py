from __future__ import annotations

import ast
import sys
from decimal import Decimal
from pathlib import Path

import pytest

import orderbook
from orderbook import CrossedBook, InvalidLevel, OrderBook, OrderBookError, PriceLevel

D = Decimal
ORDERBOOK_DIR = Path(orderbook.__file__).parent
ALLOWED_THIRD_PARTY = {"sortedcontainers", "msgspec", "orderbook"}


def lv(price: str, size: str) -> PriceLevel:
    return PriceLevel(price=D(price), size=D(size))


def levels(*pairs: tuple[str, str]) -> list[tuple[Decimal, Decimal]]:
    return [(D(p), D(s)) for p, s in pairs]


def seeded() -> OrderBook:
    book = OrderBook()
    book.replace(
        [lv("0.50", "10"), lv("0.49", "20"), lv("0.48", "30")],
        [lv("0.52", "11"), lv("0.53", "21")],
    )
    return book


# ------------------------------------------------------------------ replace


def test_replace_on_empty_book_returns_all_levels_best_first() -> None:
    book = OrderBook()
    bids, asks = book.replace(
        [lv("0.48", "30"), lv("0.50", "10"), lv("0.49", "20")],
        [lv("0.53", "21"), lv("0.52", "11")],
    )
    assert bids == levels(("0.50", "10"), ("0.49", "20"), ("0.48", "30"))
    assert asks == levels(("0.52", "11"), ("0.53", "21"))
    assert book.levels() == (bids, asks)


def test_replace_inserted_level_is_the_only_change() -> None:
    book = seeded()
    bids, asks = book.replace(
        [lv("0.50", "10"), lv("0.49", "20"), lv("0.48", "30"), lv("0.495", "5")],
        [lv("0.52", "11"), lv("0.53", "21")],
    )
    assert bids == levels(("0.495", "5"))
    assert asks == []
    assert book.bids_best_first() == levels(
        ("0.50", "10"), ("0.495", "5"), ("0.49", "20"), ("0.48", "30")
    )


def test_replace_changed_size_is_reported_with_new_size() -> None:
    book = seeded()
    bids, asks = book.replace(
        [lv("0.50", "10"), lv("0.49", "25"), lv("0.48", "30")],
        [lv("0.52", "1"), lv("0.53", "21")],
    )
    assert bids == levels(("0.49", "25"))
    assert asks == levels(("0.52", "1"))
    assert book.asks_best_first() == levels(("0.52", "1"), ("0.53", "21"))


def test_replace_missing_level_is_reported_with_size_zero() -> None:
    book = seeded()
    bids, asks = book.replace([lv("0.49", "20")], [lv("0.53", "21")])
    assert bids == levels(("0.50", "0"), ("0.48", "0"))
    assert asks == levels(("0.52", "0"))
    assert book.levels() == (levels(("0.49", "20")), levels(("0.53", "21")))


def test_replace_mixed_changes_are_sorted_best_first_per_side() -> None:
    book = seeded()
    bids, asks = book.replace(
        [lv("0.51", "1"), lv("0.49", "21"), lv("0.47", "3")],
        [lv("0.54", "2"), lv("0.515", "9")],
    )
    assert bids == levels(
        ("0.51", "1"), ("0.50", "0"), ("0.49", "21"), ("0.48", "0"), ("0.47", "3")
    )
    assert asks == levels(("0.515", "9"), ("0.52", "0"), ("0.53", "0"), ("0.54", "2"))


def test_replace_identical_book_returns_no_changes() -> None:
    book = seeded()
    before = book.levels()
    assert book.replace(
        [lv("0.48", "30"), lv("0.50", "10"), lv("0.49", "20")],
        [lv("0.53", "21"), lv("0.52", "11")],
    ) == ([], [])
    assert book.levels() == before


def test_replace_equal_decimal_size_is_not_a_change() -> None:
    book = OrderBook()
    book.replace([lv("0.5", "100")], [])
    assert book.replace([lv("0.5", "100.0")], []) == ([], [])
    assert book.replace([lv("0.5", "1E+2")], []) == ([], [])


def test_replace_equal_decimal_size_is_not_a_change_next_to_a_real_change() -> None:
    book = OrderBook()
    book.replace([lv("0.5", "100"), lv("0.4", "1")], [lv("0.6", "7")])
    bids, asks = book.replace(
        [lv("0.5", "100.0"), lv("0.4", "2")], [lv("0.60", "7.00"), lv("0.7", "1")]
    )
    assert bids == levels(("0.4", "2"))
    assert asks == levels(("0.7", "1"))


def test_replace_equal_decimal_price_is_the_same_level() -> None:
    book = OrderBook()
    book.replace([lv("0.5", "100")], [])
    bids, _ = book.replace([lv("0.50", "7")], [])
    assert bids == levels(("0.5", "7"))
    assert book.n_bids == 1


def test_replace_reports_the_held_spelling_of_a_price() -> None:
    book = OrderBook()
    book.replace([lv("0.50", "1"), lv("0.40", "1")], [lv("0.60", "1")])
    bids, asks = book.replace([lv("0.5", "2")], [lv("0.6", "1"), lv("0.7", "1")])
    assert [(str(p), str(s)) for p, s in bids] == [("0.50", "2"), ("0.40", "0")]
    assert [(str(p), str(s)) for p, s in asks] == [("0.7", "1")]
    assert [str(p) for p, _ in book.bids_best_first()] == ["0.50"]
    assert [str(p) for p, _ in book.asks_best_first()] == ["0.60", "0.7"]


def test_replace_size_zero_level_is_absent() -> None:
    book = seeded()
    bids, _ = book.replace(
        [lv("0.50", "0"), lv("0.49", "20"), lv("0.48", "30"), lv("0.40", "0")],
        [lv("0.52", "11"), lv("0.53", "21")],
    )
    assert bids == levels(("0.50", "0"))
    assert D("0.40") not in dict(book.bids_best_first())


def test_replace_duplicate_price_last_one_wins() -> None:
    book = OrderBook()
    bids, asks = book.replace(
        [lv("0.5", "1"), lv("0.5", "2")],
        [lv("0.6", "3"), lv("0.6", "0")],
    )
    assert bids == levels(("0.5", "2"))
    assert asks == []
    bids, asks = book.replace([lv("0.5", "0"), lv("0.50", "4")], [])
    assert bids == levels(("0.5", "4"))


def test_replace_keeps_prices_and_sizes_exact() -> None:
    book = OrderBook()
    book.replace([lv("0.515", "123.456789")], [lv("0.1000000000000000055511151231257827", "1")])
    assert str(book.best_bid()) == "0.515"
    assert str(book.bids_best_first()[0][1]) == "123.456789"
    assert str(book.best_ask()) == "0.1000000000000000055511151231257827"


def test_replace_returns_fresh_lists() -> None:
    book = seeded()
    first = book.replace([], [])
    first[0].append((D("9"), D("9")))
    assert book.replace([], []) == ([], [])


@pytest.mark.parametrize(
    ("price", "size"),
    [
        ("NaN", "1"),
        ("sNaN", "1"),
        ("Infinity", "1"),
        ("-Infinity", "1"),
        ("0", "1"),
        ("-0.5", "1"),
        ("0.5", "NaN"),
        ("0.5", "Infinity"),
        ("0.5", "-1"),
        ("0.5", "-0.000001"),
        ("NaN", "0"),
    ],
)
def test_replace_invalid_level_raises_and_leaves_book_untouched(price: str, size: str) -> None:
    book = seeded()
    before = book.copy()
    with pytest.raises(InvalidLevel) as info:
        # The bad level is on the ask side, after a valid bid change: nothing may move.
        book.replace([lv("0.50", "99"), lv("0.30", "1")], [lv("0.52", "11"), lv(price, size)])
    assert book == before
    err = info.value
    assert err.side == "ask"
    assert str(err.price) == str(D(price))
    assert str(err.size) == str(D(size))


def test_replace_invalid_bid_raises_with_bid_side() -> None:
    book = OrderBook()
    with pytest.raises(InvalidLevel) as info:
        book.replace([lv("0.5", "-1")], [])
    assert info.value.side == "bid"
    assert len(book) == 0


def test_replace_after_invalid_input_still_diffs_against_held_book() -> None:
    book = seeded()
    with pytest.raises(InvalidLevel):
        book.replace([lv("0.47", "1"), lv("NaN", "1")], [])
    bids, asks = book.replace([lv("0.50", "10"), lv("0.49", "20")], [lv("0.52", "11")])
    assert bids == levels(("0.48", "0"))
    assert asks == levels(("0.53", "0"))


def test_replace_negative_zero_size_is_absent() -> None:
    book = OrderBook()
    assert book.replace([lv("0.5", "-0")], []) == ([], [])
    assert len(book) == 0


# ------------------------------------------------------------------ apply_delta


def test_apply_delta_sets_and_removes_levels() -> None:
    book = seeded()
    book.apply_delta(levels(("0.50", "0"), ("0.45", "7")), levels(("0.52", "12")))
    assert book.levels() == (
        levels(("0.49", "20"), ("0.48", "30"), ("0.45", "7")),
        levels(("0.52", "12"), ("0.53", "21")),
    )


def test_apply_delta_removing_absent_level_is_a_no_op() -> None:
    book = seeded()
    before = book.copy()
    book.apply_delta(levels(("0.10", "0")), levels(("0.90", "0")))
    assert book == before


def test_apply_delta_then_replace_keeps_held_spelling() -> None:
    book = OrderBook()
    book.apply_delta(levels(("0.50", "1"), ("0.40", "1")), [])
    book.apply_delta(levels(("0.5", "3"), ("0.40", "0")), [])
    bids, _ = book.replace([lv("0.5", "4")], [])
    assert [(str(p), str(s)) for p, s in bids] == [("0.50", "4")]


def test_apply_delta_replays_replace_changes() -> None:
    held = seeded()
    replica = held.copy()
    bids, asks = held.replace([lv("0.51", "1"), lv("0.49", "21")], [lv("0.6", "2")])
    replica.apply_delta(bids, asks)
    assert replica == held


# ------------------------------------------------------------------ readers


def test_best_prices_of_empty_book_are_none() -> None:
    book = OrderBook()
    assert book.best_bid() is None
    assert book.best_ask() is None
    assert not book.is_crossed()
    assert book.levels() == ([], [])


def test_best_prices_read_from_the_right_ends() -> None:
    book = seeded()
    assert book.best_bid() == D("0.50")
    assert book.best_ask() == D("0.52")


def test_is_crossed_when_best_bid_reaches_best_ask() -> None:
    book = OrderBook()
    book.replace([lv("0.5", "1")], [lv("0.51", "1")])
    assert not book.is_crossed()
    book.replace([lv("0.51", "1")], [lv("0.51", "1")])
    assert book.is_crossed()
    book.replace([lv("0.6", "1")], [lv("0.51", "1")])
    assert book.is_crossed()
    book.replace([lv("0.6", "1")], [])
    assert not book.is_crossed()


def test_depth_returns_best_n_levels_per_side() -> None:
    book = seeded()
    assert book.depth("bid", 2) == levels(("0.50", "10"), ("0.49", "20"))
    assert book.depth("ask", 1) == levels(("0.52", "11"))
    assert book.depth("bid", 10) == book.bids_best_first()
    assert book.depth("ask", 0) == []
    assert book.depth("bid", -3) == []


def test_depth_rejects_unknown_side() -> None:
    with pytest.raises(ValueError, match="side"):
        seeded().depth("buy", 1)  # type: ignore[arg-type]


def test_counts_and_clear() -> None:
    book = seeded()
    assert (book.n_bids, book.n_asks, len(book)) == (3, 2, 5)
    book.clear()
    assert (book.n_bids, book.n_asks, len(book)) == (0, 0, 0)
    assert book.best_bid() is None


def test_equality_and_copy_are_independent() -> None:
    book = seeded()
    clone = book.copy()
    assert clone == book
    clone.apply_delta(levels(("0.50", "0")), [])
    assert clone != book
    assert book.best_bid() == D("0.50")
    assert book != "not a book"


def test_repr_mentions_best_prices() -> None:
    assert "best_bid=0.50" in repr(seeded())


# ------------------------------------------------------------------ errors


def test_invalid_level_message_is_built_from_fields() -> None:
    err = InvalidLevel("bid", D("NaN"), D("1"))
    assert isinstance(err, OrderBookError)
    assert isinstance(err, ValueError)
    assert str(err) == "invalid bid level price=NaN size=1: price is not finite"
    assert InvalidLevel("ask", D("0.5"), D("-1")).reason == "size is negative"
    assert InvalidLevel("ask", D("0"), D("1")).reason == "price is not positive"
    assert InvalidLevel("ask", D("0.5"), D("Infinity")).reason == "size is not finite"


def test_crossed_book_message_is_built_from_fields() -> None:
    err = CrossedBook(D("0.52"), D("0.51"))
    assert isinstance(err, OrderBookError)
    assert (err.best_bid, err.best_ask) == (D("0.52"), D("0.51"))
    assert str(err) == "crossed book: best_bid=0.52 >= best_ask=0.51"


# ------------------------------------------------------------------ import contract


def _imported_roots(path: Path) -> set[str]:
    roots: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    return roots


def test_orderbook_imports_only_stdlib_sortedcontainers_and_msgspec() -> None:
    files = sorted(ORDERBOOK_DIR.glob("*.py"))
    assert files
    for path in files:
        foreign = {
            root
            for root in _imported_roots(path)
            if root not in sys.stdlib_module_names and root not in ALLOWED_THIRD_PARTY
        }
        assert not foreign, f"{path.name} imports {sorted(foreign)}"
        # no clock either
        assert "time" not in _imported_roots(path), path.name
        assert "datetime" not in _imported_roots(path), path.name
