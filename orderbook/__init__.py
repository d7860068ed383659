"""Pure order-book core: exact books, full-book diffing and per-market sync.

Imports only the standard library and msgspec; no I/O, no clock.

- :class:`OrderBook` holds one token's bids and asks and turns a full book into
  the minimal changed levels (:meth:`OrderBook.replace`).
- :class:`BookSynchronizer` decides, per market, which full book wins (REST seed
  vs WebSocket updates, stale-by-timestamp) and emits ``Book``/``BookDelta``
  records with a per-market ``seq``.
"""

from __future__ import annotations

from orderbook.book import ZERO, OrderBook, Side
from orderbook.errors import CrossedBook, InvalidLevel, OrderBookError
from orderbook.sync import BookSynchronizer, SyncStats
from orderbook.types import (
    SCHEMA_VERSION,
    Book,
    BookDelta,
    BookSnapshot,
    Level,
    MarketSlug,
    PriceLevel,
)

__all__ = [
    "SCHEMA_VERSION",
    "ZERO",
    "Book",
    "BookDelta",
    "BookSnapshot",
    "BookSynchronizer",
    "CrossedBook",
    "InvalidLevel",
    "Level",
    "MarketSlug",
    "OrderBook",
    "OrderBookError",
    "PriceLevel",
    "Side",
    "SyncStats",
]
