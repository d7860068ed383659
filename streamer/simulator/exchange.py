"""Pure model of a Limitless-like exchange: markets, YES books and lifecycle.

No I/O and no clock: every method that needs "now" takes it in epoch
milliseconds, and all randomness comes from one ``random.Random(seed)``, so a
seed and a sequence of calls always produce the same markets and books.

Books live on the YES token of every CLOB market (plain markets and the
children of group/NegRisk markets), on the venue's 0.001 price grid in (0, 1)
(the tick is hard-coded by every SDK, see the API reference §2.2). Internally a
price is an integer tick (``515`` is ``0.515``) and a size a
:class:`~decimal.Decimal`; views hand out Decimals only, so ``0.515`` is
``Decimal("0.515")`` and encodes back to ``0.515``.

:meth:`Exchange.step` performs one random-walk step of one market and returns
what the venue would push: a :class:`BookUpdate` (a full book, as
``orderbookUpdate`` is) or, for AMM markets, a :class:`PriceUpdate`.

:mod:`streamer.simulator.account` models the authenticated user (private events,
portfolio, partner allowances).
"""

from __future__ import annotations

import random
from decimal import Decimal
from typing import Final, Literal, NamedTuple, TypeAlias

import msgspec

from streamer.simulator.auth import SimulatorAuth

__all__ = [
    "AMM_PRICE_TICKS",
    "BookUpdate",
    "BookView",
    "Exchange",
    "ExchangeEvent",
    "Level",
    "Market",
    "MarketCreated",
    "MarketResolved",
    "PriceUpdate",
    "SimulatorConfig",
    "StepEvent",
    "TICKS",
]

TICKS: Final = 1000
"""Ticks per 1.0: prices are ``tick / 1000`` with ``0 < tick < 1000``."""
AMM_PRICE_TICKS: Final = (10, 990)
MAX_LEVELS: Final = 200
DEFAULT_START_MS: Final = 1_767_225_600_000  # 2026-01-01T00:00:00Z
DAY_MS: Final = 86_400_000
IDENTICAL_BOOK_P: Final = 0.08
"""Probability that a step re-emits the book unchanged (exercises suppression)."""
TRADE_P: Final = 0.12
RESOLVED: Final = "RESOLVED"
FUNDED: Final = "FUNDED"
GROUP_CHILDREN: Final = 3

_ASSETS: Final = ("btc", "eth", "sol", "doge", "xrp", "link", "avax", "ton")
_CATEGORIES: Final = ("Crypto", "Hourly", "Daily", "Weekly")
HUNDRED: Final = Decimal(100)
TICKS_D: Final = Decimal(TICKS)

Level: TypeAlias = tuple[Decimal, Decimal]
"""``(price, size)``."""


class SimulatorConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Knobs of the embedded exchange simulator (markets, rates and faults).

    Attributes:
        seed: seed of every random choice (books, faults, quirks).
        markets: number of single CLOB markets.
        groups: number of group (NegRisk) markets, each with 3 CLOB children.
        amm_markets: number of AMM markets (``newPriceData`` only, no book).
        levels: price levels per side of every book.
        rate_hz: book/price steps per second across all markets; 0 freezes them.
        kick_every_s: period of server-side kicks (``41/markets,`` then close).
        stall_every_s: period of total silences on every connection.
        stall_for_s: length of each silence.
        malformed_rate: fraction of outgoing event frames replaced by a malformed one.
        rest_429_rate: fraction of REST requests answered 429.
        rest_503_rate: fraction of REST requests answered 503.
        lifecycle_every_s: period of "create one market, resolve the oldest".
        ping_interval_ms: Engine.IO ``pingInterval`` (server pings this often).
        ping_timeout_ms: Engine.IO ``pingTimeout`` (pong deadline).
        quirks: vary the encodings the way the venue's documents disagree.
        page_limit_max: cap of ``limit`` on ``GET /markets/active``.
        auth: credentials the simulator accepts; ``None`` (default) serves public data
            only (private REST endpoints answer 401, private subscriptions ``exception``).
        private_rate_hz: private events (``orderEvent``/``positions``/``tx``) per second,
            pushed to authenticated sockets that subscribed them.
        private_duplicate_p: probability that an ``orderEvent`` is re-sent verbatim
            (same ``eventId``), to exercise client-side de-duplication.
        allowance_profiles: partner sub-account profile ids with allowance targets.
        allowance_targets: targets per profile (all ``missing`` at start, retryable).
        allowance_failed_targets: of those, how many start ``failed`` (retryable).
        allowance_unretryable_targets: of those, how many are ``failed`` and not retryable
            (the profile then never becomes ready).
        allowance_confirm_polls: checks after a retry before a submitted target is confirmed.
        allowance_retry_429: the first N retry POSTs of each profile answer 429.
        allowance_retry_after_s: ``retryAfterSeconds`` of those 429s.
        allowance_retry_409: the next N retry POSTs answer 409 (retry already running).
        trading_markets: only the first N CLOB books trade (random walk); the others are
            quiet: they change only through :meth:`Exchange.change_silently`. ``None``: all.
        rest_max_in_flight: the venue's documented per-token limit of concurrent REST
            requests; more are answered 429 (``None``: unlimited).
        rest_min_interval_ms: the documented least time between a token's requests; a
            request sooner than that after the previous one is answered 429.
        rest_latency_ms: time the REST server takes to answer (so requests overlap).
        unknown_events: the noise frames may include an event the venue does not have
            (``marketStats``); off by default, since the real venue sends none.
    """

    seed: int = 1
    markets: int = 12
    groups: int = 1
    amm_markets: int = 1
    levels: int = 20
    rate_hz: float = 20.0
    kick_every_s: float | None = None
    stall_every_s: float | None = None
    stall_for_s: float = 5.0
    malformed_rate: float = 0.0
    rest_429_rate: float = 0.0
    rest_503_rate: float = 0.0
    lifecycle_every_s: float | None = None
    ping_interval_ms: int = 25000
    ping_timeout_ms: int = 20000
    quirks: bool = True
    page_limit_max: int = 25
    shift_p: float = 0.15
    """Share of random-walk operations that move the whole book 1-3 ticks (every level
    changes). 0.15 is a stress test; real books mostly change one or two levels."""
    auth: SimulatorAuth | None = None
    private_rate_hz: float = 5.0
    private_duplicate_p: float = 0.1
    allowance_profiles: tuple[int, ...] = (4543,)
    allowance_targets: int = 4
    allowance_failed_targets: int = 0
    allowance_unretryable_targets: int = 0
    allowance_confirm_polls: int = 2
    allowance_retry_429: int = 0
    allowance_retry_after_s: int = 2
    allowance_retry_409: int = 0
    trading_markets: int | None = None
    rest_max_in_flight: int | None = None
    rest_min_interval_ms: int | None = None
    rest_latency_ms: int = 0
    unknown_events: bool = False

    def __post_init__(self) -> None:
        _check(0 <= self.shift_p <= 0.15, "shift_p must be in [0, 0.15]")
        _check(min(self.markets, self.groups, self.amm_markets) >= 0, "market counts must be >= 0")
        _check(1 <= self.levels <= MAX_LEVELS, f"levels must be in 1..{MAX_LEVELS}")
        _check(self.rate_hz >= 0, "rate_hz must be >= 0")
        for name in ("malformed_rate", "rest_429_rate", "rest_503_rate"):
            _check(0.0 <= getattr(self, name) <= 1.0, f"{name} must be in [0, 1]")
        for name in ("kick_every_s", "stall_every_s", "lifecycle_every_s"):
            value = getattr(self, name)
            _check(value is None or value > 0, f"{name} must be > 0")
        _check(self.stall_for_s >= 0, "stall_for_s must be >= 0")
        _check(min(self.ping_interval_ms, self.ping_timeout_ms) > 0, "ping times must be > 0")
        _check(self.page_limit_max >= 1, "page_limit_max must be >= 1")
        _check(self.private_rate_hz >= 0, "private_rate_hz must be >= 0")
        _check(0.0 <= self.private_duplicate_p <= 1.0, "private_duplicate_p must be in [0, 1]")
        _check(all(p > 0 for p in self.allowance_profiles), "allowance_profiles must be > 0")
        _check(
            0 <= self.allowance_failed_targets + self.allowance_unretryable_targets
            <= self.allowance_targets,
            "failed + unretryable allowance targets must be in 0..allowance_targets",
        )
        _check(
            min(self.allowance_confirm_polls, self.allowance_retry_429, self.allowance_retry_409,
                self.allowance_retry_after_s) >= 0,
            "allowance knobs must be >= 0",
        )


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(message)


class Market(msgspec.Struct, frozen=True):
    """One market as the model holds it (not the wire shape; see ``rest.py``).

    Attributes:
        id: numeric market id.
        slug: unique key (REST paths and WS subscriptions).
        title: human title.
        trade_type: ``clob`` or ``amm``.
        market_type: ``single`` or ``group``.
        status: ``FUNDED`` while active, ``RESOLVED`` afterwards.
        created_ms: creation time, epoch ms.
        expiration_ms: ``expirationTimestamp``, epoch ms.
        yes_token: YES token id (uint256 decimal string); ``None`` for AMM/group.
        no_token: NO token id; ``None`` for AMM/group.
        exchange: ``venue.exchange`` address (``None`` for AMM).
        adapter: ``venue.adapter`` (NegRisk adapter for group children, else ``None``).
        address: AMM market contract (``newPriceData`` key); ``None`` for CLOB.
        condition_id: ``conditionId``.
        categories: category names.
        children: child markets of a group, in ``orderInGroup`` order.
        group_slug: the parent group of a child market.
        order_in_group: position inside the group.
        winning_index: ``winningOutcomeIndex`` once resolved.
        resolved_ms: resolution time once resolved.
    """

    id: int
    slug: str
    title: str
    trade_type: Literal["clob", "amm"]
    market_type: Literal["single", "group"]
    status: str
    created_ms: int
    expiration_ms: int
    yes_token: str | None
    no_token: str | None
    exchange: str | None
    adapter: str | None
    address: str | None
    condition_id: str
    categories: tuple[str, ...]
    children: tuple[Market, ...] = ()
    group_slug: str | None = None
    order_in_group: int = 0
    winning_index: int | None = None
    resolved_ms: int | None = None

    @property
    def active(self) -> bool:
        """Whether the market is still trading (not resolved)."""
        return self.status != RESOLVED

    @property
    def has_book(self) -> bool:
        """Whether the market has a CLOB book (single CLOB markets and group children)."""
        return self.trade_type == "clob" and self.market_type == "single"


class BookView(msgspec.Struct, frozen=True):
    """An immutable copy of one YES book, best levels first.

    Attributes:
        slug: market slug.
        token_id: YES token id.
        bids: descending prices.
        asks: ascending prices.
        adjusted_midpoint: ``(best bid + best ask) / 2`` or ``None`` with an empty side.
        last_trade_price: price of the last simulated trade, ``None`` if never traded.
        timestamp_ms: time of the last emitted update; ``None`` before the first one.
    """

    slug: str
    token_id: str
    bids: tuple[Level, ...]
    asks: tuple[Level, ...]
    adjusted_midpoint: Decimal | None
    last_trade_price: Decimal | None
    timestamp_ms: int | None


class BookUpdate(NamedTuple):
    """A CLOB book changed (or was re-emitted unchanged): push ``orderbookUpdate``."""

    slug: str
    book: BookView


class PriceUpdate(NamedTuple):
    """An AMM market's prices moved: push ``newPriceData``."""

    slug: str
    address: str
    market_id: int
    yes_price: Decimal
    no_price: Decimal
    block_number: int
    timestamp_ms: int


class MarketCreated(NamedTuple):
    """A market was listed: push ``marketCreated``."""

    slug: str
    market: Market


class MarketResolved(NamedTuple):
    """A market was resolved: push ``marketResolved``."""

    slug: str
    market: Market


StepEvent: TypeAlias = BookUpdate | PriceUpdate
"""What :meth:`Exchange.step` returns."""
ExchangeEvent: TypeAlias = BookUpdate | PriceUpdate | MarketCreated | MarketResolved
"""Anything the WebSocket side may have to push."""


class _Book:
    """Mutable YES book: tick -> size per side."""

    __slots__ = ("asks", "bids", "last_trade", "ts")

    def __init__(self) -> None:
        self.bids: dict[int, Decimal] = {}
        self.asks: dict[int, Decimal] = {}
        self.last_trade: int | None = None
        self.ts: int | None = None

    def best_bid(self) -> int:
        return max(self.bids, default=0)

    def best_ask(self) -> int:
        return min(self.asks, default=TICKS)


class _Amm:
    __slots__ = ("block", "ts", "yes")

    def __init__(self, yes: int, block: int) -> None:
        self.yes = yes
        self.block = block
        self.ts = 0


def price_of(tick: int) -> Decimal:
    """The Decimal price of a tick, without trailing zeros (``500`` -> ``0.5``)."""
    return Decimal(tick) / TICKS_D


def tick_of(price: Decimal) -> int:
    """The tick of an on-grid price.

    Raises:
        ValueError: the price is not a multiple of 0.001 strictly inside (0, 1).
    """
    scaled = price * TICKS_D
    if not scaled.is_finite() or scaled != scaled.to_integral_value() or not 0 < scaled < TICKS:
        raise ValueError(f"price {price} is not on the 0.001 grid in (0, 1)")
    return int(scaled)


class Exchange:
    """The simulated venue's state. Deterministic for a seed; time is passed in.

    Args:
        config: simulator configuration (market counts, levels, seed).
        start_ms: epoch ms used as "now" while building the initial markets.
    """

    def __init__(self, config: SimulatorConfig, *, start_ms: int = DEFAULT_START_MS) -> None:
        self._config = config
        self._rng = random.Random(config.seed)
        self._now_ms = start_ms
        self._paused = False
        self._next_id = 1
        self._markets: dict[str, Market] = {}
        self._top: list[str] = []
        self._books: dict[str, _Book] = {}
        self._amms: dict[str, _Amm] = {}
        self._walkable: list[str] = []
        self._book_count = 0
        self._delisted: dict[str, bool] = {}
        """Delisted slug -> whether it traded (to restore on relisting)."""
        self._build()

    # -- construction -----------------------------------------------------------------

    def _build(self) -> None:
        for _ in range(self._config.markets):
            self._add_single()
        for _ in range(self._config.groups):
            self._add_group()
        for _ in range(self._config.amm_markets):
            self._add_amm()

    def _take_id(self) -> int:
        market_id = self._next_id
        self._next_id += 1
        return market_id

    def _token(self) -> str:
        # uint256-sized, always above 2**64 so nobody can get away with an int64.
        return str(self._rng.getrandbits(255) | (1 << 254))

    def _address(self) -> str:
        return f"0x{self._rng.getrandbits(160):040x}"

    def _hex32(self) -> str:
        return f"0x{self._rng.getrandbits(256):064x}"

    def _base(self, market_id: int, slug: str, title: str) -> Market:
        return Market(
            id=market_id,
            slug=slug,
            title=title,
            trade_type="clob",
            market_type="single",
            status=FUNDED,
            created_ms=self._now_ms,
            expiration_ms=self._now_ms + self._rng.randint(1, 30) * DAY_MS,
            yes_token=self._token(),
            no_token=self._token(),
            exchange=self._address(),
            adapter=None,
            address=None,
            condition_id=self._hex32(),
            categories=(self._rng.choice(_CATEGORIES),),
        )

    def _add_single(self) -> Market:
        market_id = self._take_id()
        asset = self._rng.choice(_ASSETS)
        strike = self._rng.randint(1, 200) * 500
        slug = f"{asset}-above-{strike}-{market_id}"
        market = self._base(market_id, slug, f"{asset.upper()} above ${strike:,}?")
        self._register(market, top=True)
        return market

    def _add_group(self) -> Market:
        group_id = self._take_id()
        asset = self._rng.choice(_ASSETS)
        slug = f"{asset}-price-range-{group_id}"
        adapter = self._address()
        children = []
        for k in range(GROUP_CHILDREN):
            child = msgspec.structs.replace(
                self._base(self._take_id(), f"{slug}-{k}", f"{asset.upper()} range {k}"),
                adapter=adapter,
                group_slug=slug,
                order_in_group=k,
            )
            children.append(child)
        group = msgspec.structs.replace(
            self._base(group_id, slug, f"{asset.upper()} price range"),
            market_type="group",
            yes_token=None,
            no_token=None,
            adapter=adapter,
            children=tuple(children),
        )
        self._register(group, top=True)
        for child in children:
            self._register(child, top=False)
        return group

    def _add_amm(self) -> Market:
        market_id = self._take_id()
        asset = self._rng.choice(_ASSETS)
        slug = f"{asset}-up-or-down-amm-{market_id}"
        market = msgspec.structs.replace(
            self._base(market_id, slug, f"{asset.upper()} up or down?"),
            trade_type="amm",
            yes_token=None,
            no_token=None,
            exchange=None,
            address=self._address(),
        )
        self._register(market, top=True)
        self._amms[slug] = _Amm(self._rng.randint(200, 800), self._rng.randint(10**7, 2 * 10**7))
        self._walkable.append(slug)
        return market

    def _register(self, market: Market, *, top: bool) -> None:
        self._markets[market.slug] = market
        if top:
            self._top.append(market.slug)
        if market.has_book:
            book = _Book()
            mid = self._initial_mid()
            book.bids[mid - self._rng.randint(0, 2)] = self._size()
            book.asks[mid + self._rng.randint(1, 3)] = self._size()
            self._rebalance(book)
            if self._rng.random() < 0.7:
                book.last_trade = self._rng.choice((book.best_bid(), book.best_ask()))
            self._books[market.slug] = book
            self._book_count += 1
            trading = self._config.trading_markets
            if trading is None or self._book_count <= trading:
                self._walkable.append(market.slug)

    def _initial_mid(self) -> int:
        margin = 3 * self._config.levels + 5
        low, high = max(margin, 50), min(TICKS - margin, 950)
        return self._rng.randint(low, high) if low <= high else TICKS // 2

    def _size(self) -> Decimal:
        cents = self._rng.randint(100, 500_000)
        if self._rng.random() < 0.3:
            cents -= cents % 100  # a whole number of shares, now and then
        return Decimal(cents) / HUNDRED

    # -- random walk -----------------------------------------------------------------

    def step(self, now_ms: int) -> list[StepEvent]:
        """Advance one randomly chosen market by one random-walk step.

        Args:
            now_ms: the simulator's clock in epoch ms. A market's timestamps never
                go backwards even if this does.

        Returns:
            ``[]`` while paused or without active markets, else one
            :class:`BookUpdate` (full book, sometimes identical to the previous
            one) or one :class:`PriceUpdate` for an AMM market.
        """
        self._now_ms = max(self._now_ms, now_ms)
        if self._paused or not self._walkable:
            return []
        slug = self._rng.choice(self._walkable)
        amm = self._amms.get(slug)
        if amm is not None:
            return [self._step_amm(slug, amm, now_ms)]
        book = self._books[slug]
        if self._rng.random() >= IDENTICAL_BOOK_P:
            self._walk(book)
        book.ts = now_ms if book.ts is None else max(book.ts, now_ms)
        return [BookUpdate(slug, self._view(slug, book))]

    def _step_amm(self, slug: str, amm: _Amm, now_ms: int) -> PriceUpdate:
        low, high = AMM_PRICE_TICKS
        amm.yes = min(high, max(low, amm.yes + self._rng.randint(-5, 5)))
        amm.block += self._rng.randint(1, 3)
        amm.ts = max(amm.ts, now_ms)
        market = self._markets[slug]
        assert market.address is not None
        return PriceUpdate(
            slug,
            market.address,
            market.id,
            price_of(amm.yes),
            price_of(TICKS - amm.yes),
            amm.block,
            amm.ts,
        )

    def _walk(self, book: _Book) -> None:
        for _ in range(self._rng.randint(1, 3)):
            op = self._rng.random()
            if op < 0.45 or (op < 0.60 and op - 0.45 >= self._config.shift_p):
                self._resize(book)
            elif op < 0.60:
                self._shift(book)
            elif op < 0.75:
                self._drop_level(book)
            elif op < 1.0 - TRADE_P:
                self._improve(book)
            else:
                self._trade(book)
        self._rebalance(book)

    def _side(self, book: _Book) -> dict[int, Decimal]:
        return book.bids if self._rng.random() < 0.5 else book.asks

    def _resize(self, book: _Book) -> None:
        side = self._side(book)
        if side:
            side[self._rng.choice(sorted(side))] = self._size()

    def _drop_level(self, book: _Book) -> None:
        side = self._side(book)
        if side:
            del side[self._rng.choice(sorted(side))]

    def _shift(self, book: _Book) -> None:
        ticks = [*book.bids, *book.asks]
        if not ticks:
            return
        delta = self._rng.choice((-3, -2, -1, 1, 2, 3))
        if min(ticks) + delta < 1 or max(ticks) + delta >= TICKS:
            delta = -delta
            if min(ticks) + delta < 1 or max(ticks) + delta >= TICKS:
                return
        book.bids = {t + delta: s for t, s in book.bids.items()}
        book.asks = {t + delta: s for t, s in book.asks.items()}

    def _improve(self, book: _Book) -> None:
        best_bid, best_ask = book.best_bid(), book.best_ask()
        if best_ask - best_bid > 1:
            self._side(book)[self._rng.randint(best_bid + 1, best_ask - 1)] = self._size()

    def _trade(self, book: _Book) -> None:
        side = self._side(book)
        if not side:
            return
        best = book.best_bid() if side is book.bids else book.best_ask()
        book.last_trade = best
        cents = int(side[best] * HUNDRED) * self._rng.randint(10, 90) // 100
        if cents < 1:
            del side[best]
        else:
            side[best] = Decimal(cents) / HUNDRED

    def _rebalance(self, book: _Book) -> None:
        """Bring both sides back to ``levels`` levels by trimming or deepening."""
        levels = self._config.levels
        for side, deeper in ((book.bids, self._deeper_bid), (book.asks, self._deeper_ask)):
            while len(side) > levels:
                del side[min(side) if side is book.bids else max(side)]
            while len(side) < levels:
                tick = deeper(book)
                if tick is None:
                    break
                side[tick] = self._size()

    def _deeper_bid(self, book: _Book) -> int | None:
        best_ask = book.best_ask()
        anchor = min(book.bids) if book.bids else min(best_ask, TICKS // 2 + 1)
        tick = anchor - self._rng.randint(1, 3)
        if 1 <= tick < best_ask and tick not in book.bids:
            return tick
        free = [t for t in range(1, best_ask) if t not in book.bids]
        return self._rng.choice(free) if free else None

    def _deeper_ask(self, book: _Book) -> int | None:
        best_bid = book.best_bid()
        anchor = max(book.asks) if book.asks else max(best_bid, TICKS // 2 - 1)
        tick = anchor + self._rng.randint(1, 3)
        if best_bid < tick < TICKS and tick not in book.asks:
            return tick
        free = [t for t in range(best_bid + 1, TICKS) if t not in book.asks]
        return self._rng.choice(free) if free else None

    # -- accessors -------------------------------------------------------------------

    @property
    def paused(self) -> bool:
        """Whether the random walk (and lifecycle) is paused."""
        return self._paused

    @property
    def now_ms(self) -> int:
        """The latest time the model has been told about."""
        return self._now_ms

    def pause(self) -> None:
        """Freeze the random walk: :meth:`step` returns ``[]`` until :meth:`resume`."""
        self._paused = True

    def resume(self) -> None:
        """Undo :meth:`pause`."""
        self._paused = False

    def markets(self) -> list[Market]:
        """All top-level markets (singles, groups with children, AMM), resolved included."""
        return [self._markets[slug] for slug in self._top]

    def active_markets(self) -> list[Market]:
        """Top-level listed markets that are not resolved, in listing order."""
        return [m for m in self.markets() if m.active and m.slug not in self._delisted]

    def market(self, slug: str) -> Market | None:
        """Any listed market by slug, group children included (None if delisted)."""
        return None if slug in self._delisted else self._markets.get(slug)

    def book_slugs(self) -> list[str]:
        """Slugs of every active listed market with a book (singles and group children)."""
        return [s for s, m in self._markets.items()
                if m.has_book and m.active and s not in self._delisted]

    def quiet_slugs(self) -> list[str]:
        """Listed active books that do not trade (see ``trading_markets``)."""
        walkable = set(self._walkable)
        return [s for s in self.book_slugs() if s not in walkable]

    def delist(self, slug: str) -> None:
        """Take a market off the venue: 404 on REST, no more updates, until :meth:`relist`."""
        if slug in self._delisted or slug not in self._markets:
            raise KeyError(slug)
        trading = slug in self._walkable
        if trading:
            self._walkable.remove(slug)
        self._delisted[slug] = trading

    def relist(self, slug: str) -> None:
        """Undo :meth:`delist`."""
        if self._delisted.pop(slug):
            self._walkable.append(slug)

    def change_silently(self, slug: str, now_ms: int) -> None:
        """Change a book without any event (a quiet market that changed while nobody
        listened): only a REST fetch can tell."""
        book = self._books[slug]
        before = (dict(book.bids), dict(book.asks))
        for _ in range(20):
            self._walk(book)
            if (book.bids, book.asks) != before:
                break
        book.ts = now_ms if book.ts is None else max(book.ts, now_ms)

    def amm_addresses(self) -> list[str]:
        """Contract addresses of the active AMM markets."""
        return [m.address for m in self._markets.values() if m.address and m.active]

    def book(self, slug: str) -> tuple[list[Level], list[Level]]:
        """The current book of a CLOB market as ``(bids, asks)``, best first.

        Raises:
            KeyError: the slug has no book (unknown, group or AMM market).
        """
        view = self.book_view(slug)
        return list(view.bids), list(view.asks)

    def book_view(self, slug: str) -> BookView:
        """A full immutable view of one book (levels, token, midpoint, last trade).

        Raises:
            KeyError: the slug has no book.
        """
        return self._view(slug, self._books[slug])

    def _view(self, slug: str, book: _Book) -> BookView:
        token = self._markets[slug].yes_token
        assert token is not None
        bids = tuple((price_of(t), book.bids[t]) for t in sorted(book.bids, reverse=True))
        asks = tuple((price_of(t), book.asks[t]) for t in sorted(book.asks))
        mid = None
        if book.bids and book.asks:
            mid = Decimal(book.best_bid() + book.best_ask()) / Decimal(2 * TICKS)
        last = None if book.last_trade is None else price_of(book.last_trade)
        return BookView(slug, token, bids, asks, mid, last, book.ts)

    def amm_prices(self, slug: str) -> tuple[Decimal, Decimal]:
        """``(yes, no)`` prices of an AMM market.

        Raises:
            KeyError: not an AMM market.
        """
        yes = self._amms[slug].yes
        return price_of(yes), price_of(TICKS - yes)

    def set_book(self, slug: str, bids: list[Level], asks: list[Level]) -> None:
        """Replace a book silently (no event is emitted), e.g. to fake a missed update.

        Args:
            slug: a market with a book.
            bids: ``(price, size)`` levels, any order.
            asks: ``(price, size)`` levels, any order.

        Raises:
            KeyError: the slug has no book.
            ValueError: a price is off the 0.001 grid, a size is not positive,
                a price repeats, or the book would be crossed.
        """
        book = self._books[slug]
        new_bids, new_asks = _levels_to_ticks(bids), _levels_to_ticks(asks)
        if new_bids and new_asks and max(new_bids) >= min(new_asks):
            raise ValueError("crossed book")
        book.bids, book.asks = new_bids, new_asks

    # -- lifecycle -------------------------------------------------------------------

    def create_market(self, now_ms: int | None = None) -> MarketCreated:
        """List a new single CLOB market with a fresh book.

        Args:
            now_ms: creation time; defaults to the latest time seen.
        """
        if now_ms is not None:
            self._now_ms = max(self._now_ms, now_ms)
        market = self._add_single()
        return MarketCreated(market.slug, market)

    def resolve_market(self, slug: str, now_ms: int | None = None) -> MarketResolved:
        """Resolve an active top-level market (a group resolves with its children).

        Its book is emptied, it stops walking and leaves :meth:`active_markets`.

        Raises:
            KeyError: unknown slug.
            ValueError: already resolved, or a group child (resolve its group).
        """
        market = self._markets[slug]
        if not market.active or market.group_slug is not None:
            raise ValueError(f"cannot resolve {slug!r}")
        if now_ms is not None:
            self._now_ms = max(self._now_ms, now_ms)
        winner = self._rng.randint(0, 1)
        children = tuple(self._resolve_one(child, winner) for child in market.children)
        resolved = msgspec.structs.replace(self._resolve_one(market, winner), children=children)
        self._markets[slug] = resolved
        return MarketResolved(slug, resolved)

    def _resolve_one(self, market: Market, winner: int) -> Market:
        resolved = msgspec.structs.replace(
            market, status=RESOLVED, winning_index=winner, resolved_ms=self._now_ms
        )
        self._markets[market.slug] = resolved
        book = self._books.get(market.slug)
        if book is not None:
            book.bids, book.asks = {}, {}
        if market.slug in self._walkable:
            self._walkable.remove(market.slug)
        return resolved

    def lifecycle_step(self, now_ms: int) -> list[MarketCreated | MarketResolved]:
        """Create one market and resolve the oldest active single CLOB market.

        Keeps at least one single CLOB market alive. Returns ``[]`` while paused.
        """
        if self._paused:
            return []
        events: list[MarketCreated | MarketResolved] = [self.create_market(now_ms)]
        singles = [m for m in self.active_markets() if m.has_book]
        if len(singles) > 1:
            events.append(self.resolve_market(singles[0].slug, now_ms))
        return events


def _levels_to_ticks(levels: list[Level]) -> dict[int, Decimal]:
    out: dict[int, Decimal] = {}
    for price, size in levels:
        tick = tick_of(price)
        if tick in out or not (size.is_finite() and size > 0):
            raise ValueError(f"bad level ({price}, {size})")
        out[tick] = size
    return out
