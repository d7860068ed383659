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
from decimal import Decimal
from operator import itemgetter
from typing import Final, Literal

from sortedcontainers import SortedDict

from orderbook.errors import InvalidLevel
from orderbook.types import Level, PriceLevel

Side = Literal["bid", "ask"]
"""Which side of the book: ``"bid"`` (buy) or ``"ask"`` (sell)."""

ZERO: Final = Decimal(0)
"""Size of a removed level in a delta."""

_PRICE: Final = itemgetter(0)
# SortedDict is a dict subclass that keeps its keys in a SortedList alongside. When
# the key is already present, the sorted key list does not change, so the plain
# dict store is enough (sortedcontainers' own views reach for dict methods too).
_dict_setitem: Final = dict.__setitem__


class OrderBook:
    """Bids and asks of one token, prices and sizes as exact :class:`~decimal.Decimal`.

    Storage: two ``SortedDict[Decimal, Decimal]`` (price -> size), **both keyed by the
    plain price in ascending order**. Asks are read from the front (best = lowest)
    and bids are read **from the end** (best = highest). Reading from the end of a
    SortedDict is as cheap as reading from the front (``_lists[-1][-1]``), whereas
    negated keys would allocate a new Decimal for every lookup, insert and output
    level; so no price is ever negated.

    Prices are stored exactly as received. Two prices that are equal as Decimals
    (``0.5`` and ``0.50``) are the same level; the held key keeps the spelling it
    was first inserted with, and every output level (deltas included) carries that
    held spelling, so a consumer keying levels by the price text stays consistent.
    A plain dict per side maps each price to its held key object for that lookup
    (a dict cannot hand back its own key). Sizes compare as Decimals too: ``100``
    and ``100.0`` are the same size, so replacing one with the other is not a
    change (a changed size is reported with the spelling that arrived).

    A held book never contains a level with size 0.
    """

    __slots__ = (
        "_ask_keys",
        "_ask_spelling",
        "_asks",
        "_bid_keys",
        "_bid_spelling",
        "_bids",
        "_new_asks",
        "_new_bids",
    )

    def __init__(self) -> None:
        self._bids: SortedDict[Decimal, Decimal] = SortedDict()
        self._asks: SortedDict[Decimal, Decimal] = SortedDict()
        # Live key views, built once: indexing them reads the sorted key list.
        self._bid_keys = self._bids.keys()
        self._ask_keys = self._asks.keys()
        # price -> the key object held in the SortedDict (its first spelling).
        self._bid_spelling: dict[Decimal, Decimal] = {}
        self._ask_spelling: dict[Decimal, Decimal] = {}
        # Scratch maps reused by replace() so the hot path allocates no dict per call.
        self._new_bids: dict[Decimal, Decimal] = {}
        self._new_asks: dict[Decimal, Decimal] = {}

    # ------------------------------------------------------------------ writers

    def replace(
        self, bids: Sequence[PriceLevel], asks: Sequence[PriceLevel]
    ) -> tuple[list[Level], list[Level]]:
        """Make the held book equal to a full book and return what changed.

        Input levels may come in any order. A level with size 0 is treated as
        absent. When a price occurs more than once on one side, the **last**
        occurrence wins (so ``[(p, 5), (p, 0)]`` means "no level at p").

        Every level of both sides is validated before anything is mutated, so on
        :class:`~orderbook.errors.InvalidLevel` the held book is untouched.

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
        new_bids = self._new_bids
        new_asks = self._new_asks
        _collect(new_bids, bids, "bid")
        _collect(new_asks, asks, "ask")
        return (
            _sync_side(self._bids, self._bid_spelling, new_bids, True),
            _sync_side(self._asks, self._ask_spelling, new_asks, False),
        )

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
        _apply(self._bids, self._bid_spelling, bids)
        _apply(self._asks, self._ask_spelling, asks)

    def clear(self) -> None:
        """Remove every level of both sides."""
        self._bids.clear()
        self._asks.clear()
        self._bid_spelling.clear()
        self._ask_spelling.clear()

    # ------------------------------------------------------------------ readers

    def best_bid(self) -> Decimal | None:
        """Return the highest bid price, or ``None`` when there are no bids."""
        return self._bid_keys[-1] if self._bids else None

    def best_ask(self) -> Decimal | None:
        """Return the lowest ask price, or ``None`` when there are no asks."""
        return self._ask_keys[0] if self._asks else None

    def is_crossed(self) -> bool:
        """Return whether best bid >= best ask (False when a side is empty)."""
        if not self._bids or not self._asks:
            return False
        return bool(self._bid_keys[-1] >= self._ask_keys[0])

    def bids_best_first(self) -> list[Level]:
        """Return all bid levels, highest price first."""
        size_of = self._bids.__getitem__
        return [(price, size_of(price)) for price in reversed(self._bids)]

    def asks_best_first(self) -> list[Level]:
        """Return all ask levels, lowest price first."""
        size_of = self._asks.__getitem__
        return [(price, size_of(price)) for price in self._asks]

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
        if n <= 0:
            return []
        if side == "bid":
            book = self._bids
            prices = book.islice(-n, None, reverse=True)
        elif side == "ask":
            book = self._asks
            prices = book.islice(0, n)
        else:
            raise ValueError(f"side must be 'bid' or 'ask', not {side!r}")
        size_of = book.__getitem__
        return [(price, size_of(price)) for price in prices]

    @property
    def n_bids(self) -> int:
        """Number of bid levels."""
        return len(self._bids)

    @property
    def n_asks(self) -> int:
        """Number of ask levels."""
        return len(self._asks)

    def __len__(self) -> int:
        """Return the number of levels on both sides together."""
        return len(self._bids) + len(self._asks)

    def __eq__(self, other: object) -> bool:
        """Two books are equal when both sides hold equal prices with equal sizes."""
        if not isinstance(other, OrderBook):
            return NotImplemented
        return bool(self._bids == other._bids and self._asks == other._asks)

    __hash__ = None  # type: ignore[assignment]  # mutable

    def copy(self) -> OrderBook:
        """Return an independent copy of this book."""
        clone = OrderBook()
        clone._bids.update(self._bids)
        clone._asks.update(self._asks)
        clone._bid_spelling.update(self._bid_spelling)
        clone._ask_spelling.update(self._ask_spelling)
        return clone

    def __repr__(self) -> str:
        return (
            f"OrderBook(bids={len(self._bids)}, asks={len(self._asks)}, "
            f"best_bid={self.best_bid()}, best_ask={self.best_ask()})"
        )


def _collect(target: dict[Decimal, Decimal], levels: Sequence[PriceLevel], side: Side) -> None:
    """Validate ``levels`` into ``target`` (cleared first): price -> size, sizes > 0 only.

    Raises:
        InvalidLevel: on the first bad level; ``target`` is then partly filled,
            which is harmless because it is scratch space.
    """
    target.clear()
    for level in levels:
        price = level.price
        size = level.size
        # is_finite() first: ordering comparisons on NaN raise InvalidOperation.
        if not (price.is_finite() and size.is_finite() and price > ZERO and size >= ZERO):
            raise InvalidLevel(side, price, size)
        if size:
            target[price] = size
        else:
            # Last occurrence wins: a later size 0 cancels an earlier duplicate.
            target.pop(price, None)


def _sync_side(
    held: SortedDict[Decimal, Decimal],
    spelling: dict[Decimal, Decimal],
    new: dict[Decimal, Decimal],
    descending: bool,
) -> list[Level]:
    """Mutate ``held`` into ``new`` touching only changed levels; return them best first."""
    # Fast path: usually only one side of the book changes per update, so the other
    # side compares equal (dict equality in C; Decimal 100 == 100.0).
    if held == new:
        return []
    changed: list[Level] = []
    append = changed.append
    held_size = held.get
    for price, size in new.items():
        old = held_size(price)
        if old is None:
            held[price] = size  # new price: inserted into the sorted key list too
            spelling[price] = price
            append((price, size))
        elif old != size:
            _dict_setitem(held, price, size)  # key already sorted in; value only
            append((spelling[price], size))
    # Now held holds every key of new, so it has extra (removed) keys iff it is longer.
    if len(held) != len(new):
        removed = [price for price in held if price not in new]
        for price in removed:
            del held[price]
            del spelling[price]
            append((price, ZERO))
    changed.sort(key=_PRICE, reverse=descending)
    return changed


def _apply(
    held: SortedDict[Decimal, Decimal], spelling: dict[Decimal, Decimal], levels: Sequence[Level]
) -> None:
    """Set or (size 0) remove each level of one side."""
    for price, size in levels:
        if size:
            if price not in spelling:
                spelling[price] = price
            held[price] = size
        elif price in spelling:
            del held[price]
            del spelling[price]
