from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

import orderbook
from orderbook import CrossedBook, InvalidLevel, OrderBook, OrderBookError, PriceLevel
from orderbook.book import parse_number

ORDERBOOK_DIR = Path(orderbook.__file__).parent
ALLOWED_THIRD_PARTY = {"sortedcontainers", "msgspec", "orderbook"}


def lv(price: str, size: str) -> PriceLevel:
    return PriceLevel(price=price, size=size)


def levels(*pairs: tuple[str, str]) -> list[tuple[str, str]]:
    return list(pairs)


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
    assert book.replace([PriceLevel("0.5", 100)], []) == ([], [])


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
    assert bids == levels(("0.5", "7"))  # the held spelling
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
    assert "0.40" not in dict(book.bids_best_first())


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
    # 28 places: beyond an int key's 18 places (a Decimal key).
    long = "0.1000000000000000055511151231"
    book.replace([lv("0.515", "123.456789")], [lv(long, "1"), lv("0.2", "1")])
    assert book.best_bid() == "0.515"
    assert book.bids_best_first()[0][1] == "123.456789"
    assert book.best_ask() == long
    _, asks = book.replace([], [lv("0.10000000000000000555111512310", "2"), lv("0.2", "1")])
    assert asks == [(long, "2")]  # equal numbers, the held spelling


def test_replace_returns_fresh_lists() -> None:
    book = seeded()
    first = book.replace([], [])
    first[0].append(("9", "9"))
    assert book.replace([], []) == ([], [])


@pytest.mark.parametrize(
    ("price", "size"),
    [
        ("NaN", "1"),
        ("sNaN", "1"),
        ("Infinity", "1"),
        ("-Infinity", "1"),
        ("0", "1"),
        ("0.000", "1"),
        ("-0.5", "1"),
        ("1.001", "1"),
        ("2", "1"),
        ("1e9999", "1"),
        ("5E-1", "1"),
        ("0.5", "1e3"),
        ("+0.5", "1"),
        (" 0.5", "1"),
        ("0.5 ", "1"),
        (".5", "1"),
        ("5.", "1"),
        ("", "1"),
        ("0x1", "1"),
        ("0.٥", "1"),
        ("0.1234567890123456789012345678901", "1"),
        ("0.5", "1234567890123456789012345678901"),
        ("0.5", "NaN"),
        ("0.5", "Infinity"),
        ("0.5", "-1"),
        ("0.5", "-0"),
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
    assert (err.price, err.size) == (price, size)


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


def test_replace_thirty_significant_digits_and_price_one_are_valid() -> None:
    book = OrderBook()
    bids, _ = book.replace([lv("1", "1"), lv("0.123456789012345678901234567890", "1"),
                            lv("0.000000000000000000000000000000000001", "1")], [])
    assert [p for p, _ in bids] == ["1", "0.123456789012345678901234567890",
                                    "0.000000000000000000000000000000000001"]


@pytest.mark.parametrize("value", [None, True, False, 0.5, {"x": 1}, [1]])
def test_replace_non_numeric_values_are_invalid(value: object) -> None:
    book = OrderBook()
    book.replace([lv("0.5", "1")], [])
    with pytest.raises(InvalidLevel):
        book.replace([PriceLevel("0.5", value)], [])
    with pytest.raises(InvalidLevel):
        book.replace([PriceLevel(value, "1")], [])
    assert book.levels() == ([("0.5", "1")], [])


def test_replace_json_integers_are_their_text() -> None:
    book = OrderBook()
    bids, _ = book.replace([PriceLevel(1, 250), PriceLevel("0.5", 7)], [])
    assert bids == [("1", "250"), ("0.5", "7")]


def test_replace_raw_sides_skip_identical_bytes_and_decode_changed_ones() -> None:
    import msgspec

    book = OrderBook()
    bids = msgspec.Raw(b'[{"price":0.5,"size":10,"side":"BUY"},{"price":"0.4","size":2.5}]')
    asks = msgspec.Raw(b'[{"price":0.6,"size":1}]')
    assert book.replace(bids, asks) == ([("0.5", "10"), ("0.4", "2.5")], [("0.6", "1")])
    assert book.replace(bids, asks) == ([], [])
    same = msgspec.Raw(b'[{"price":"0.5","size":"10"},{"price":0.4,"size":"2.50"}]')
    assert book.replace(same, asks) == ([], [])
    assert book.replace(msgspec.Raw(b'[{"price":0.5,"size":10}]'), asks) == (
        [("0.4", "0")], [])
    with pytest.raises(InvalidLevel):
        book.replace(msgspec.Raw(b'[{"price":0.5}]'), asks)
    with pytest.raises(InvalidLevel):
        book.replace(msgspec.Raw(b'[{"price":1e9999,"size":1}]'), asks)
    assert book.levels() == ([("0.5", "10")], [("0.6", "1")])


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
    assert book.best_bid() == "0.50"
    assert book.best_ask() == "0.52"


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
    assert book.best_bid() == "0.50"
    assert book != "not a book"


def test_repr_mentions_best_prices() -> None:
    assert "best_bid=0.50" in repr(seeded())


# ------------------------------------------------------------------ errors


def test_invalid_level_message_is_built_from_fields() -> None:
    err = InvalidLevel("bid", "NaN", "1", "not a plain decimal number")
    assert isinstance(err, OrderBookError)
    assert isinstance(err, ValueError)
    assert str(err) == "invalid bid level price='NaN' size='1': not a plain decimal number"
    with pytest.raises(InvalidLevel) as info:
        OrderBook().replace([lv("1e9999", "1")], [])
    assert "exponent" in info.value.reason
    with pytest.raises(InvalidLevel) as info:
        OrderBook().replace([lv("1.5", "1")], [])
    assert info.value.reason == "price is not in (0, 1]"


def test_crossed_book_message_is_built_from_fields() -> None:
    err = CrossedBook("0.52", "0.51")
    assert isinstance(err, OrderBookError)
    assert (err.best_bid, err.best_ask) == ("0.52", "0.51")
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


def test_replace_values_equal_to_cached_ints_are_still_refused() -> None:
    book = OrderBook()
    book.replace([PriceLevel(1, 1)], [])  # caches the int 1 as a price and a size
    for value in (True, 1.0):
        with pytest.raises(InvalidLevel):
            book.replace([PriceLevel(value, 2)], [])
        with pytest.raises(InvalidLevel):
            book.replace([PriceLevel("0.5", value)], [])
        with pytest.raises(InvalidLevel):
            book.replace([PriceLevel(1, 1), PriceLevel("0.5", value)], [])
    assert book.levels() == ([("1", "1")], [])


def test_levels_decoder_keeps_the_wire_text_of_numbers() -> None:
    from orderbook.book import LEVELS_DECODER

    raw = b'[{"price":0.50,"size":100.0},{"price":"0.4","size":7},{"price":1E-3,"size":0.000}]'
    assert [(lv.price, lv.size) for lv in LEVELS_DECODER.decode(raw)] == [
        ("0.50", "100.0"), ("0.4", 7), ("1E-3", "0.000")]


def test_size_cache_stays_within_its_bound() -> None:
    from orderbook import book

    for n in range(book.SIZE_CACHE_MAX + 100):
        assert book.size_entry(f"{n}.5") == ((2 * n + 1) * 10**17 * 5, f"{n}.5")
        assert len(book._SIZES) <= book.SIZE_CACHE_MAX


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (4438, (4438 * 10**18, "4438")),
        (0, (0, "0")),
        (10**30 - 1, ((10**30 - 1) * 10**18, "9" * 30)),
        (10**30, "more than 30 significant digits"),
        (-1, "not a plain decimal number (no sign, exponent, NaN or Infinity)"),
        (True, "not a number: bool"),
        ("0" * 40 + "1.5", (15 * 10**17, "0" * 40 + "1.5")),
        ("1." + "1" * 30, "more than 30 significant digits"),
        ("0.5.1", "not a plain decimal number (no sign, exponent, NaN or Infinity)"),
        ("1..2", "not a plain decimal number (no sign, exponent, NaN or Infinity)"),
    ],
)
def test_parse_number_ints_and_dots(value: object, expected: object) -> None:
    # An int takes a shortcut that skips its text; it must agree with the text path.
    assert parse_number(value) == expected
    if type(value) is int and value >= 0:
        assert parse_number(str(value)) == expected


@pytest.mark.parametrize("before", [b'[{"price":0.5,"size":1}]', b'[{"price":"0.5","size":"1"}]',
                                    b'[{"price":0.5,"size":2}]'])
@pytest.mark.parametrize("boolean", [b'[{"price":0.5,"size":true}]',
                                     b'[{"price":0.5,"size":1},{"price":0.4,"size":false}]'])
@pytest.mark.parametrize("raw", [True, False], ids=["raw", "decoded"])
def test_a_boolean_is_refused_whatever_came_before(before: bytes, boolean: bytes,
                                                   raw: bool) -> None:
    """``true`` equals ``1`` to a Struct comparison with the last input; it is refused anyway,
    so whether a book is invalid does not depend on the book before it."""
    import msgspec

    from orderbook.book import LEVELS_DECODER

    def side(text: bytes) -> msgspec.Raw | list[PriceLevel]:
        return msgspec.Raw(text) if raw else LEVELS_DECODER.decode(text)

    book = OrderBook()
    book.replace(side(before), [])
    held = book.levels()
    with pytest.raises(InvalidLevel, match="bool"):
        book.replace(side(boolean), [])
    assert book.levels() == held


def test_the_c_fast_path_is_built_where_a_compiler_is() -> None:
    """The extension is optional at install; where a compiler exists it must have built (a
    broken _cside.c would otherwise only skip its tests and cost CPU silently)."""
    import os
    import shutil
    import sysconfig

    from orderbook import book

    compiler = (sysconfig.get_config_var("CC") or "cc").split()[0]
    if shutil.which(compiler) is None:
        pytest.skip(f"no C compiler ({compiler}): the pure-Python path runs")
    if os.environ.get(book.PURE_ENV, "") not in ("", "0"):
        pytest.skip(f"{book.PURE_ENV} is set")
    assert book.C_PLAN is not None, "orderbook/_cside.c did not build (pip install -e . -v)"
