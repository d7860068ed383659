from __future__ import annotations

from decimal import Decimal
from random import Random

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from orderbook import (
    Book,
    BookDelta,
    BookSnapshot,
    BookSynchronizer,
    InvalidLevel,
    Level,
    OrderBook,
    PriceLevel,
)

ModelSide = dict[Decimal, Decimal]
ZERO = Decimal(0)
MARKET = "prop-market"
TOKEN = "1"
PROPERTY_SETTINGS = settings(max_examples=200, deadline=None)

# ------------------------------------------------------------------ strategies


def _grid(ticks: int, extra_zeros: int) -> Decimal:
    """A price on the 0.001 grid, spelled with ``extra_zeros`` trailing zeros (0.5 == 0.5000)."""
    return Decimal(ticks * 10**extra_zeros).scaleb(-3 - extra_zeros)


# Narrow grid band so that consecutive books share prices (sizes change, levels vanish).
near_grid_prices = st.builds(_grid, st.integers(490, 510), st.integers(0, 2))
wide_grid_prices = st.builds(_grid, st.integers(1, 999), st.integers(0, 2))
# Arbitrary exact decimals in (0, 1]: mantissa * 10**exponent (cheaper than st.decimals()),
# up to 27 places, so some need the Decimal keys beyond an int key's 18 places.
arbitrary_prices = st.builds(
    lambda m, e: Decimal(m).scaleb(e), st.integers(1, 10**9), st.integers(-27, -9)
)
prices = st.one_of(near_grid_prices, near_grid_prices, wide_grid_prices, arbitrary_prices)

# Sizes include 0 (absent) and equal values with different spellings (100 == 100.0).
spelled_sizes = st.builds(
    lambda n, k: Decimal(n * 10**k).scaleb(-k), st.integers(0, 5), st.integers(0, 2)
)
arbitrary_sizes = st.builds(
    lambda m, e: Decimal(m).scaleb(e), st.integers(0, 10**12), st.integers(-6, 2)
)
sizes = st.one_of(spelled_sizes, spelled_sizes, arbitrary_sizes)



def wire(value: Decimal) -> str:
    """A Decimal as plain wire text (``1E+2`` -> ``100``): what a JSON number decodes to."""
    return format(value, "f")


def wire_size(value: Decimal, as_int: bool) -> str | int:
    """Sizes also arrive as JSON integers (decoded to ``int``)."""
    return int(value) if as_int and value == value.to_integral_value() else wire(value)


price_levels = st.builds(lambda p, s, i: PriceLevel(wire(p), wire_size(s, i)),
                         prices, sizes, st.booleans())
sides = st.lists(price_levels, max_size=8)
timestamps = st.integers(0, 20)

bad_levels = st.one_of(
    st.builds(
        PriceLevel,
        price=st.sampled_from(["NaN", "sNaN", "Infinity", "-Infinity", "0", "-0.5", "1e9999",
                               "1E+0", "1.5", "2", "0.5e-1", "+0.5", ".5", None, True,
                               "0." + "1" * 31]),
        size=sizes.map(wire),
    ),
    st.builds(
        PriceLevel,
        price=prices.map(wire),
        size=st.sampled_from(["NaN", "Infinity", "-Infinity", "-1", "-0.000001", "-0", "1e3",
                              "1" * 31, None, False]),
    ),
)


def respell(value: Decimal, extra_zeros: int) -> Decimal:
    """The same finite value with ``extra_zeros`` more trailing zeros (0.5 -> 0.500)."""
    sign, digits, exponent = value.as_tuple()
    assert isinstance(exponent, int)
    return Decimal((sign, digits + (0,) * extra_zeros, exponent - extra_zeros))


def respelled(levels: list[PriceLevel], rnd: Random) -> list[PriceLevel]:
    """Equal levels, respelled and shuffled: the same book as far as values go."""
    out = [
        PriceLevel(wire(respell(Decimal(level.price), rnd.randint(0, 2))),
                   wire(respell(Decimal(level.size), rnd.randint(0, 2))))
        for level in levels
    ]
    rnd.shuffle(out)
    return out


# ------------------------------------------------------------------ model


def model_side(levels: list[PriceLevel]) -> ModelSide:
    """The dict-based model: last occurrence wins, size 0 means absent."""
    side: ModelSide = {}
    for level in levels:
        side[Decimal(level.price)] = Decimal(level.size)
    return {price: size for price, size in side.items() if size != 0}


def numeric(levels: list[Level]) -> list[tuple[Decimal, Decimal]]:
    """Output levels (wire text) as Decimals, for comparing with the model."""
    return [(Decimal(price), Decimal(size)) for price, size in levels]


def expected_changes(old: ModelSide, new: ModelSide,
                     descending: bool) -> list[tuple[Decimal, Decimal]]:
    changed = [
        (price, new.get(price, ZERO))
        for price in old.keys() | new.keys()
        if old.get(price, ZERO) != new.get(price, ZERO)
    ]
    return sorted(changed, key=lambda level: level[0], reverse=descending)


def assert_book_matches(book: OrderBook, bids: ModelSide, asks: ModelSide) -> None:
    assert numeric(book.bids_best_first()) == sorted(bids.items(), reverse=True)
    assert numeric(book.asks_best_first()) == sorted(asks.items())
    best_bid, best_ask = book.best_bid(), book.best_ask()
    assert (None if best_bid is None else Decimal(best_bid)) == (max(bids) if bids else None)
    assert (None if best_ask is None else Decimal(best_ask)) == (min(asks) if asks else None)
    assert len(book) == len(bids) + len(asks)


def as_text(book: OrderBook) -> tuple[list[tuple[str, str]], ...]:
    """The book as price/size text, spelling included."""
    return tuple([(str(p), str(s)) for p, s in side] for side in book.levels())


def assert_best_first(levels: list[Level], descending: bool) -> None:
    prices = [Decimal(price) for price, _ in levels]
    assert prices == sorted(prices, reverse=descending)
    assert len(set(prices)) == len(prices)


# ------------------------------------------------------------------ OrderBook vs model


@PROPERTY_SETTINGS
@given(st.lists(st.tuples(sides, sides), min_size=1, max_size=6))
def test_book_replace_agrees_with_dict_model(books: list[tuple[list[PriceLevel], ...]]) -> None:
    book = OrderBook()
    old_bids: ModelSide = {}
    old_asks: ModelSide = {}
    for bids, asks in books:
        new_bids, new_asks = model_side(bids), model_side(asks)
        got_bids, got_asks = book.replace(bids, asks)
        # (d) minimal (exactly the levels whose size differs) and best first
        assert numeric(got_bids) == expected_changes(old_bids, new_bids, descending=True)
        assert numeric(got_asks) == expected_changes(old_asks, new_asks, descending=False)
        # (e) the book agrees with the model at every step
        assert_book_matches(book, new_bids, new_asks)
        old_bids, old_asks = new_bids, new_asks


@PROPERTY_SETTINGS
@given(sides, sides, sides, st.randoms(use_true_random=False))
def test_book_respelled_shuffled_book_changes_only_real_changes(
    bids: list[PriceLevel], asks: list[PriceLevel], other: list[PriceLevel], rnd: Random
) -> None:
    book = OrderBook()
    book.replace(bids, asks)
    held = book.levels()
    # Keep only the last occurrence of each price so that shuffling keeps the meaning.
    unique_bids = [PriceLevel(p, s) for p, s in model_side(bids).items()]
    unique_asks = [PriceLevel(p, s) for p, s in model_side(asks).items()]
    assert book.replace(respelled(unique_bids, rnd), respelled(unique_asks, rnd)) == ([], [])
    assert book.levels() == held
    # Respelled unchanged levels next to real changes are still not reported.
    new_bids = respelled(unique_bids, rnd) + other
    got_bids, got_asks = book.replace(new_bids, respelled(unique_asks, rnd))
    assert got_asks == []
    assert numeric(got_bids) == expected_changes(model_side(bids), model_side(new_bids),
                                                 descending=True)


@PROPERTY_SETTINGS
@given(st.tuples(sides, sides), st.tuples(sides, sides))
def test_book_applying_changes_to_previous_state_gives_new_book(
    first: tuple[list[PriceLevel], list[PriceLevel]],
    second: tuple[list[PriceLevel], list[PriceLevel]],
) -> None:
    book = OrderBook()
    book.replace(*first)
    previous = book.copy()
    bids, asks = book.replace(*second)
    previous.apply_delta(bids, asks)
    assert previous == book
    assert as_text(previous) == as_text(book)


@PROPERTY_SETTINGS
@given(sides, sides, bad_levels, st.booleans(), st.integers(0, 12), sides, sides)
def test_book_invalid_level_never_mutates(
    held_bids: list[PriceLevel],
    held_asks: list[PriceLevel],
    bad: PriceLevel,
    on_bid_side: bool,
    position: int,
    bids: list[PriceLevel],
    asks: list[PriceLevel],
) -> None:
    book = OrderBook()
    book.replace(held_bids, held_asks)
    before = book.levels()
    target = bids if on_bid_side else asks
    target.insert(min(position, len(target)), bad)
    try:
        book.replace(bids, asks)
    except InvalidLevel as err:
        assert err.side == ("bid" if on_bid_side else "ask")
    else:
        raise AssertionError("invalid level accepted")
    assert book.levels() == before


# ------------------------------------------------------------------ synchronizer machine


class SynchronizerMachine(RuleBasedStateMachine):
    """Random REST seeds and WS books (with random, often stale, timestamps)."""

    def __init__(self) -> None:
        super().__init__()
        self.sync = BookSynchronizer(MARKET, TOKEN)
        self.records: list[Book | BookDelta] = []
        self.replica = OrderBook()  # a consumer applying every record as it comes
        # A consumer that keys levels by the price *text* (e.g. a JSON-only client).
        self.text_replica: tuple[dict[str, str], dict[str, str]] = ({}, {})
        self.model: tuple[ModelSide, ModelSide] = ({}, {})  # last accepted full book
        self.model_last_ts: int | None = None
        self.recv_ts = 0

    def _snapshot(
        self, bids: list[PriceLevel], asks: list[PriceLevel], ts: int | None
    ) -> BookSnapshot:
        self.recv_ts += 1
        return BookSnapshot(MARKET, TOKEN, bids, asks, ts, self.recv_ts)

    def _consume(self, record: Book | BookDelta | None) -> None:
        if record is None:
            return
        assert record.seq == len(self.records) + 1
        assert_best_first(record.bids, descending=True)
        assert_best_first(record.asks, descending=False)
        assert record.best_bid == self.sync.book.best_bid()
        assert record.best_ask == self.sync.book.best_ask()
        if isinstance(record, Book):
            self.replica.clear()
        # (a) applying each emitted record to the previous state gives the new book
        self.replica.apply_delta(record.bids, record.asks)
        assert self.replica == self.sync.book
        self._apply_text(record)
        self.records.append(record)

    def _apply_text(self, record: Book | BookDelta) -> None:
        for side, levels in zip(self.text_replica, (record.bids, record.asks), strict=True):
            if isinstance(record, Book):
                side.clear()
            for price, size in levels:
                if Decimal(size):
                    side[price] = str(size)
                else:
                    del side[price]  # a removal names a level the consumer holds
        held_bids, held_asks = as_text(self.sync.book)
        assert self.text_replica == (dict(held_bids), dict(held_asks))

    @rule(bids=sides, asks=sides, ts=timestamps)
    def ws_update(self, bids: list[PriceLevel], asks: list[PriceLevel], ts: int) -> None:
        previous = self.model
        was_seeded = self.sync.seeded
        record = self.sync.on_update(self._snapshot(bids, asks, ts))
        if self.model_last_ts is not None and ts < self.model_last_ts:
            assert record is None  # (c) never a stale overwrite
            return
        self.model = (model_side(bids), model_side(asks))
        self.model_last_ts = ts
        if not was_seeded:
            assert isinstance(record, Book)
        elif self.model == previous:
            assert record is None
        else:
            assert isinstance(record, BookDelta)
            # (d) minimal: every level really changed, and every change is there
            assert numeric(record.bids) == expected_changes(previous[0], self.model[0], True)
            assert numeric(record.asks) == expected_changes(previous[1], self.model[1], False)
        if record is not None and self.sync.book.is_crossed():
            assert (self.sync.needs_snapshot, self.sync.snapshot_reason) == (True, "crossed")
        self._consume(record)

    @precondition(lambda self: self.model_last_ts is not None)
    @rule(rnd=st.randoms(use_true_random=False))
    def ws_repeat_respelled(self, rnd: Random) -> None:
        bids = [PriceLevel(p, s) for p, s in self.model[0].items()]
        asks = [PriceLevel(p, s) for p, s in self.model[1].items()]
        ts = self.model_last_ts
        record = self.sync.on_update(self._snapshot(respelled(bids, rnd), respelled(asks, rnd), ts))
        assert record is None  # same book at the same exchange time: suppressed, not stale

    @precondition(lambda self: self.model_last_ts is not None)
    @rule(rnd=st.randoms(use_true_random=False), extra=sides, ts_step=st.integers(0, 2))
    def ws_respelled_update(self, rnd: Random, extra: list[PriceLevel], ts_step: int) -> None:
        """The held book respelled and shuffled, some sizes changed, some levels added."""
        assert self.model_last_ts is not None
        bids = [PriceLevel(wire(p), wire(s + rnd.choice([0, 0, 1, -s])))
                for p, s in self.model[0].items()]
        asks = [PriceLevel(wire(p), wire(s + rnd.choice([0, 0, 1, -s])))
                for p, s in self.model[1].items()]
        ts = self.model_last_ts + ts_step
        self.ws_update(respelled(bids, rnd) + extra, respelled(asks, rnd), ts)

    @rule(bids=sides, asks=sides)
    def rest_snapshot(self, bids: list[PriceLevel], asks: list[PriceLevel]) -> None:
        record = self.sync.on_rest_snapshot(self._snapshot(bids, asks, None))
        self.model = (model_side(bids), model_side(asks))
        self.model_last_ts = None  # a REST seed restarts the stale check
        assert isinstance(record, Book)
        assert record.ts == record.recv_ts == self.recv_ts
        assert not self.sync.needs_snapshot
        self._consume(record)

    @rule(bids=sides, asks=sides, bad=bad_levels, ts=timestamps, on_bid_side=st.booleans())
    def invalid_update(
        self,
        bids: list[PriceLevel],
        asks: list[PriceLevel],
        bad: PriceLevel,
        ts: int,
        on_bid_side: bool,
    ) -> None:
        (bids if on_bid_side else asks).append(bad)
        state = (self.sync.book.copy(), self.sync.seq, self.sync.last_ts, self.sync.stats.invalid)
        stale = self.model_last_ts is not None and ts < self.model_last_ts
        try:
            record = self.sync.on_update(self._snapshot(bids, asks, ts))
        except InvalidLevel:
            assert not stale
            assert self.sync.stats.invalid == state[3] + 1
        else:
            assert stale and record is None  # a stale book is dropped before validation
        assert (self.sync.book, self.sync.seq, self.sync.last_ts) == state[:3]

    @precondition(lambda self: self.sync.seeded)
    @rule(reason=st.sampled_from(["resubscribe", "stale", "audit"]))
    def request_snapshot(self, reason: str) -> None:
        self.sync.request_snapshot(reason)
        assert (self.sync.needs_snapshot, self.sync.snapshot_reason) == (True, reason)

    @rule()
    def reset_clock(self) -> None:
        self.sync.reset_clock()  # a (re)subscribe
        self.model_last_ts = None

    @invariant()
    def held_book_is_last_accepted_full_book(self) -> None:
        # (c) + (e)
        assert_book_matches(self.sync.book, *self.model)
        assert self.sync.last_ts == self.model_last_ts

    @invariant()
    def full_replay_reproduces_book(self) -> None:
        # (b)
        assert [r.seq for r in self.records] == list(range(1, self.sync.seq + 1))
        replayed = OrderBook()
        for record in self.records:
            if isinstance(record, Book):
                replayed.clear()
            replayed.apply_delta(record.bids, record.asks)
        assert replayed == self.sync.book
        # Even the spelling of every price and size survives the replay.
        assert as_text(replayed) == as_text(self.sync.book)
        assert not self.records or isinstance(self.records[0], Book)


SynchronizerMachine.TestCase.settings = settings(
    max_examples=50, stateful_step_count=20, deadline=None
)
test_synchronizer_machine = SynchronizerMachine.TestCase


# ------------------------------------------------------------------ raw sides


def raw_side(levels: list[PriceLevel], as_numbers: bool) -> msgspec.Raw:
    """One side as the venue's JSON: numbers as JSON numbers or as numeric strings."""
    def number(value: object) -> str:
        return str(value) if as_numbers else f'"{value}"'
    body = ",".join(f'{{"price":{number(lv.price)},"size":{number(lv.size)},"side":"BUY"}}'
                    for lv in levels)
    return msgspec.Raw(f"[{body}]".encode())


@PROPERTY_SETTINGS
@given(st.lists(st.tuples(sides, sides, st.booleans()), min_size=1, max_size=6))
def test_book_raw_sides_agree_with_decoded_sides(
    books: list[tuple[list[PriceLevel], list[PriceLevel], bool]],
) -> None:
    from_raw, decoded = OrderBook(), OrderBook()
    for bids, asks, as_numbers in books:
        raw_bids, raw_asks = raw_side(bids, as_numbers), raw_side(asks, as_numbers)
        changes = from_raw.replace(raw_bids, raw_asks)
        expected = decoded.replace(bids, asks)
        assert (numeric(changes[0]), numeric(changes[1])) == (numeric(expected[0]),
                                                              numeric(expected[1]))
        assert from_raw == decoded
        assert numeric(from_raw.bids_best_first()) == numeric(decoded.bids_best_first())
        # The very same bytes again: skipped before decoding, nothing changed.
        assert from_raw.replace(raw_bids, raw_asks) == ([], [])
        assert from_raw == decoded
