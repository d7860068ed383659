"""The held order book of one token: two sorted price -> size maps.

Pure and synchronous: no I/O, no clock, only stdlib + sortedcontainers.

The venue sends the *whole* book on every ``orderbookUpdate`` (limitless-api.md
§3.6), so the hot path is :meth:`OrderBook.replace`: make the held book equal to
the received one and report the minimal set of changed levels, which is what the
daemon publishes as a ``book_delta``. Consumers rebuild the book from those
records with :meth:`OrderBook.apply_delta`.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal, InvalidOperation
from typing import Final, Literal

from sortedcontainers import SortedDict

from orderbook.errors import InvalidLevel
from orderbook.types import Level, PriceLevel

Side = Literal["bid", "ask"]
"""Which side of the book: ``"bid"`` (buy) or ``"ask"`` (sell)."""

ZERO: Final = Decimal(0)
"""Size of a removed level in a delta."""

# SortedDict is a dict subclass that keeps its keys in a SortedList alongside. When
# the key is already present, the sorted key list does not change, so the plain
# dict store is enough (sortedcontainers' own views reach for dict methods too).
_dict_setitem: Final = dict.__setitem__


REBUILD_AT: Final = 8
"""Inserts + removals on one side beyond which the sorted side is rebuilt in one pass
(a whole-book shift) instead of level by level; both give the same book."""


class _Side:
    """One side of a book: a SortedDict plus a cached best-first list of held levels.

    ``held`` (price -> size, ascending keys) is the book. ``best_first`` is the same
    levels as ``(price, size)`` tuples, best first, holding the *same* key and size
    objects as ``held``; it is rebuilt lazily after a consumer-side edit. ``last_in``
    is the last input list applied by the merge, kept so that an unchanged side is
    recognised with one list comparison in C.
    """

    __slots__ = ("held", "keys", "descending", "best_first", "last_in")

    def __init__(self, descending: bool) -> None:
        self.held: SortedDict[Decimal, Decimal] = SortedDict()
        self.keys = self.held.keys()
        self.descending = descending
        self.best_first: list[Level] | None = []
        self.last_in: Sequence[PriceLevel] | None = None

    def levels(self) -> list[Level]:
        cached = self.best_first
        if cached is None:
            held = self.held
            prices = reversed(held) if self.descending else iter(held)
            cached = self.best_first = [(p, held[p]) for p in prices]
        return cached

    def best(self) -> Decimal | None:
        cached = self.best_first
        if cached is not None:
            return cached[0][0] if cached else None
        if not self.held:
            return None
        return self.keys[-1] if self.descending else self.keys[0]

    def touched(self) -> None:
        """A consumer-side edit: drop the caches."""
        self.best_first = None
        self.last_in = None


class _Plan:
    """What one side must do to become a new full side (computed before mutating)."""

    __slots__ = ("levels", "changes", "inserts", "removals", "updates", "last_in")

    def __init__(
        self,
        levels: list[Level],
        changes: list[Level],
        inserts: list[Level],
        removals: list[Decimal],
        updates: list[Level],
        last_in: Sequence[PriceLevel] | None,
    ) -> None:
        self.levels = levels
        self.changes = changes
        self.inserts = inserts
        self.removals = removals
        self.updates = updates
        self.last_in = last_in


class OrderBook:
    """Bids and asks of one token, prices and sizes as exact :class:`~decimal.Decimal`.

    Storage: per side a ``SortedDict[Decimal, Decimal]`` (price -> size) keyed by the
    plain price in ascending order (bids are read from the end, so no price is ever
    negated), plus a cached best-first list of the same levels.

    Hot path (:meth:`replace`): the venue sends whole books, best first. A side equal
    to the last one received is recognised by one list comparison in C. Otherwise the
    new side is merge-walked against the held best-first list: a few Decimal
    comparisons per level and no hashing of freshly decoded Decimals (hashing one
    costs ~10x an equality test), and the changed levels come out best first. Input
    that is not strictly sorted best first, repeats a price, or carries a size-0 level
    takes a slower dict-based path with the same result.

    Prices are stored exactly as received. Two prices that are equal as Decimals
    (``0.5`` and ``0.50``) are the same level; the held key keeps the spelling it
    was first inserted with, and every output level (deltas included) carries that
    held spelling, so a consumer keying levels by the price text stays consistent.
    Sizes compare as Decimals too: ``100`` and ``100.0`` are the same size, so
    replacing one with the other is not a change (a changed size is reported with the
    spelling that arrived).

    A held book never contains a level with size 0.
    """

    __slots__ = ("_bids", "_asks")

    def __init__(self) -> None:
        self._bids = _Side(descending=True)
        self._asks = _Side(descending=False)

    # ------------------------------------------------------------------ writers

    def replace(
        self, bids: Sequence[PriceLevel], asks: Sequence[PriceLevel]
    ) -> tuple[list[Level], list[Level]]:
        """Make the held book equal to a full book and return what changed.

        Input levels may come in any order (best first is the fast path). A level with
        size 0 is treated as absent. When a price occurs more than once on one side,
        the **last** occurrence wins (so ``[(p, 5), (p, 0)]`` means "no level at p").

        Every level of both sides is validated before anything is mutated, so on
        :class:`~orderbook.errors.InvalidLevel` the held book is untouched. Levels
        equal to held ones were validated when first held and are not checked again.

        Args:
            bids: the complete bid side, any order.
            asks: the complete ask side, any order.

        Returns:
            ``(bid_changes, ask_changes)``: the minimal changed levels, best first
            (bids by descending price, asks ascending). A changed level carries its
            new size; a removed level carries size ``Decimal(0)``. Both lists are
            empty when the given book equals the held one. The lists are new
            objects owned by the caller.

        Raises:
            InvalidLevel: a price or size is NaN/Infinity, a price is <= 0 or a
                size is < 0.
        """
        bid_plan = _plan(self._bids, bids, "bid")
        ask_plan = _plan(self._asks, asks, "ask")
        return _carry_out(self._bids, bid_plan), _carry_out(self._asks, ask_plan)

    def apply_delta(self, bids: Sequence[Level], asks: Sequence[Level]) -> None:
        """Apply changed levels, as published in a ``book`` or ``book_delta`` record.

        This is the consumer side of :meth:`replace`: size 0 removes the level (a
        missing level is ignored), any other size sets it. To load a full ``book``
        record, call :meth:`clear` first. Input is trusted (it is this package's
        own output) and not validated.

        Args:
            bids: ``(price, size)`` bid levels, any order.
            asks: ``(price, size)`` ask levels, any order.
        """
        _apply(self._bids, bids)
        _apply(self._asks, asks)

    def clear(self) -> None:
        """Remove every level of both sides."""
        for side in (self._bids, self._asks):
            side.held.clear()
            side.best_first = []
            side.last_in = None

    # ------------------------------------------------------------------ readers

    def best_bid(self) -> Decimal | None:
        """Return the highest bid price, or ``None`` when there are no bids."""
        return self._bids.best()

    def best_ask(self) -> Decimal | None:
        """Return the lowest ask price, or ``None`` when there are no asks."""
        return self._asks.best()

    def is_crossed(self) -> bool:
        """Return whether best bid >= best ask (False when a side is empty)."""
        bid = self._bids.best()
        ask = self._asks.best()
        return bid is not None and ask is not None and bid >= ask

    def bids_best_first(self) -> list[Level]:
        """Return all bid levels, highest price first (a new list)."""
        return list(self._bids.levels())

    def asks_best_first(self) -> list[Level]:
        """Return all ask levels, lowest price first (a new list)."""
        return list(self._asks.levels())

    def levels(self) -> tuple[list[Level], list[Level]]:
        """Return ``(bids_best_first(), asks_best_first())``, handy for comparisons."""
        return self.bids_best_first(), self.asks_best_first()

    def depth(self, side: Side, n: int) -> list[Level]:
        """Return the best ``n`` levels of one side, best first.

        Args:
            side: ``"bid"`` or ``"ask"``.
            n: how many levels at most; ``n <= 0`` gives an empty list.

        Raises:
            ValueError: ``side`` is neither ``"bid"`` nor ``"ask"``.
        """
        if side == "bid":
            held = self._bids
        elif side == "ask":
            held = self._asks
        else:
            raise ValueError(f"side must be 'bid' or 'ask', not {side!r}")
        return held.levels()[: max(n, 0)]

    @property
    def n_bids(self) -> int:
        """Number of bid levels."""
        return len(self._bids.held)

    @property
    def n_asks(self) -> int:
        """Number of ask levels."""
        return len(self._asks.held)

    def __len__(self) -> int:
        """Return the number of levels on both sides together."""
        return len(self._bids.held) + len(self._asks.held)

    def __eq__(self, other: object) -> bool:
        """Two books are equal when both sides hold equal prices with equal sizes."""
        if not isinstance(other, OrderBook):
            return NotImplemented
        return bool(self._bids.held == other._bids.held and self._asks.held == other._asks.held)

    __hash__ = None  # type: ignore[assignment]  # mutable

    def copy(self) -> OrderBook:
        """Return an independent copy of this book."""
        clone = OrderBook()
        for mine, theirs in ((self._bids, clone._bids), (self._asks, clone._asks)):
            theirs.held.update(mine.held)
            theirs.best_first = None
        return clone

    def __repr__(self) -> str:
        return (
            f"OrderBook(bids={self.n_bids}, asks={self.n_asks}, "
            f"best_bid={self.best_bid()}, best_ask={self.best_ask()})"
        )


def _valid(price: Decimal, size: Decimal) -> bool:
    # is_finite() first: ordering comparisons on NaN raise InvalidOperation.
    return bool(price.is_finite() and size.is_finite() and price > ZERO and size >= ZERO)


def _plan(side: _Side, levels: Sequence[PriceLevel], name: Side) -> _Plan | None:
    """How ``side`` must change to become ``levels``; None when it is unchanged.

    Raises:
        InvalidLevel: a new or changed level is invalid.
    """
    try:
        last_in = side.last_in
        if last_in is None:
            plan = _merge(side.levels(), levels, side.descending, name)
        elif levels == last_in:
            return None
        else:
            plan = _merge_middle(side, last_in, levels, name)
        if plan is None:
            plan = _dict_plan(side, levels, name)
    except (TypeError, InvalidOperation):
        # NaN cannot be ordered, and a signalling NaN can be neither hashed nor compared.
        raise _first_invalid(levels, name) from None
    return plan if plan.changes else None


def _merge_middle(
    side: _Side, last_in: Sequence[PriceLevel], levels: Sequence[PriceLevel], name: Side
) -> _Plan | None:
    """Merge only what lies between the common prefix and suffix with the last input.

    The held best-first list matches the last input one to one (same prices, in the
    same order), so levels equal to the last input's at the same position at either
    end are unchanged held levels: one Struct comparison each, in C. Typical updates
    change a level or two, so the Python-level merge sees only a short middle.
    """
    n, m = len(levels), len(last_in)
    p = 0
    for a, b in zip(levels, last_in):  # noqa: B905 - lengths differ on purpose
        if a != b:
            break
        p += 1
    q = 0
    limit = min(n, m) - p
    while q < limit and levels[n - 1 - q] == last_in[m - 1 - q]:
        q += 1
    held = side.levels()
    prev = held[p - 1][0] if p else None
    bound = held[m - q][0] if q else None
    plan = _merge(held[p : m - q], levels[p : n - q], side.descending, name, prev, bound)
    if plan is not None:
        plan.levels = held[:p] + plan.levels + held[m - q :]
        plan.last_in = levels
    return plan


def _merge(
    old: list[Level],
    new: Sequence[PriceLevel],
    descending: bool,
    name: Side,
    prev: Decimal | None = None,
    bound: Decimal | None = None,
) -> _Plan | None:
    """Merge-walk a best-first input against the held best-first levels.

    Args:
        old: held levels, best first.
        new: input levels, expected strictly best first.
        descending: bids (True) or asks.
        name: side name for errors.
        prev: the price just before ``new`` (a common prefix), if any.
        bound: the price just after ``new`` (a common suffix), if any.

    Returns None (use the dict path) when the input is not strictly best-first
    ordered (also against ``prev`` and ``bound``) or has a size-0 level.
    """
    out: list[Level] = []
    changes: list[Level] = []
    inserts: list[Level] = []
    removals: list[Decimal] = []
    updates: list[Level] = []
    i = 0
    n_old = len(old)
    for level in new:
        price = level.price
        size = level.size
        if prev is not None and (price >= prev if descending else price <= prev):
            return None  # not strictly best first: duplicates or another order
        prev = price
        if not size:
            return None
        while i < n_old:
            held = old[i]
            key = held[0]
            if key == price:
                i += 1
                if held[1] == size:
                    out.append(held)
                elif size.is_finite() and size > ZERO:
                    held = (key, size)
                    updates.append(held)
                    changes.append(held)
                    out.append(held)
                else:
                    raise InvalidLevel(name, price, size)
                break
            if key > price if descending else key < price:
                removals.append(key)  # a held level better than any new one left: gone
                changes.append((key, ZERO))
                i += 1
                continue
            _insert(price, size, name, inserts, changes, out)
            break
        else:
            _insert(price, size, name, inserts, changes, out)
    if bound is not None and prev is not None and (prev <= bound if descending else prev >= bound):
        return None
    while i < n_old:
        key = old[i][0]
        removals.append(key)
        changes.append((key, ZERO))
        i += 1
    return _Plan(out, changes, inserts, removals, updates, new)


def _insert(
    price: Decimal,
    size: Decimal,
    name: Side,
    inserts: list[Level],
    changes: list[Level],
    out: list[Level],
) -> None:
    if not _valid(price, size):
        raise InvalidLevel(name, price, size)
    level = (price, size)
    inserts.append(level)
    changes.append(level)
    out.append(level)


def _dict_plan(side: _Side, levels: Sequence[PriceLevel], name: Side) -> _Plan:
    """The general path: any order, repeated prices (last wins), size-0 levels.

    Every input level is validated here, even one a later repeat overrides.
    """
    for level in levels:
        if not _valid(level.price, level.size):
            raise InvalidLevel(name, level.price, level.size)
    new = {level.price: level.size for level in levels}
    held = side.held
    key_of = {key: key for key in held}  # a dict cannot hand back its own key
    changes: list[Level] = []
    inserts: list[Level] = []
    updates: list[Level] = []
    for price, size in new.items():
        old = held.get(price)
        if old is not None:
            if old == size:
                continue
            if not (size.is_finite() and size >= ZERO):
                raise InvalidLevel(name, price, size)
            if size:
                update = (key_of[price], size)
                updates.append(update)
                changes.append(update)
        elif not _valid(price, size):
            raise InvalidLevel(name, price, size)
        elif size:
            inserts.append((price, size))
            changes.append((price, size))
    removals = [key for key in held if not new.get(key)]
    changes.extend((key, ZERO) for key in removals)
    changes.sort(key=_price, reverse=side.descending)
    return _Plan([], changes, inserts, removals, updates, None)


def _price(level: Level) -> Decimal:
    return level[0]


def _first_invalid(levels: Sequence[PriceLevel], name: Side) -> InvalidLevel:
    for level in levels:
        try:
            if not _valid(level.price, level.size):
                return InvalidLevel(name, level.price, level.size)
        except InvalidOperation:
            return InvalidLevel(name, level.price, level.size)
    return InvalidLevel(name, ZERO, ZERO)  # unreachable for Decimal input


def _carry_out(side: _Side, plan: _Plan | None) -> list[Level]:
    """Apply a plan to the side; return its changes (best first)."""
    if plan is None:
        return []
    held = side.held
    if len(plan.inserts) + len(plan.removals) > REBUILD_AT:
        # Same edits on a plain dict, then one sort instead of many sorted inserts.
        merged = dict(held)
        _edit(merged, plan)
        held.clear()
        held.update(merged)
    else:
        _edit(held, plan)
    if plan.last_in is None:  # dict path: rebuild the cache lazily
        side.touched()
    else:
        side.best_first = plan.levels
        side.last_in = plan.last_in
    return plan.changes


def _edit(held: dict[Decimal, Decimal] | SortedDict[Decimal, Decimal], plan: _Plan) -> None:
    for key, size in plan.updates:
        # Key present: store the value only; the held key object (its spelling) is kept.
        _dict_setitem(held, key, size)  # type: ignore[arg-type]  # SortedDict is a dict
    for key in plan.removals:
        del held[key]
    for key, size in plan.inserts:
        held[key] = size


def _apply(side: _Side, levels: Sequence[Level]) -> None:
    """Set or (size 0) remove each level of one side (consumer side, trusted input)."""
    held = side.held
    for price, size in levels:
        if size:
            if price in held:
                _dict_setitem(held, price, size)  # type: ignore[arg-type]  # keeps the key
            else:
                held[price] = size
        else:
            held.pop(price, None)
    side.touched()
