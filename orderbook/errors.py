"""Errors of the order-book core.

::

    OrderBookError
    ├── InvalidLevel(OrderBookError, ValueError)   price or size not a plain decimal (sign,
    │                                              exponent, NaN, > 30 significant digits),
    │                                              price outside (0, 1]; before any mutation
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


class OrderBookError(Exception):
    """Root of every error the order-book core raises on purpose."""


class InvalidLevel(OrderBookError, ValueError):
    """One input level is not a valid price level.

    Raised by :meth:`orderbook.book.OrderBook.replace` (and the synchronizer methods
    that call it) before the held book is touched, so the book stays as it was.

    Attributes:
        side: ``"bid"`` or ``"ask"``.
        price: the offending price as received (``None`` for an undecodable side).
        size: the offending size as received (``None`` for an undecodable side).
        reason: why the level was rejected.
    """

    side: str
    price: object
    size: object
    reason: str

    def __init__(self, side: str, price: object, size: object, reason: str) -> None:
        super().__init__(side, price, size, reason)
        self.side = side
        self.price = price
        self.size = size
        self.reason = reason

    def __str__(self) -> str:
        return (f"invalid {self.side} level price={self.price!r:.60} size={self.size!r:.60}: "
                f"{self.reason}")


class CrossedBook(OrderBookError):
    """The best bid is at or above the best ask.

    Not raised by this package: the synchronizer reports crossing through
    ``needs_snapshot``/``snapshot_reason`` instead (see the module docstring).

    Attributes:
        best_bid: the best bid price.
        best_ask: the best ask price.
    """

    best_bid: str
    best_ask: str

    def __init__(self, best_bid: str, best_ask: str) -> None:
        super().__init__(best_bid, best_ask)
        self.best_bid = best_bid
        self.best_ask = best_ask

    def __str__(self) -> str:
        return f"crossed book: best_bid={self.best_bid} >= best_ask={self.best_ask}"
