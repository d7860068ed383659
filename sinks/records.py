"""The daemon's output records (schema version 1) and their one shared encoder.

Every record is a msgspec Struct tagged by ``type``; one record encodes to one JSON
object on one line. Decimals encode as JSON strings (``"0.515"``) so no consumer's
JSON parser can round a price; big token ids are strings too.

Types: ``book`` and ``book_delta`` (from :mod:`orderbook.types`), ``market``,
``status``, and the pass-through records ``price_data``, ``market_created`` and
``market_resolved`` whose ``data`` field is the venue payload, byte for byte.
"""

from __future__ import annotations

from typing import Final

import msgspec

from orderbook.types import SCHEMA_VERSION, Book, BookDelta

__all__ = [
    "SCHEMA_VERSION",
    "Book",
    "BookDelta",
    "MarketInfo",
    "Status",
    "PriceData",
    "MarketCreated",
    "MarketResolved",
    "Record",
    "RECORD_TYPES",
    "encode_line",
    "decode_record",
]


class MarketInfo(msgspec.Struct, frozen=True, tag_field="type", tag="market"):
    """Market metadata, emitted on bootstrap and whenever discovery sees a change."""

    v: int
    market: str
    recv_ts: int
    title: str
    token: str | None
    tokens: dict[str, str]
    exchange: str | None
    adapter: str | None
    status: str | None
    expiration: int | None
    trade_type: str | None = None
    group: str | None = None
    event: str = "added"
    """``added``, ``updated`` or ``removed`` (expired, resolved or no longer active)."""


class Status(msgspec.Struct, frozen=True, omit_defaults=True, tag_field="type", tag="status"):
    """Feed status: ``connected``, ``disconnected``, ``resubscribed``, ``reseeded`` …"""

    v: int
    state: str
    recv_ts: int
    reason: str | None = None
    market: str | None = None
    markets: int | None = None
    attempt: int | None = None


class PriceData(msgspec.Struct, frozen=True, tag_field="type", tag="price_data"):
    """Pass-through of an AMM ``newPriceData`` event."""

    v: int
    recv_ts: int
    market: str | None
    data: msgspec.Raw


class MarketCreated(msgspec.Struct, frozen=True, tag_field="type", tag="market_created"):
    """Pass-through of a ``marketCreated`` lifecycle event."""

    v: int
    recv_ts: int
    market: str | None
    data: msgspec.Raw


class MarketResolved(msgspec.Struct, frozen=True, tag_field="type", tag="market_resolved"):
    """Pass-through of a ``marketResolved`` lifecycle event."""

    v: int
    recv_ts: int
    market: str | None
    data: msgspec.Raw


Record = Book | BookDelta | MarketInfo | Status | PriceData | MarketCreated | MarketResolved

RECORD_TYPES: Final = ("book", "book_delta", "market", "status", "price_data",
                       "market_created", "market_resolved")

_ENCODER: Final = msgspec.json.Encoder()
_DECODER: Final = msgspec.json.Decoder(Record)


def encode_line(record: Record, buffer: bytearray) -> None:
    """Append ``record`` as one JSON line (with ``\\n``) to ``buffer``."""
    _ENCODER.encode_into(record, buffer, -1)
    buffer.extend(b"\n")


def encode(record: Record) -> bytes:
    """One record as JSON bytes, without a newline."""
    return _ENCODER.encode(record)


def decode_record(line: bytes | str) -> Record:
    """Parse one NDJSON line back into its record (consumer side, tests, ``tail``).

    Raises:
        msgspec.DecodeError / msgspec.ValidationError: not a valid v1 record.
    """
    return _DECODER.decode(line)
