"""The daemon's output records (schema version 1) and their one shared encoder.

Every record is a msgspec Struct tagged by ``type``; one record encodes to one JSON
object on one line. Decimals encode as JSON strings (``"0.515"``) so no consumer's
JSON parser can round a price; big token ids are strings too.

Types: ``book`` and ``book_delta`` (from :mod:`orderbook.types`), ``market``,
``status``, and the pass-through records ``price_data``, ``market_created`` and
``market_resolved`` whose ``data`` field is the venue payload, byte for byte.

Private (authenticated) records: ``order_event``, ``position``, ``tx`` (normalised
fields plus ``data``, the venue payload byte for byte), ``private_raw`` (a private
payload whose shape was not understood, passed through rather than dropped) and
``allowance`` (a partner sub-account's allowance readiness, emitted on change).

Run identity: every record carries ``run``, one id per *run* of the daemon, i.e. per start
(and, under ``--lease``, per lease acquisition). ``seq`` counts per (run, market) from 1 and
every market's first record in a run is a ``book``, so a consumer that sees a new run for a
market starts that market over from its ``book`` (:mod:`orderbook.replay`). Ids are
UUIDv7-style (:func:`new_run_id`): unique without coordination, and time-ordered for humans.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from decimal import Decimal
from typing import Final, get_args

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
    "OrderEvent",
    "Position",
    "Tx",
    "PrivateRaw",
    "AllowanceTarget",
    "Allowance",
    "Record",
    "RECORD_TYPES",
    "encode_line",
    "encode_lines",
    "record_type",
    "decode_record",
    "new_run_id",
    "STATUS_STATES",
    "MARKET_EVENTS",
]

STATUS_STATES: Final = ("connected", "subscribed", "resubscribed", "disconnected",
                        "divergence", "reseeded", "lease_acquired")
"""Every ``status.state`` the daemon emits (an enum in the schema: a new one bumps ``v``)."""
MARKET_EVENTS: Final = ("added", "updated", "removed")
"""Every ``market.event``."""


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
    run: str = ""


class Status(msgspec.Struct, frozen=True, omit_defaults=True, tag_field="type", tag="status"):
    """Feed status: ``connected``, ``disconnected``, ``resubscribed``, ``reseeded`` …"""

    v: int
    state: str
    recv_ts: int
    reason: str | None = None
    market: str | None = None
    markets: int | None = None
    attempt: int | None = None
    run: str = ""


class PriceData(msgspec.Struct, frozen=True, tag_field="type", tag="price_data"):
    """Pass-through of an AMM ``newPriceData`` event."""

    v: int
    recv_ts: int
    market: str | None
    data: msgspec.Raw
    run: str = ""


class MarketCreated(msgspec.Struct, frozen=True, tag_field="type", tag="market_created"):
    """Pass-through of a ``marketCreated`` lifecycle event."""

    v: int
    recv_ts: int
    market: str | None
    data: msgspec.Raw
    run: str = ""


class MarketResolved(msgspec.Struct, frozen=True, tag_field="type", tag="market_resolved"):
    """Pass-through of a ``marketResolved`` lifecycle event."""

    v: int
    recv_ts: int
    market: str | None
    data: msgspec.Raw
    run: str = ""


class OrderEvent(msgspec.Struct, frozen=True, tag_field="type", tag="order_event"):
    """One ``orderEvent`` of the private order channel (OME or SETTLEMENT), normalised.

    Every field but ``v``/``recv_ts``/``data`` is ``null`` when the venue did not send it.
    ``event_type`` is the venue's ``type`` (``PLACEMENT``, ``MATCHED`` …); ids arrive as
    numbers or strings and are strings here; amounts are exact decimals; ``ts`` is the
    venue ``timestamp`` in epoch ms. ``data`` is the payload exactly as received.
    """

    v: int
    recv_ts: int
    source: str | None
    event_type: str | None
    event_id: str | None
    order_id: str | None
    client_order_id: str | None
    market_id: str | None
    market: str | None
    status: str | None
    side: str | None
    token: str | None
    """Outcome as sent (``YES``/``NO``); the uint256 id is ``token_id``."""
    token_id: str | None
    price: Decimal | None
    remaining_size: Decimal | None
    amount_contracts: Decimal | None
    amount_collateral: Decimal | None
    fee_amount_contracts: Decimal | None
    fee_amount_collateral: Decimal | None
    tx_hash: str | None
    ts: int | None
    data: msgspec.Raw
    run: str = ""


class Position(msgspec.Struct, frozen=True, tag_field="type", tag="position"):
    """A position: one entry of the REST portfolio snapshot, or one WS ``positions`` event.

    ``origin`` is ``snapshot`` (``GET /portfolio/positions``, on start and after every
    reconnect) or ``stream``. Snapshot records carry ``kind`` (``clob``/``amm``/``group``)
    and ``snapshot_total``, the number of records of that snapshot (an empty portfolio is
    one record with ``snapshot_total`` 0 and ``data`` null). ``data`` is the venue JSON.
    """

    v: int
    recv_ts: int
    origin: str
    kind: str | None
    market: str | None
    market_address: str | None
    snapshot_total: int | None
    data: msgspec.Raw
    run: str = ""


class Tx(msgspec.Struct, frozen=True, tag_field="type", tag="tx"):
    """One ``tx`` event of the private transactions channel, normalised (see OrderEvent)."""

    v: int
    recv_ts: int
    status: str | None
    source: str | None
    tx_hash: str | None
    market: str | None
    market_address: str | None
    token_id: str | None
    condition_id: str | None
    side: str | None
    price: Decimal | None
    amount_contracts: Decimal | None
    amount_collateral: Decimal | None
    ts: int | None
    data: msgspec.Raw
    run: str = ""


class PrivateRaw(msgspec.Struct, frozen=True, tag_field="type", tag="private_raw"):
    """A private-channel payload passed through as is (unknown shape, or a notice).

    ``event`` is the Socket.IO event name (``orderEvent``, ``authenticated``,
    ``exception`` …); ``reason`` says why it was not normalised.
    """

    v: int
    recv_ts: int
    event: str
    reason: str | None
    data: msgspec.Raw
    run: str = ""


class AllowanceTarget(msgspec.Struct, frozen=True):
    """One allowance/approval target of a partner sub-account (API reference §2.6)."""

    type: str | None
    label: str | None
    required_for: str | None
    status: str
    retryable: bool
    token_address: str | None
    spender: str | None
    error_code: str | None


class Allowance(msgspec.Struct, frozen=True, tag_field="type", tag="allowance"):
    """A partner sub-account's allowance state, emitted when readiness or a status changes.

    ``counts`` maps each target status (``confirmed``, ``missing``, ``submitted``,
    ``failed``) to how many targets have it.
    """

    v: int
    recv_ts: int
    profile_id: int
    ready: bool
    wallet: str | None
    chain_id: int | None
    counts: dict[str, int]
    targets: list[AllowanceTarget]
    run: str = ""


Record = (
    Book | BookDelta | MarketInfo | Status | PriceData | MarketCreated | MarketResolved
    | OrderEvent | Position | Tx | PrivateRaw | Allowance
)

RECORD_TYPES: Final = ("book", "book_delta", "market", "status", "price_data",
                       "market_created", "market_resolved", "order_event", "position",
                       "tx", "private_raw", "allowance")

_ENCODER: Final = msgspec.json.Encoder()
_DECODER: Final = msgspec.json.Decoder(Record)


_RECORD_TAGS: Final[dict[type, str]] = {
    cls: str(cls.__struct_config__.tag) for cls in get_args(Record)
}


def record_type(record: Record) -> str:
    """The record's ``type`` tag (``book``, ``book_delta``, ``status`` …)."""
    return _RECORD_TAGS[type(record)]


def encode_line(record: Record, buffer: bytearray) -> None:
    """Append ``record`` as one JSON line (with ``\\n``) to ``buffer``."""
    _ENCODER.encode_into(record, buffer, -1)
    buffer.extend(b"\n")


def encode_lines(records: Iterable[Record]) -> bytes:
    """``records`` as NDJSON, one line each (with ``\\n``), in one encoder call.

    Byte for byte what :func:`encode_line` appends for each record in turn.
    """
    return _ENCODER.encode_lines(records)


def encode(record: Record) -> bytes:
    """One record as JSON bytes, without a newline."""
    return _ENCODER.encode(record)


def decode_record(line: bytes | str) -> Record:
    """Parse one NDJSON line back into its record (consumer side, tests, ``tail``).

    Raises:
        msgspec.DecodeError / msgspec.ValidationError: not a valid v1 record.
    """
    record: Record = _DECODER.decode(line)
    return record


def new_run_id(now_ms: int | None = None) -> str:
    """A new run id: a UUIDv7 (RFC 9562) string, 48-bit epoch-ms time then 74 random bits.

    Made once per daemon start (and per lease acquisition); 74 random bits make a collision
    between two daemons practically impossible, with no coordination.
    """
    ms = time.time_ns() // 1_000_000 if now_ms is None else now_ms
    rand = int.from_bytes(os.urandom(10), "big")
    value = ((ms & (1 << 48) - 1) << 80) | (0x7 << 76) | ((rand >> 62) & 0xFFF) << 64
    value |= (0b10 << 62) | (rand & ((1 << 62) - 1))
    text = f"{value:032x}"
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"
