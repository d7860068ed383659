"""The C fast path (orderbook/_cside.c) against the pure-Python path it stands in for.

Two books get the same sequence of raw sides, one with the C path and one without; their
changes, held lists and errors must be identical after every update. The sides mix what
the C path decides (plain numbers and numeric strings, extra members, whitespace) with
everything it must leave to Python (exponents, signs, size 0, duplicates, other orders,
escapes, nested values, long decimals ...), so both of its answers are exercised.
"""

from __future__ import annotations

import gc
import sys
import tracemalloc

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orderbook import book as book_module
from orderbook.book import OrderBook
from orderbook.errors import InvalidLevel

cside = pytest.importorskip("orderbook._cside", reason="the C fast path is not built here")

PRICES = [f"0.{i:02d}" for i in range(1, 100)] + ["1", "0.5", "0.515", "0.5150"]


def _number(text: str, style: int) -> str:
    """The JSON spelling of a number: bare, or a string."""
    return f'"{text}"' if style else text


# A level's price and size as JSON text, with spellings the C path takes and ones it leaves.
plain_sizes = st.one_of(
    st.integers(1, 10**6).map(str),
    st.builds(lambda a, b: f"{a}.{b}", st.integers(0, 10**5), st.integers(0, 10**6)),
    st.sampled_from(["100", "100.0", "100.00", "4438", "1", "1", "0.000000000000000001"]),
)
odd_sizes = st.sampled_from([
    "0", "0.0", "1e2", "1E2", "-5", "1.", ".5", "01", "NaN", "1.0000000000000000001", "false",
    "123456789012345678901", "1234567890123456789", "99999999999999999999.5",
    "1234567890123456789012345.123456", "null", "true", "{}", "[1]", '"1\\u0030"',
])
sizes = st.one_of(
    st.tuples(plain_sizes, st.integers(0, 1)).map(lambda t: _number(*t)),
    st.tuples(plain_sizes, st.integers(0, 1)).map(lambda t: _number(*t)),
    odd_sizes.map(lambda s: s if s[0] in '"{[nt' else s),
    odd_sizes.map(lambda s: f'"{s}"' if s[0] not in '"{[nt' else s),
)
odd_prices = st.sampled_from([
    "0", "1.01", "2", "0.5000000000000000001", "0.1234567890123456789", "-0.5", "5e-1",
    "00.5", "0.50", "1.0", "null",
])
prices = st.one_of(
    st.tuples(st.sampled_from(PRICES), st.integers(0, 1)).map(lambda t: _number(*t)),
    st.tuples(st.sampled_from(PRICES), st.integers(0, 1)).map(lambda t: _number(*t)),
    st.tuples(st.sampled_from(PRICES), st.integers(0, 1)).map(lambda t: _number(*t)),
    odd_prices.map(lambda s: s if s == "null" else s),
    odd_prices.map(lambda s: f'"{s}"'),
)
extras = st.lists(st.sampled_from([
    '"side":"BUY"', '"side":"buy"', '"side":"SELL"', '"x":1.5e3', '"x":null', '"x":false',
    '"note":"caf\u00e9"', '"x":"a\\"b"', '"x":{"y":1}', '"x":[]', '"size":"7"', '"price":"0.3"',
    '"pr\\u0069ce":"0.4"', '"x":-2',
    # malformed (the feed's frames never are: msgspec checks the whole frame first)
    '"x":1-2', '"x":01', '"x":-', '"x":1.', '"x":1e', '"x":1.2.3', '"x":"a\nb"', '"a\x01":1',
    '"x":tru', '"x":nul',
]), max_size=2)


@st.composite
def sides(draw: st.DrawFn, descending: bool) -> bytes:
    """One side's raw JSON: mostly best first with distinct prices, sometimes not."""
    n = draw(st.integers(0, 12))
    chosen = draw(st.lists(st.sampled_from(PRICES[:99]), min_size=n, max_size=n, unique=True))
    chosen.sort(key=float, reverse=descending)
    mode = draw(st.integers(0, 9))
    if mode == 0:
        chosen = draw(st.permutations(chosen))
    elif mode == 1 and chosen:
        chosen.append(draw(st.sampled_from(chosen)))  # a repeated price
    ws = draw(st.sampled_from(["", " ", "\n "]))
    levels = []
    for price in chosen:
        odd = draw(st.integers(0, 7)) == 0
        p = draw(prices) if odd else _number(price, draw(st.integers(0, 1)))
        members = [f'"price":{ws}{p}', f'"size":{ws}{draw(sizes)}'] + draw(extras)
        if draw(st.booleans()):
            members.reverse()
        levels.append("{" + ws + f",{ws}".join(members) + ws + "}")
    text = "[" + ws + f",{ws}".join(levels) + ws + "]"
    if draw(st.integers(0, 30)) == 0:
        text = draw(st.sampled_from(["null", "{}", "[1]", "[[]]", '["a"]', "[{}]"]))
    return text.encode()


def _apply(book: OrderBook, bids: bytes, asks: bytes, fast: bool) -> object:
    plan = book_module.C_PLAN
    try:
        if not fast:
            book_module.C_PLAN = None
        return book.replace(msgspec.Raw(bids), msgspec.Raw(asks))
    except InvalidLevel as exc:
        return ("invalid", str(exc))
    finally:
        book_module.C_PLAN = plan


def _state(book: OrderBook) -> object:
    return [(side.levels, side.keys, side.sizes) for side in (book._bids, book._asks)]


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(sides(True), sides(False)), min_size=1, max_size=12))
def test_c_path_equals_the_python_path(updates: list[tuple[bytes, bytes]]) -> None:
    """Every change, held list and error is the same with and without the C path."""
    assert book_module.C_PLAN is cside.plan
    fast, pure = OrderBook(), OrderBook()
    for bids, asks in updates:
        got = _apply(fast, bids, asks, fast=True)
        want = _apply(pure, bids, asks, fast=False)
        assert got == want, (bids, asks)
        assert _state(fast) == _state(pure), (bids, asks)
        for side in (fast._bids, fast._asks):  # the held texts are the texts
            assert all(type(t) is str for lv in side.levels for t in lv)


def test_c_path_decides_the_venue_shapes() -> None:
    """The venue's shapes (the simulator's quirks) are decided in C, not left to Python."""
    held = OrderBook()
    held.replace(msgspec.Raw(b'[{"price":0.5,"size":100,"side":"BUY"}]'), msgspec.Raw(b"[]"))
    side = held._bids
    for raw in (b'[{"price":"0.5","size":"100"}]', b'[{"size":100.0,"price":0.50}]',
                b'[{"price":0.5,"size":"7.25","side":"buy"},{"price":0.49,"size":3}]',
                b"[ ]", b'[ {"price":0.51 , "size":1} ,\n {"price":0.5,"size":1} ]'):
        got = cside.plan(msgspec.Raw(raw), side.levels, side.keys, side.sizes, True)
        assert got is not None, raw
    assert cside.plan(msgspec.Raw(b'[{"price":"0.5","size":"100"}]'), side.levels, side.keys,
                      side.sizes, True) == ()
    bids, keys, sizes, changes = cside.plan(
        msgspec.Raw(b'[{"price":0.51,"size":"2.50"},{"price":"0.50","size":100.000}]'),
        side.levels, side.keys, side.sizes, True)
    assert bids == [("0.51", "2.50"), ("0.5", "100")]  # held texts kept for an equal value
    assert changes == [("0.51", "2.50")]
    assert keys == [51 * 10**16, 5 * 10**17] and sizes == [25 * 10**17, 100 * 10**18]


@pytest.mark.parametrize("raw", [
    b'[{"price":0.5,"size":0}]', b'[{"price":0.5,"size":1e2}]', b'[{"price":0.5,"size":-1}]',
    b'[{"price":0.4,"size":1},{"price":0.5,"size":1}]', b'[{"price":0.5,"size":1,"size":2}]',
    b'[{"price":0.5,"size":"1\\u0030"}]', b'[{"price":0.5,"size":1,"x":{}}]',
    b'[{"price":0.5000000000000000001,"size":1}]', b'[{"price":1.5,"size":1}]',
    b'[{"price":0.5,"size":1234567890123456789}]', b'[{"price":0.5}]', b"{}", b"[1]",
    b'[{"price":0.5,"size":1,"x":1-2}]', b'[{"price":0.5,"size":1,"x":01}]',
    b'[{"price":0.5,"size":1,"x":1.e5}]', b'[{"price":0.5,"size":1,"x":"a\nb"}]',
    b'[{"price":0.5,"size":1,"a\x01":1}]', b'[{"price":0.5,"size":true}]',
])
def test_c_path_leaves_the_rest_to_python(raw: bytes) -> None:
    """What the C path cannot prove the same is answered by the Python path (None)."""
    assert cside.plan(msgspec.Raw(raw), [], [], [], True) is None


def test_c_path_leaks_no_references() -> None:
    """Held objects keep their reference counts; repeated plans do not grow memory."""
    book = OrderBook()
    book.replace(msgspec.Raw(b'[{"price":0.5,"size":100},{"price":0.4,"size":5}]'),
                 msgspec.Raw(b"[]"))
    side = book._bids
    held = side.levels[0]
    raws = [msgspec.Raw(r) for r in (
        b'[{"price":0.5,"size":101},{"price":0.4,"size":5}]',
        b'[{"price":0.6,"size":1},{"price":0.4,"size":5.0}]',
        b'[{"price":0.5,"size":123456789012345678.5}]',
        b'[{"price":0.5,"size":"100.0"},{"price":0.4,"size":5}]',
        b'[{"price":0.5,"size":100},{"price":0.4,"size":0}]')]
    before = sys.getrefcount(held), sys.getrefcount(side.keys[0]), sys.getrefcount(side.sizes[0])

    def run(times: int) -> None:
        for _ in range(times):
            for raw in raws:
                cside.plan(raw, side.levels, side.keys, side.sizes, True)

    run(100)
    gc.collect()
    tracemalloc.start()
    try:
        first = tracemalloc.get_traced_memory()[0]
        run(5000)
        gc.collect()
        grown = tracemalloc.get_traced_memory()[0] - first
    finally:
        tracemalloc.stop()
    assert grown < 64 * 1024, grown  # 25,000 plans; a leaked tuple each would be > 1 MB
    after = sys.getrefcount(held), sys.getrefcount(side.keys[0]), sys.getrefcount(side.sizes[0])
    assert after == before
