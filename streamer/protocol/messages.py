"""Venue payload types and their decoders (sans-I/O: msgspec only, no clock).

Shapes follow limitless-api.md §2.2 (``Market``), §2.3 (REST orderbook), §3.5 (WebSocket
events) and the tolerance rules of §5:

* book levels keep their wire text: the book decoders use ``float_hook=str``, so a JSON
  number ``0.515`` and a numeric string ``"0.515"`` both arrive as ``"0.515"`` (a JSON
  integer as an ``int``), and the order-book core validates and keys them. On the
  WebSocket hot path the two sides stay raw JSON (:class:`RawOrderbook`) until the book
  core finds them different from the last ones applied.
* other money (spreads, midpoints) is :class:`decimal.Decimal`, decoded by msgspec from
  the JSON text, and checked for NaN/Infinity here, because nothing downstream does.
* uint256 token ids arrive as decimal strings or, occasionally, JSON numbers. Fields
  are typed ``str | int`` only so that msgspec accepts both (it decodes big JSON integers
  exactly); ``__post_init__`` turns an ``int`` into its decimal string at decode time,
  so a decoded id is always a ``str``. :func:`normalize_token` does the same for
  values from elsewhere.
* unknown fields are ignored everywhere (the venue adds fields freely).

Every decoder is built once, at import. ``EVENT_DECODERS`` maps a Socket.IO event name
to the decoder of its payload (the 2nd element of the event array); an event name not in
it is unknown and is counted by the caller.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, Final

import msgspec

from orderbook.types import PriceLevel

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_MS: Final = timedelta(milliseconds=1)
_MS_PER_S: Final = 1000

EPOCH_SECONDS_BELOW: Final = 1e11
"""An epoch number below this is read as seconds, above as milliseconds.

``1e11`` seconds is the year 5138, ``1e11`` milliseconds is March 1973: no real
timestamp of either unit is ambiguous.
"""

TokenId = str | int
"""A uint256 id as sent: a decimal string or a JSON integer (see :func:`normalize_token`)."""

Timestamp = datetime | int | float
"""A venue timestamp as decoded: ISO-8601 text (→ ``datetime``) or an epoch number."""


def normalize_token(value: TokenId | None) -> str | None:
    """Normalise a token id to its decimal string.

    Args:
        value: the decoded id: ``str`` (kept as is), ``int`` (from a JSON number), or ``None``.

    Returns:
        The decimal string, or ``None``.
    """
    if value is None or isinstance(value, str):
        return value
    return str(value)


def timestamp_ms(value: Timestamp) -> int:
    """Convert a decoded venue timestamp to epoch milliseconds.

    msgspec parses the ISO text into a ``datetime`` in C; the conversion is exact integer
    arithmetic (no float rounding), sub-millisecond digits are truncated. A naive ISO
    time is taken as UTC. An epoch number below :data:`EPOCH_SECONDS_BELOW` is seconds
    (fractions kept to the millisecond), otherwise milliseconds.

    Args:
        value: a ``datetime`` or an epoch ``int``/``float`` as decoded.

    Returns:
        Epoch milliseconds.

    Raises:
        ValueError: the number is not finite.
    """
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return (value - _EPOCH) // _ONE_MS
    if not math.isfinite(value):
        raise ValueError("timestamp must be a finite number")
    if abs(value) < EPOCH_SECONDS_BELOW:
        return round(value * _MS_PER_S)
    return int(value)


def _normalize_field(struct: msgspec.Struct, name: str) -> None:
    value = getattr(struct, name)
    if isinstance(value, int):
        # The struct is frozen; force_setattr is msgspec's hook for __post_init__ fix-ups.
        msgspec.structs.force_setattr(struct, name, str(value))


def _check_finite(name: str, value: Decimal | None) -> None:
    if value is not None and not value.is_finite():
        raise ValueError(f"{name} must be a finite number")


class OrderbookPayload(msgspec.Struct, frozen=True, gc=False):
    """A full book of one market's YES token (REST §2.3 and the WS ``orderbook`` field).

    ``bids``/``asks`` are required (an absent side is a malformed payload, not an empty
    book: treating it as empty would wipe the local book). Level ``side`` fields, in any
    casing or absent, are ignored by :class:`~orderbook.types.PriceLevel`.

    Attributes:
        bids: bid levels, venue order (best first).
        asks: ask levels, venue order (best first).
        tokenId: YES token id, a decimal string (a JSON number is converted).
        adjustedMidpoint: midpoint, number or numeric string.
        maxSpread: max rewarded spread, number or numeric string.
        minSize: minimum size (raw units, scale unconfirmed), number or numeric string.
        lastTradePrice: ``None`` when the market never traded.
    """

    bids: list[PriceLevel]
    asks: list[PriceLevel]
    tokenId: TokenId | None = None
    adjustedMidpoint: Decimal | None = None
    maxSpread: Decimal | None = None
    minSize: Decimal | None = None
    lastTradePrice: Decimal | None = None

    def __post_init__(self) -> None:
        # msgspec turns a ValueError raised here into a ValidationError of the decode.
        _normalize_field(self, "tokenId")
        _check_finite("adjustedMidpoint", self.adjustedMidpoint)
        _check_finite("maxSpread", self.maxSpread)
        _check_finite("minSize", self.minSize)
        _check_finite("lastTradePrice", self.lastTradePrice)

    @property
    def token_id(self) -> str | None:
        """The YES token id as a decimal string, or ``None`` when absent."""
        return normalize_token(self.tokenId)


class RawOrderbook(msgspec.Struct, frozen=True, gc=False):
    """The ``orderbook`` field of a WebSocket ``orderbookUpdate``, sides left as raw JSON.

    The book core compares each side's bytes with the last ones applied and decodes a
    side only when it changed. The scalar fields the daemon does
    not use (``adjustedMidpoint`` …) are not decoded here.

    Attributes:
        bids: the bid levels' JSON array, as received.
        asks: the ask levels' JSON array, as received.
        tokenId: YES token id as sent: a decimal string, or an ``int`` from a JSON number
            (not converted at decode: a ``__post_init__`` is a Python call per frame; read
            :attr:`token_id`, or convert an ``int`` with ``str`` as the feed does).
    """

    bids: msgspec.Raw
    asks: msgspec.Raw
    tokenId: TokenId | None = None

    @property
    def token_id(self) -> str | None:
        """The YES token id as a decimal string, or ``None`` when absent."""
        return normalize_token(self.tokenId)


class OrderbookUpdate(msgspec.Struct, frozen=True, gc=False):
    """Payload of the ``orderbookUpdate`` event (§3.5): a whole book, never a delta.

    Attributes:
        marketSlug: the market.
        orderbook: the full book, its sides as raw JSON (see :class:`RawOrderbook`).
        timestamp: ISO text or epoch number; use :attr:`ts_ms`. Required: staleness
            checks depend on it, so an update without one fails to decode (and is counted).
    """

    marketSlug: str
    orderbook: RawOrderbook
    timestamp: Timestamp

    @property
    def ts_ms(self) -> int:
        """The update time in epoch milliseconds (see :func:`timestamp_ms`)."""
        return timestamp_ms(self.timestamp)


class OrderbookEvent(msgspec.Struct, array_like=True, frozen=True, gc=False):
    """A whole Socket.IO ``orderbookUpdate`` EVENT array, ``["orderbookUpdate", payload, ...]``.

    The feed's hot path decodes the event data and the payload in one msgspec call with
    :data:`ORDERBOOK_EVENT_DECODER` (trailing elements are ignored, as the SDKs do); anything
    it cannot decode goes the generic way (event array first, then the payload) and is
    counted there.
    """

    name: str
    payload: OrderbookUpdate


class Tokens(msgspec.Struct, frozen=True):
    """The YES/NO token ids of a CLOB market (uint256 decimal strings; JSON integers are
    converted to strings at decode time)."""

    yes: TokenId | None = None
    no: TokenId | None = None

    def __post_init__(self) -> None:
        _normalize_field(self, "yes")
        _normalize_field(self, "no")


class Venue(msgspec.Struct, frozen=True):
    """Per-market contracts: ``exchange`` and the NegRisk ``adapter`` (``None`` for plain CLOB)."""

    exchange: str | None = None
    adapter: str | None = None


class Market(msgspec.Struct, frozen=True):
    """The fields of a venue market (§2.2) that the daemon needs; others are ignored.

    Attributes:
        slug: the key for the orderbook endpoint and WS subscriptions.
        id: numeric id (a string is accepted).
        title: display title.
        status: free string, e.g. ``"FUNDED"``.
        expired: lifecycle flag, may be absent.
        expirationTimestamp: epoch milliseconds.
        tradeType: ``"clob"`` or ``"amm"``.
        marketType: ``"single"`` or ``"group"`` (NegRisk).
        tokens: YES/NO token ids (CLOB).
        positionIds: the same ids as a list ``[yes, no]`` (decimal strings).
        venue: per-market exchange/adapter contracts.
        winningOutcomeIndex: set once resolved.
        markets: children of a group market (recursive), else ``None``.
        categories: category names.
        tags: tag names.
        groupSlug: the parent group's slug, when the venue sends it.
        address: legacy/AMM market contract address (``newPriceData`` key).
    """

    slug: str
    id: int | str | None = None
    title: str | None = None
    status: str | None = None
    expired: bool | None = None
    expirationTimestamp: int | None = None
    tradeType: str | None = None
    marketType: str | None = None
    tokens: Tokens | None = None
    positionIds: list[TokenId] | None = None
    venue: Venue | None = None
    winningOutcomeIndex: int | None = None
    markets: list[Market] | None = None
    categories: list[str] | None = None
    tags: list[str] | None = None
    groupSlug: str | None = None
    address: str | None = None

    def __post_init__(self) -> None:
        ids = self.positionIds
        if ids is not None and not all(isinstance(i, str) for i in ids):
            msgspec.structs.force_setattr(self, "positionIds", [str(i) for i in ids])

    @property
    def yes_token(self) -> str | None:
        """The YES token id as a decimal string, or ``None``."""
        return None if self.tokens is None else normalize_token(self.tokens.yes)

    @property
    def no_token(self) -> str | None:
        """The NO token id as a decimal string, or ``None``."""
        return None if self.tokens is None else normalize_token(self.tokens.no)


class ActiveMarketsPage(msgspec.Struct, frozen=True):
    """One page of ``GET /markets/active`` (§2.1)."""

    data: list[Market]
    totalMarketsCount: int | None = None


class NewPriceData(msgspec.Struct, frozen=True):
    """Payload of ``newPriceData`` (AMM price refresh, §3.5), kept minimal.

    ``updatedPrices`` is kept as raw JSON because its shape differs between the SDKs (an
    array of ``{marketId, marketAddress, yesPrice, noPrice}``) and the docs
    (``{yes, no}``); decoding it to Python objects would turn prices into floats.
    """

    marketAddress: str
    updatedPrices: msgspec.Raw = msgspec.Raw(b"null")
    blockNumber: int | None = None
    timestamp: Timestamp | None = None


class MarketCreatedPayload(msgspec.Struct, frozen=True):
    """Payload of ``marketCreated`` (lifecycle channel)."""

    slug: str
    title: str | None = None
    type: str | None = None
    groupSlug: str | None = None


class MarketResolvedPayload(msgspec.Struct, frozen=True):
    """Payload of ``marketResolved`` (lifecycle channel)."""

    slug: str
    type: str | None = None
    winningOutcome: str | None = None
    winningIndex: int | None = None


ORDERBOOK_UPDATE_DECODER: Final = msgspec.json.Decoder(OrderbookUpdate)
ORDERBOOK_EVENT_DECODER: Final = msgspec.json.Decoder(OrderbookEvent)
"""The data of a whole ``orderbookUpdate`` EVENT (see :class:`OrderbookEvent`)."""
NEW_PRICE_DATA_DECODER: Final = msgspec.json.Decoder(NewPriceData)
MARKET_CREATED_DECODER: Final = msgspec.json.Decoder(MarketCreatedPayload)
MARKET_RESOLVED_DECODER: Final = msgspec.json.Decoder(MarketResolvedPayload)

EVENT_DECODERS: Final[dict[str, msgspec.json.Decoder[Any]]] = {
    "orderbookUpdate": ORDERBOOK_UPDATE_DECODER,
    "newPriceData": NEW_PRICE_DATA_DECODER,
    "marketCreated": MARKET_CREATED_DECODER,
    "marketResolved": MARKET_RESOLVED_DECODER,
}
"""Decoder per known server event name; decode the event's ``msgspec.Raw`` payload."""

MARKET_DECODER: Final = msgspec.json.Decoder(Market)
"""``GET /markets/{slug}``."""

ACTIVE_PAGE_DECODER: Final = msgspec.json.Decoder(ActiveMarketsPage)
"""``GET /markets/active``."""

ORDERBOOK_DECODER: Final = msgspec.json.Decoder(OrderbookPayload, float_hook=str)
"""``GET /markets/{slug}/orderbook``."""
