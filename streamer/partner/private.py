"""Private (authenticated) channels: order events, positions and transactions.

:class:`PrivateChannels` is a sans-I/O core the feed calls into; its only I/O is the
portfolio snapshot, made through the :class:`~streamer.transport.rest.RestClient` the
caller passes in. It never reads the clock for its decisions: every time comes in as
``recv_ts`` (epoch ms).

Wire contract (limitless-api.md §3.4/§3.5/§6):

* after every namespace connect, emit ``subscribe_positions``, ``subscribe_order_events``
  and ``subscribe_transactions`` with ``{}`` (:meth:`PrivateChannels.subscribe_frames`);
  auth rides on the upgrade headers only, signed afresh on every (re)connect;
* ``orderEvent`` (``source`` OME: PLACEMENT/UPDATE/CANCELLATION/EXECUTION; SETTLEMENT:
  MATCHED/MINED/FAILED) → ``order_event`` records, de-duplicated on ``eventId`` in a
  window bounded both by count and by age (the venue dedupes within 60 s server-side,
  but a reconnect can replay);
* ``positions`` (two documented shapes: an object with ``positions[]``, or a list of
  per-market rows) → ``position`` records; ``tx`` → ``tx`` records;
* ``authenticated`` and ``exception`` → ``private_raw`` records; an ``exception`` that
  mentions authorisation is counted as an auth rejection and logged once per session.

Numbers arrive as JSON numbers or numeric strings and become exact Decimals; NaN and
Infinity are rejected. A payload whose shape is not understood is passed through as a
``private_raw`` record (and counted), never dropped.
"""

from __future__ import annotations

import logging
import re
import time
from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any, Final, Literal

import msgspec

from orderbook.types import SCHEMA_VERSION
from sinks.records import OrderEvent, Position, PrivateRaw, Record, Tx, record_type
from streamer.errors import RestError
from streamer.ops.logutil import fields
from streamer.partner.auth import Credentials
from streamer.protocol.messages import timestamp_ms
from streamer.transport.rest import RestClient

__all__ = [
    "CHANNEL_EVENTS",
    "Channel",
    "EventIdWindow",
    "PORTFOLIO_PATH",
    "PRIVATE_EVENTS",
    "PrivateChannels",
    "PrivateSettings",
    "PrivateStats",
    "check_private_config",
]

logger = logging.getLogger(__name__)

Channel = Literal["positions", "order_events", "transactions"]

CHANNEL_EVENTS: Final[dict[str, str]] = {
    "positions": "subscribe_positions",
    "order_events": "subscribe_order_events",
    "transactions": "subscribe_transactions",
}
"""Config channel name → the Socket.IO event that subscribes it (§3.4)."""

PRIVATE_EVENTS: Final = frozenset({"orderEvent", "positions", "tx", "authenticated", "exception"})
"""Server events :meth:`PrivateChannels.handle` owns; it returns ``None`` for any other."""

PORTFOLIO_PATH: Final = "/portfolio/positions"
DEFAULT_DEDUPE_WINDOW_S: Final = 60.0
DEFAULT_DEDUPE_MAX_IDS: Final = 10_000
_EMPTY_OBJECT: Final = b"{}"
_NULL: Final = msgspec.Raw(b"null")
_MAX_NOTICE_CHARS: Final = 200
_AUTH_WORDS: Final = re.compile(r"auth|forbidden|credential|signature|\b40[13]\b", re.IGNORECASE)
_DECODE_ERRORS: Final = (msgspec.DecodeError, msgspec.ValidationError, ValueError)


class PrivateSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Private channel knobs (``[private]`` in the config file).

    Attributes:
        channels: which private channels to subscribe; empty disables them.
        snapshot: fetch ``GET /portfolio/positions`` on start and after every reconnect.
        dedupe_window_s: an ``orderEvent`` whose ``eventId`` was seen this recently
            (by local receive time) is a duplicate.
        dedupe_max_ids: at most this many ids are remembered (oldest forgotten first).
    """

    channels: tuple[Channel, ...] = ()
    snapshot: bool = True
    dedupe_window_s: float = DEFAULT_DEDUPE_WINDOW_S
    dedupe_max_ids: int = DEFAULT_DEDUPE_MAX_IDS

    def __post_init__(self) -> None:
        if len(set(self.channels)) != len(self.channels):
            raise ValueError("private.channels: a channel is listed twice")
        if not self.dedupe_window_s > 0:
            raise ValueError("private.dedupe_window_s must be > 0")
        if self.dedupe_max_ids < 1:
            raise ValueError("private.dedupe_max_ids must be >= 1")


def check_private_config(settings: PrivateSettings, credentials: Credentials | None) -> None:
    """Refuse private channels without credentials (the CLI maps this to exit 2).

    Args:
        settings: the private channel settings.
        credentials: what :func:`streamer.config.load_credentials` found, or ``None``.

    Raises:
        ValueError: channels are requested but no credentials are configured; the
            one-line message names the channels and the environment variables.
    """
    if settings.channels and credentials is None:
        raise ValueError(
            f"private.channels {', '.join(settings.channels)} need credentials: set "
            "LIMITLESS_HMAC_TOKEN_ID and LIMITLESS_HMAC_SECRET (or LIMITLESS_API_KEY)"
        )


@dataclass(slots=True)
class PrivateStats:
    """Counters of the private channels (exported as metrics by the edge).

    Attributes:
        events: private events received, by name.
        records: records produced, by record type.
        duplicates: ``orderEvent`` frames dropped as duplicates (same ``eventId``).
        decode_errors: payloads that did not decode, by event name (passed through).
        passthrough: ``private_raw`` records, by event name.
        auth_rejections: ``exception`` notices about authorisation.
        exceptions: ``exception`` notices of any kind.
        authenticated: ``authenticated`` confirmations.
        subscriptions: subscribe rounds (one per namespace connect).
        snapshots: portfolio snapshots fetched.
        snapshot_failures: portfolio snapshots that failed.
    """

    events: Counter[str] = field(default_factory=Counter)
    records: Counter[str] = field(default_factory=Counter)
    duplicates: int = 0
    decode_errors: Counter[str] = field(default_factory=Counter)
    passthrough: Counter[str] = field(default_factory=Counter)
    auth_rejections: int = 0
    exceptions: int = 0
    authenticated: int = 0
    subscriptions: int = 0
    snapshots: int = 0
    snapshot_failures: int = 0


class EventIdWindow:
    """The ids seen recently: bounded by count and by age. Pure (time is passed in).

    An id counts as a duplicate when it was first seen at most ``window_ms`` before
    ``now_ms`` and has not been pushed out by ``max_ids`` newer ids. A duplicate does
    not refresh the id's age (the venue's own window slides from the first emission).

    Args:
        max_ids: how many ids to remember at most.
        window_ms: how long an id is remembered, in ms of receive time.
    """

    def __init__(self, max_ids: int, window_ms: int) -> None:
        if max_ids < 1 or window_ms < 0:
            raise ValueError("max_ids must be >= 1 and window_ms >= 0")
        self._max_ids = max_ids
        self._window_ms = window_ms
        self._seen: OrderedDict[str, int] = OrderedDict()

    def __len__(self) -> int:
        return len(self._seen)

    def seen(self, key: str, now_ms: int) -> bool:
        """Record ``key`` at ``now_ms``; return whether it is a duplicate.

        Args:
            key: the id.
            now_ms: local receive time in epoch ms.

        Returns:
            ``True`` if ``key`` was seen within the window (not recorded again).
        """
        self._expire(now_ms)
        first = self._seen.get(key)
        if first is not None and now_ms - first <= self._window_ms:
            return True
        self._seen[key] = now_ms
        self._seen.move_to_end(key)
        while len(self._seen) > self._max_ids:
            self._seen.popitem(last=False)
        return False

    def _expire(self, now_ms: int) -> None:
        horizon = now_ms - self._window_ms
        seen = self._seen
        while seen:
            key, first = next(iter(seen.items()))
            if first >= horizon:
                return
            del seen[key]


# -- wire shapes (every field optional: the venue adds and omits fields freely) ---------

Id = str | int
Stamp = datetime | int | float


class _OrderEventWire(msgspec.Struct, frozen=True):
    source: str | None = None
    type: str | None = None
    eventId: Id | None = None
    orderId: Id | None = None
    clientOrderId: Id | None = None
    marketId: Id | None = None
    marketSlug: str | None = None
    status: str | None = None
    side: str | None = None
    token: str | None = None
    tokenId: Id | None = None
    price: Decimal | None = None
    remainingSize: Decimal | None = None
    amountContracts: Decimal | None = None
    amountCollateral: Decimal | None = None
    feeAmountContracts: Decimal | None = None
    feeAmountCollateral: Decimal | None = None
    txHash: str | None = None
    timestamp: Stamp | None = None


class _TxWire(msgspec.Struct, frozen=True):
    status: str | None = None
    source: str | None = None
    txHash: str | None = None
    marketSlug: str | None = None
    marketAddress: str | None = None
    tokenId: Id | None = None
    conditionId: str | None = None
    side: str | None = None
    price: Decimal | None = None
    amountContracts: Decimal | None = None
    amountCollateral: Decimal | None = None
    timestamp: Stamp | None = None


class _PositionRef(msgspec.Struct, frozen=True):
    marketSlug: Any = None
    marketAddress: Any = None


class _EntryRef(msgspec.Struct, frozen=True):
    market: Any = None


class _Portfolio(msgspec.Struct, frozen=True):
    clob: list[msgspec.Raw] | None = None
    amm: list[msgspec.Raw] | None = None
    group: list[msgspec.Raw] | None = None


class _Notice(msgspec.Struct, frozen=True):
    message: Any = None
    status: Any = None


_ORDER_EVENT_DECODER: Final = msgspec.json.Decoder(_OrderEventWire)
_TX_DECODER: Final = msgspec.json.Decoder(_TxWire)
_POSITIONS_DECODER: Final = msgspec.json.Decoder(_PositionRef | list[msgspec.Raw])
_POSITION_ROW_DECODER: Final = msgspec.json.Decoder(_PositionRef)
_ENTRY_DECODER: Final = msgspec.json.Decoder(_EntryRef)
_PORTFOLIO_DECODER: Final = msgspec.json.Decoder(_Portfolio)
_NOTICE_DECODER: Final = msgspec.json.Decoder(_Notice | str)
_PORTFOLIO_KINDS: Final = ("clob", "amm", "group")


def _text(value: Id | None) -> str | None:
    return None if value is None else str(value)


def _str_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _finite(*values: Decimal | None) -> None:
    for value in values:
        if value is not None and not value.is_finite():
            raise ValueError("amount is not a finite number")


def _ts(value: Stamp | None) -> int | None:
    return None if value is None else timestamp_ms(value)


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class PrivateChannels:
    """Subscribes the private channels and turns their events into records.

    One instance lives as long as the feed (the dedupe window and the stats survive
    reconnects). Per session: call :meth:`subscribe_frames` after the namespace
    connect and emit what it returns; pass every event to :meth:`handle` (``None``
    means "not mine"); fetch :meth:`snapshot` outside the read loop.

    Args:
        settings: channels and dedupe window.
        clock_ms: epoch ms for the snapshot's ``recv_ts`` (the only clock read).
    """

    def __init__(
        self, settings: PrivateSettings, *, clock_ms: Callable[[], int] = _now_ms
    ) -> None:
        self.settings = settings
        self.stats = PrivateStats()
        self._clock_ms = clock_ms
        self._window = EventIdWindow(
            settings.dedupe_max_ids, round(settings.dedupe_window_s * 1000)
        )
        self._warned_auth = False
        self._handlers: dict[str, Callable[[msgspec.Raw, int], list[Record]]] = {
            "orderEvent": self._order_event,
            "positions": self._positions,
            "tx": self._tx,
            "authenticated": self._authenticated,
            "exception": self._exception,
        }

    @property
    def enabled(self) -> bool:
        """Whether any private channel is configured."""
        return bool(self.settings.channels)

    def subscribe_frames(self) -> list[tuple[str, bytes]]:
        """The emits for one freshly connected namespace, in order.

        Call after every namespace connect (the server forgets subscriptions on
        disconnect, §3.4); emit each ``(event, payload)`` with the Socket.IO session.

        Returns:
            ``[("subscribe_positions", b"{}"), …]`` for the configured channels.
        """
        self._warned_auth = False
        if not self.settings.channels:
            return []
        self.stats.subscriptions += 1
        return [(CHANNEL_EVENTS[ch], _EMPTY_OBJECT) for ch in self.settings.channels]

    def handle(self, name: str, payload: msgspec.Raw, recv_ts: int) -> list[Record] | None:
        """Turn one private event into records.

        Args:
            name: the Socket.IO event name.
            payload: the event payload, undecoded.
            recv_ts: local receive time, epoch ms (also the dedupe clock).

        Returns:
            ``None`` if ``name`` is not a private event; otherwise the records to
            publish, possibly none (a duplicate ``orderEvent``).
        """
        handler = self._handlers.get(name)
        if handler is None:
            return None
        self.stats.events[name] += 1
        records = handler(payload, recv_ts)
        for record in records:
            self.stats.records[record_type(record)] += 1
        return records

    async def snapshot(self, rest: RestClient) -> list[Record]:
        """Fetch ``GET /portfolio/positions`` and return one ``position`` record per entry.

        Call on start and after every reconnect, outside the read loop. Records carry
        ``origin="snapshot"`` and ``snapshot_total``; an empty portfolio gives one record
        with ``snapshot_total=0``.

        Raises:
            RestError: the request failed (counted in ``snapshot_failures``).
        """
        try:
            portfolio = await rest.request(
                "GET", PORTFOLIO_PATH, endpoint=PORTFOLIO_PATH, decoder=_PORTFOLIO_DECODER
            )
        except RestError:
            self.stats.snapshot_failures += 1
            raise
        recv_ts = self._clock_ms()
        entries = [
            (kind, raw)
            for kind in _PORTFOLIO_KINDS
            for raw in getattr(portfolio, kind) or ()
        ]
        self.stats.snapshots += 1
        total = len(entries)
        if not entries:
            return [Position(SCHEMA_VERSION, recv_ts, "snapshot", None, None, None, 0, _NULL)]
        records: list[Record] = []
        for kind, raw in entries:
            slug, address = _entry_market(raw)
            records.append(
                Position(SCHEMA_VERSION, recv_ts, "snapshot", kind, slug, address, total, raw)
            )
        self.stats.records["position"] += len(records)
        return records

    # -- handlers ---------------------------------------------------------------------

    def _order_event(self, payload: msgspec.Raw, recv_ts: int) -> list[Record]:
        try:
            wire = _ORDER_EVENT_DECODER.decode(payload)
            _finite(wire.price, wire.remainingSize, wire.amountContracts,
                    wire.amountCollateral, wire.feeAmountContracts, wire.feeAmountCollateral)
            ts = _ts(wire.timestamp)
        except _DECODE_ERRORS as exc:
            return [self._undecodable("orderEvent", payload, recv_ts, exc)]
        event_id = _text(wire.eventId)
        if event_id is not None and self._window.seen(f"{wire.source}\x00{event_id}", recv_ts):
            self.stats.duplicates += 1
            return []
        return [
            OrderEvent(
                SCHEMA_VERSION, recv_ts, wire.source, wire.type, event_id,
                _text(wire.orderId), _text(wire.clientOrderId), _text(wire.marketId),
                wire.marketSlug, wire.status, wire.side, wire.token, _text(wire.tokenId),
                wire.price, wire.remainingSize, wire.amountContracts, wire.amountCollateral,
                wire.feeAmountContracts, wire.feeAmountCollateral, wire.txHash, ts, payload,
            )
        ]

    def _tx(self, payload: msgspec.Raw, recv_ts: int) -> list[Record]:
        try:
            wire = _TX_DECODER.decode(payload)
            _finite(wire.price, wire.amountContracts, wire.amountCollateral)
            ts = _ts(wire.timestamp)
        except _DECODE_ERRORS as exc:
            return [self._undecodable("tx", payload, recv_ts, exc)]
        return [
            Tx(
                SCHEMA_VERSION, recv_ts, wire.status, wire.source, wire.txHash,
                wire.marketSlug, wire.marketAddress, _text(wire.tokenId), wire.conditionId,
                wire.side, wire.price, wire.amountContracts, wire.amountCollateral, ts, payload,
            )
        ]

    def _positions(self, payload: msgspec.Raw, recv_ts: int) -> list[Record]:
        try:
            shape = _POSITIONS_DECODER.decode(payload)
        except _DECODE_ERRORS as exc:
            return [self._undecodable("positions", payload, recv_ts, exc)]
        if isinstance(shape, _PositionRef):
            return [self._position(shape, payload, recv_ts)]
        records: list[Record] = []
        for row in shape:
            try:
                ref = _POSITION_ROW_DECODER.decode(row)
            except _DECODE_ERRORS:
                ref = _PositionRef()
            records.append(self._position(ref, row, recv_ts))
        return records

    def _position(self, ref: _PositionRef, data: msgspec.Raw, recv_ts: int) -> Position:
        return Position(
            SCHEMA_VERSION, recv_ts, "stream", None, _str_or_none(ref.marketSlug),
            _str_or_none(ref.marketAddress), None, data,
        )

    def _authenticated(self, payload: msgspec.Raw, recv_ts: int) -> list[Record]:
        self.stats.authenticated += 1
        logger.debug("private channels: server confirmed authentication")
        return [self._raw("authenticated", payload, recv_ts, "notice")]

    def _exception(self, payload: msgspec.Raw, recv_ts: int) -> list[Record]:
        self.stats.exceptions += 1
        message = _notice_text(payload)
        if _AUTH_WORDS.search(message):
            self.stats.auth_rejections += 1
            if not self._warned_auth:
                self._warned_auth = True
                logger.warning("private channels rejected by the server: %s",
                               message[:_MAX_NOTICE_CHARS], extra=fields(reason="auth_rejected"))
            return [self._raw("exception", payload, recv_ts, "auth_rejected")]
        return [self._raw("exception", payload, recv_ts, "notice")]

    # -- pass-through -------------------------------------------------------------------

    def _undecodable(
        self, name: str, payload: msgspec.Raw, recv_ts: int, exc: Exception
    ) -> PrivateRaw:
        self.stats.decode_errors[name] += 1
        logger.debug("private %s payload passed through undecoded: %s", name, exc,
                     extra=fields(reason=type(exc).__name__))
        return self._raw(name, payload, recv_ts, f"undecodable: {exc}"[:_MAX_NOTICE_CHARS])

    def _raw(self, name: str, payload: msgspec.Raw, recv_ts: int, reason: str) -> PrivateRaw:
        self.stats.passthrough[name] += 1
        return PrivateRaw(SCHEMA_VERSION, recv_ts, name, reason, payload)


def _entry_market(raw: msgspec.Raw) -> tuple[str | None, str | None]:
    """``(slug, address)`` of a portfolio entry's ``market``, when they are strings."""
    try:
        market = _ENTRY_DECODER.decode(raw).market
    except _DECODE_ERRORS:
        return None, None
    if not isinstance(market, dict):
        return None, None
    return _str_or_none(market.get("slug")), _str_or_none(market.get("address"))


def _notice_text(payload: msgspec.Raw) -> str:
    """The human part of an ``exception`` payload (``message``, else the JSON text)."""
    try:
        notice = _NOTICE_DECODER.decode(payload)
    except _DECODE_ERRORS:
        return bytes(payload).decode("utf-8", errors="replace")
    if isinstance(notice, str):
        return notice
    if isinstance(notice.message, str):
        return notice.message
    return bytes(payload).decode("utf-8", errors="replace")
