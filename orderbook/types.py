"""Value types shared by the order-book core, the feed and the sinks.

Prices and sizes are :class:`decimal.Decimal`, decoded by msgspec straight from
the JSON text, so ``0.515`` on the wire is ``Decimal("0.515")`` here and
``"0.515"`` again on the way out. No float ever touches a price.

:class:`Book` and :class:`BookDelta` are the output records of the book core:
they are what the daemon emits (NDJSON ``type`` ``book`` and ``book_delta``),
so the hot path builds them once and hands the same object to every sink.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Final, NewType

import msgspec

SCHEMA_VERSION: Final = 1

MarketSlug = NewType("MarketSlug", str)

Level = tuple[Decimal, Decimal]
"""One output level: ``(price, size)``; size ``0`` in a delta means removed."""


class PriceLevel(msgspec.Struct, frozen=True, gc=False):
    """One input level as the venue sends it (REST and WebSocket).

    Extra fields such as ``side`` (``BUY``/``buy``/absent) are ignored.
    Numbers may arrive as JSON numbers or numeric strings; both decode exactly.
    """

    price: Decimal
    size: Decimal


class BookSnapshot(msgspec.Struct, frozen=True, gc=False):
    """A full book of one market's YES token, as received.

    Attributes:
        market: market slug.
        token: YES token id (uint256 as a decimal string).
        bids: levels in any order.
        asks: levels in any order.
        ts: exchange time in epoch ms; ``None`` for a REST book (it has no timestamp).
        recv_ts: local receive time in epoch ms, stamped by the edge.
    """

    market: str
    token: str
    bids: list[PriceLevel]
    asks: list[PriceLevel]
    ts: int | None
    recv_ts: int


class Book(msgspec.Struct, frozen=True, gc=False, tag_field="type", tag="book"):
    """Output record: the whole book, best first. Emitted after every seed or re-seed."""

    v: int
    market: str
    token: str
    seq: int
    ts: int
    recv_ts: int
    best_bid: Decimal | None
    best_ask: Decimal | None
    bids: list[Level]
    asks: list[Level]
    run: str = ""
    """The daemon run that made this record (see :mod:`sinks.records`); ``seq`` counts per
    (run, market). Last, with a default, so positional construction stays cheap."""


class BookDelta(msgspec.Struct, frozen=True, gc=False, tag_field="type", tag="book_delta"):
    """Output record: only the changed levels, best first; size ``0`` means removed."""

    v: int
    market: str
    token: str
    seq: int
    ts: int
    recv_ts: int
    best_bid: Decimal | None
    best_ask: Decimal | None
    bids: list[Level]
    asks: list[Level]
    run: str = ""
    """The daemon run that made this record (see :mod:`sinks.records`); ``seq`` counts per
    (run, market). Last, with a default, so positional construction stays cheap."""
