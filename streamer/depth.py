"""``--depth N``: the daemon's view of a book is its top N levels per side.

The view is cut from every full book *before* the synchronizer sees it, so the held book,
the ``book`` records and the deltas (computed by diffing the views) all describe the same
top-N book, and replaying the records reproduces it exactly: when a top level goes away,
the next level enters the view and the delta carries it. REST books are cut the same way,
so probes and audits compare like with like.
"""

from __future__ import annotations

from decimal import InvalidOperation

from orderbook.types import PriceLevel


def top_levels(levels: list[PriceLevel], n: int, *, bids: bool) -> list[PriceLevel]:
    """The best ``n`` levels of one side (last occurrence of a price wins, size 0 = absent).

    Levels that cannot be compared (NaN) are returned unchanged, so the book core rejects
    them with its usual :class:`~orderbook.errors.InvalidLevel`.
    """
    if len(levels) <= n:
        return levels
    by_price: dict[object, PriceLevel] = {}
    for level in levels:
        by_price[level.price] = level
    try:
        live = [level for level in by_price.values() if level.size]
        live.sort(key=lambda level: level.price, reverse=bids)
    except (InvalidOperation, TypeError):
        return levels
    return live[:n]
