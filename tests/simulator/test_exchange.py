"""The simulator's pure exchange model and its wire payload builders."""

from __future__ import annotations

import random
from decimal import Decimal

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamer.simulator import (
    BookUpdate,
    Exchange,
    Level,
    MarketCreated,
    MarketResolved,
    PriceUpdate,
    SimulatorConfig,
    StepEvent,
)
from streamer.simulator.rest import JSON_ENCODER, Quirks, iso_ms, orderbook_payload
from streamer.simulator.ws import event_frame, malformed_frame

START_MS = 1_767_225_600_000


class _WireLevel(msgspec.Struct):
    price: Decimal
    size: Decimal


class _WireBook(msgspec.Struct):
    bids: list[_WireLevel]
    asks: list[_WireLevel]
    adjustedMidpoint: Decimal
D = Decimal


def run_steps(exchange: Exchange, n: int, start: int = START_MS) -> list[StepEvent]:
    events: list[StepEvent] = []
    for i in range(n):
        events.extend(exchange.step(start + 10 * i))
    return events


def assert_book_sane(exchange: Exchange, slug: str, levels: int) -> None:
    bids, asks = exchange.book(slug)
    assert len(bids) == levels and len(asks) == levels
    assert [p for p, _ in bids] == sorted((p for p, _ in bids), reverse=True)
    assert [p for p, _ in asks] == sorted(p for p, _ in asks)
    assert bids[0][0] < asks[0][0], "crossed or locked book"
    for price, size in bids + asks:
        assert D(0) < price < D(1)
        assert price * 1000 == (price * 1000).to_integral_value(), f"{price} off the grid"
        assert size > 0 and size.as_tuple().exponent >= -2  # type: ignore[operator]


def test_exchange_same_seed_same_markets_and_steps() -> None:
    config = SimulatorConfig(seed=42)
    a, b = Exchange(config, start_ms=START_MS), Exchange(config, start_ms=START_MS)
    assert a.markets() == b.markets()
    assert run_steps(a, 300) == run_steps(b, 300)


def test_exchange_different_seed_differs() -> None:
    a = Exchange(SimulatorConfig(seed=1), start_ms=START_MS)
    b = Exchange(SimulatorConfig(seed=2), start_ms=START_MS)
    assert a.markets() != b.markets()


def test_exchange_market_counts_and_kinds() -> None:
    exchange = Exchange(SimulatorConfig(markets=5, groups=2, amm_markets=3), start_ms=START_MS)
    top = exchange.active_markets()
    assert len(top) == 10
    groups = [m for m in top if m.market_type == "group"]
    assert len(groups) == 2 and all(len(g.children) == 3 for g in groups)
    assert all(c.adapter is not None and c.group_slug == g.slug for g in groups for c in g.children)
    assert sum(m.trade_type == "amm" for m in top) == 3
    assert len(exchange.book_slugs()) == 5 + 2 * 3
    assert len(exchange.amm_addresses()) == 3
    assert len({m.slug for m in top}) == 10


def test_exchange_token_ids_are_big_distinct_decimal_strings() -> None:
    exchange = Exchange(SimulatorConfig(markets=20), start_ms=START_MS)
    tokens = []
    for slug in exchange.book_slugs():
        market = exchange.market(slug)
        assert market is not None and market.yes_token and market.no_token
        tokens += [market.yes_token, market.no_token]
    assert all(t.isdigit() and 2**64 < int(t) < 2**256 for t in tokens)
    assert len(set(tokens)) == len(tokens)


def test_exchange_books_never_crossed_on_grid_after_many_steps() -> None:
    config = SimulatorConfig(seed=3, markets=4, groups=1, levels=15)
    exchange = Exchange(config, start_ms=START_MS)
    for i in range(3000):
        for event in exchange.step(START_MS + i):
            if isinstance(event, BookUpdate):
                assert_book_sane(exchange, event.slug, 15)
    for slug in exchange.book_slugs():
        assert_book_sane(exchange, slug, 15)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32), levels=st.integers(1, 60))
def test_exchange_books_sane_for_any_seed(seed: int, levels: int) -> None:
    exchange = Exchange(SimulatorConfig(seed=seed, markets=2, groups=0, levels=levels))
    run_steps(exchange, 300)
    for slug in exchange.book_slugs():
        assert_book_sane(exchange, slug, levels)


def test_exchange_step_emits_identical_books_sometimes() -> None:
    exchange = Exchange(SimulatorConfig(seed=5, markets=1, groups=0, amm_markets=0))
    books = [e.book for e in run_steps(exchange, 400) if isinstance(e, BookUpdate)]
    same = sum(
        (a.bids, a.asks) == (b.bids, b.asks) for a, b in zip(books, books[1:], strict=False)
    )
    assert 0 < same < len(books) // 3


def test_exchange_timestamps_never_go_backwards_per_market() -> None:
    exchange = Exchange(SimulatorConfig(seed=9, markets=3, groups=0))
    rng = random.Random(0)
    last: dict[str, int] = {}
    for _ in range(500):
        for event in exchange.step(START_MS + rng.randint(-1000, 1000)):
            stamp = event.book.timestamp_ms if isinstance(event, BookUpdate) else event.timestamp_ms
            assert stamp is not None and stamp >= last.get(event.slug, 0)
            last[event.slug] = stamp


def test_exchange_amm_price_updates_sum_to_one() -> None:
    exchange = Exchange(SimulatorConfig(markets=0, groups=0, amm_markets=2))
    updates = [e for e in run_steps(exchange, 50) if isinstance(e, PriceUpdate)]
    assert len(updates) == 50
    assert all(u.yes_price + u.no_price == 1 for u in updates)
    blocks = [u.block_number for u in updates if u.slug == updates[0].slug]
    assert blocks == sorted(blocks)


def test_exchange_pause_stops_steps_and_resume_restarts() -> None:
    exchange = Exchange(SimulatorConfig())
    exchange.pause()
    assert exchange.step(START_MS) == [] and exchange.lifecycle_step(START_MS) == []
    exchange.resume()
    assert len(exchange.step(START_MS)) == 1


def test_exchange_set_book_is_silent_and_exact() -> None:
    exchange = Exchange(SimulatorConfig(markets=1, groups=0, amm_markets=0))
    slug = exchange.book_slugs()[0]
    exchange.set_book(slug, [(D("0.51"), D("100")), (D("0.5"), D("2.5"))], [(D("0.52"), D("7"))])
    assert exchange.book(slug) == ([(D("0.51"), D(100)), (D("0.5"), D("2.5"))], [(D("0.52"), D(7))])
    assert exchange.book_view(slug).adjusted_midpoint == D("0.515")


@pytest.mark.parametrize(
    ("bids", "asks"),
    [
        ([(D("0.5105"), D(1))], []),  # off the grid
        ([(D("1"), D(1))], []),  # outside (0, 1)
        ([(D("0.5"), D(0))], []),  # size zero
        ([(D("0.6"), D(1))], [(D("0.6"), D(1))]),  # locked
        ([(D("0.6"), D(1))], [(D("0.5"), D(1))]),  # crossed
        ([(D("NaN"), D(1))], []),
    ],
)
def test_exchange_set_book_rejects_bad_books(bids: list[Level], asks: list[Level]) -> None:
    exchange = Exchange(SimulatorConfig(markets=1, groups=0, amm_markets=0))
    with pytest.raises(ValueError):
        exchange.set_book(exchange.book_slugs()[0], bids, asks)


def test_exchange_lifecycle_creates_and_resolves_oldest() -> None:
    exchange = Exchange(SimulatorConfig(markets=3, groups=0, amm_markets=0), start_ms=START_MS)
    oldest = exchange.active_markets()[0].slug
    created, resolved = exchange.lifecycle_step(START_MS + 5)
    assert isinstance(created, MarketCreated) and isinstance(resolved, MarketResolved)
    assert resolved.slug == oldest and resolved.market.winning_index in (0, 1)
    active = {m.slug for m in exchange.active_markets()}
    assert created.slug in active and oldest not in active
    assert oldest not in exchange.book_slugs() and exchange.book(oldest) == ([], [])
    assert created.market.created_ms == START_MS + 5
    steps = run_steps(exchange, 200)
    assert all(e.slug != oldest for e in steps)


def test_exchange_resolving_a_group_resolves_its_children() -> None:
    exchange = Exchange(SimulatorConfig(markets=0, groups=1, amm_markets=0))
    group = exchange.active_markets()[0]
    with pytest.raises(ValueError):
        exchange.resolve_market(group.children[0].slug)
    event = exchange.resolve_market(group.slug)
    assert all(not c.active for c in event.market.children)
    assert exchange.book_slugs() == []
    with pytest.raises(ValueError):
        exchange.resolve_market(group.slug)


def test_config_rejects_bad_values_and_unknown_fields() -> None:
    with pytest.raises(ValueError):
        SimulatorConfig(malformed_rate=1.5)
    with pytest.raises(ValueError):
        SimulatorConfig(levels=0)
    with pytest.raises(msgspec.ValidationError):
        msgspec.json.decode(b'{"seed": 1, "nope": 2}', type=SimulatorConfig)
    assert msgspec.json.decode(b'{"rate_hz": 0}', type=SimulatorConfig).rate_hz == 0


def test_orderbook_payload_encodes_decimals_exactly() -> None:
    exchange = Exchange(SimulatorConfig(markets=1, groups=0, amm_markets=0))
    slug = exchange.book_slugs()[0]
    exchange.set_book(slug, [(D("0.515"), D("150.25"))], [(D("0.6"), D("100"))])
    payload = orderbook_payload(exchange.book_view(slug), Quirks(False, random.Random()), rest=True)
    wire = JSON_ENCODER.encode(payload)
    assert b'"bids":[{"price":0.515,"size":150.25,"side":"BUY"}]' in wire
    assert b'"asks":[{"price":0.6,"size":100,"side":"SELL"}]' in wire
    assert b'"adjustedMidpoint":0.5575' in wire
    assert b'"maxSpread":"0.05"' in wire
    decoded = msgspec.json.decode(wire, type=_WireBook)
    assert decoded.bids == [_WireLevel(D("0.515"), D("150.25"))]
    assert decoded.adjustedMidpoint == D("0.5575")


def test_quirks_vary_encodings_but_keep_values() -> None:
    exchange = Exchange(SimulatorConfig(markets=1, groups=0, amm_markets=0))
    view = exchange.book_view(exchange.book_slugs()[0])
    quirks = Quirks(True, random.Random(1))
    sides, price_types, stamps = set(), set(), set()
    for _ in range(200):
        payload = orderbook_payload(view, quirks, rest=False)
        level = payload["bids"][0]
        sides.add(level.get("side"))
        price_types.add(type(level["price"]))
        assert D(str(level["price"])) == view.bids[0][0]
        stamps.add(type(quirks.timestamp(START_MS)))
    assert sides == {"BUY", "buy", None}
    assert price_types == {Decimal, str}
    assert stamps == {str, int}


def test_iso_ms_is_exact() -> None:
    assert iso_ms(1_773_705_600_123) == "2026-03-17T00:00:00.123Z"
    assert iso_ms(0) == "1970-01-01T00:00:00.000Z"


def test_malformed_frames_are_all_broken_somehow() -> None:
    exchange = Exchange(SimulatorConfig(markets=1, groups=0, amm_markets=0))
    slug = exchange.book_slugs()[0]
    view = exchange.book_view(slug)
    book = orderbook_payload(view, Quirks(False, random.Random()), rest=False)
    payload = {"marketSlug": slug, "orderbook": book, "timestamp": iso_ms(START_MS)}
    good = event_frame("orderbookUpdate", payload)
    rng = random.Random(4)
    frames = {malformed_frame(rng, "orderbookUpdate", payload) for _ in range(300)}
    assert good not in frames
    assert any('"NaN"' in f or '"Infinity"' in f or '"-0.5"' in f for f in frames)
    assert any("mysteryEvent" in f for f in frames)
    for frame in frames:
        if frame.startswith('42/markets,["orderbookUpdate",'):
            body = frame[len("42/markets,"):]
            try:
                _, data = msgspec.json.decode(body)
            except (msgspec.DecodeError, ValueError):
                continue  # truncated: broken
            assert data != payload
