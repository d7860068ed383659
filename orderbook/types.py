"""Value types shared by the order-book core, the feed and the sinks.

Prices and sizes are kept as their wire text: a JSON number is decoded with
``float_hook=str`` (so ``0.515`` on the wire is ``"0.515"`` here), a numeric string
as is, and the same text goes out. Comparisons use exact integer keys made from
that text (:mod:`orderbook.book`); no float ever touches a price.

:class:`Book` and :class:`BookDelta` are the output records of the book core:
they are what the daemon emits (NDJSON ``type`` ``book`` and ``book_delta``),
so the hot path builds them once and hands the same object to every sink.
"""

from __future__ import annotations

from typing import Annotated, Any, Final, NewType

import msgspec

SCHEMA_VERSION: Final = 1

MarketSlug = NewType("MarketSlug", str)

DecimalText = Annotated[str, msgspec.Meta(extra_json_schema={"format": "decimal"})]
"""A price or size as its wire text, a plain decimal such as ``"0.515"``."""

Level = tuple[DecimalText, DecimalText]
"""One output level: ``(price, size)`` as wire text; size ``"0"`` in a delta means removed."""


class PriceLevel(msgspec.Struct, frozen=True, gc=False):
    """One input level as the venue sends it (REST and WebSocket).

    Extra fields such as ``side`` (``BUY``/``buy``/absent) are ignored. Decode with
    ``float_hook=str``: a JSON number then arrives as its text, a JSON integer as an
    ``int`` and a numeric string as is; the book core validates and keys them
    (anything else, ``null`` or an object say, makes the level invalid there).
    """

    price: Any
    size: Any


class BookSnapshot(msgspec.Struct, frozen=True, gc=False):
    """A full book of one market's YES token, as received.

    Attributes:
        market: market slug.
        token: YES token id (uint256 as a decimal string).
        bids: levels in any order, or the side's raw JSON array (decoded only when it
            differs from the last one applied).
        asks: likewise.
        ts: exchange time in epoch ms; ``None`` for a REST book (it has no timestamp).
        recv_ts: local receive time in epoch ms, stamped by the edge.
    """

    market: str
    token: str
    bids: list[PriceLevel] | msgspec.Raw
    asks: list[PriceLevel] | msgspec.Raw
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
    best_bid: DecimalText | None
    best_ask: DecimalText | None
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
    best_bid: DecimalText | None
    best_ask: DecimalText | None
    bids: list[Level]
    asks: list[Level]
    run: str = ""
    """The daemon run that made this record (see :mod:`sinks.records`); ``seq`` counts per
    (run, market). Last, with a default, so positional construction stays cheap."""
