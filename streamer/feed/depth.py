"""``--depth N``: the daemon's view of a book is its top N levels per side.

The view is cut from every full book *before* the synchronizer sees it, so the held book,
the ``book`` records and the deltas (computed by diffing the views) all describe the same
top-N book, and replaying the records reproduces it exactly: when a top level goes away,
the next level enters the view and the delta carries it. REST books are cut the same way,
so probes and audits compare like with like.
"""

from __future__ import annotations

import msgspec

from orderbook.book import LEVELS_DECODER, price_entry, size_entry
from orderbook.types import PriceLevel


def top_levels(levels: list[PriceLevel] | msgspec.Raw, n: int, *,
               bids: bool) -> list[PriceLevel] | msgspec.Raw:
    """The best ``n`` levels of one side (last occurrence of a price wins, size 0 = absent).

    A raw side (WebSocket books keep each side as raw JSON) is decoded first. Ordered by the
    book core's exact keys; a side with a level the core would reject (not a plain number,
    a price outside (0, 1]) is returned whole, so the core rejects it with its usual
    :class:`~orderbook.errors.InvalidLevel`.
    """
    if type(levels) is msgspec.Raw:
        try:
            levels = LEVELS_DECODER.decode(levels)
        except msgspec.DecodeError:
            return levels  # the core reports it
    assert isinstance(levels, list)
    if len(levels) <= n:
        return levels
    by_price: dict[object, tuple[object, PriceLevel]] = {}
    for level in levels:
        price, size = price_entry(level.price), size_entry(level.size)
        if isinstance(price, str) or isinstance(size, str):
            return levels
        by_price[price[0]] = (size[0], level)
    live = [(key, level) for key, (size_key, level) in by_price.items() if size_key]
    live.sort(key=lambda item: item[0], reverse=bids)  # type: ignore[arg-type, return-value]
    return [level for _, level in live[:n]]
