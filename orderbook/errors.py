"""Errors of the order-book core.

::

    OrderBookError
    ├── InvalidLevel(OrderBookError, ValueError)   price or size NaN/Infinity, price <= 0
    │                                              or size < 0; raised before any mutation
    └── CrossedBook                                best bid >= best ask; kept for the tree,
                                                   NOT raised by this package (see below)

Conditions that are *not* exceptions here, because they are normal on this venue
(limitless-api.md §3.6) and the caller must not pay for a raise on the hot path:

- a stale WebSocket book (exchange timestamp older than the one held) is dropped:
  :meth:`orderbook.sync.BookSynchronizer.on_update` returns ``None`` and counts
  ``stats.stale_dropped``;
- a crossed book is still emitted (it is what the exchange sent), counted in
  ``stats.crossed``, and signalled with ``needs_snapshot = True`` and
  ``snapshot_reason = "crossed"`` so that the edge fetches a REST re-seed.

:class:`CrossedBook` exists for callers (audits, tests) that want to turn a crossed
book into an error themselves, e.g. ``raise CrossedBook(book.best_bid(), book.best_ask())``.
"""

from __future__ import annotations

from decimal import Decimal


class OrderBookError(Exception):
    """Root of every error the order-book core raises on purpose."""


class InvalidLevel(OrderBookError, ValueError):
    """One input level is not a valid price level.

    Raised by :meth:`orderbook.book.OrderBook.replace` (and the synchronizer methods
    that call it) before the held book is touched, so the book stays as it was.

    Attributes:
        side: ``"bid"`` or ``"ask"``.
        price: the offending price as received.
        size: the offending size as received.
    """

    side: str
    price: Decimal
    size: Decimal

    def __init__(self, side: str, price: Decimal, size: Decimal) -> None:
        super().__init__(side, price, size)
        self.side = side
        self.price = price
        self.size = size

    @property
    def reason(self) -> str:
        """Why the level was rejected, derived from the fields."""
        price, size = self.price, self.size
        if not price.is_finite():
            return "price is not finite"
        if not size.is_finite():
            return "size is not finite"
        if price <= 0:
            return "price is not positive"
        if size < 0:
            return "size is negative"
        return "invalid level"

    def __str__(self) -> str:
        return f"invalid {self.side} level price={self.price} size={self.size}: {self.reason}"


class CrossedBook(OrderBookError):
    """The best bid is at or above the best ask.

    Not raised by this package: the synchronizer reports crossing through
    ``needs_snapshot``/``snapshot_reason`` instead (see the module docstring).

    Attributes:
        best_bid: the best bid price.
        best_ask: the best ask price.
    """

    best_bid: Decimal
    best_ask: Decimal

    def __init__(self, best_bid: Decimal, best_ask: Decimal) -> None:
        super().__init__(best_bid, best_ask)
        self.best_bid = best_bid
        self.best_ask = best_ask

    def __str__(self) -> str:
        return f"crossed book: best_bid={self.best_bid} >= best_ask={self.best_ask}"
