"""Socket.IO v5 packet codec (sans-I/O).

A Socket.IO v5 packet rides inside an Engine.IO ``4`` (message) packet. Its text
grammar (SIO v5 §packet encoding, https://socket.io/docs/v4/socket.io-protocol/)::

    <type>[<namespace>,][<ack id>][<json data>]

The namespace and its comma come *before* the ack id, and are omitted for the main
namespace ``/``: ``42/markets,7["unsubscribe",{...}]`` is an EVENT on ``/markets``
asking for ack 7. (The Rust SDK writes ``427/markets,[...]``; a standard parser reads
that as namespace ``/``, ack id 7 and data ``/markets,[...]``, which is what
:func:`decode_packet` returns too.)

Decoding is two-stage. :func:`decode_packet` splits the header and leaves the JSON
data as text; the type-specific helpers (:func:`decode_event`, :func:`decode_ack`,
:func:`decode_connect`, :func:`decode_connect_error`) then validate it. Event
payloads stay :class:`msgspec.Raw`: the caller decodes them with a decoder chosen by
event name, so each ``orderbookUpdate`` is parsed exactly once.

Binary packets (types 5 and 6) need attachments in binary websocket frames, which
this API never uses; they are rejected. Errors raise
:class:`~streamer.errors.ProtocolError`, except in the ``encode_*`` functions, whose
:class:`ValueError` means the caller passed something that cannot be encoded.
"""

from __future__ import annotations

from enum import IntEnum
from typing import Final, NamedTuple

import msgspec

from streamer.errors import ProtocolError

__all__ = [
    "MAIN_NAMESPACE",
    "NULL",
    "Packet",
    "PacketType",
    "decode_ack",
    "decode_connect",
    "decode_connect_error",
    "decode_event",
    "decode_packet",
    "encode_event_data",
    "encode_packet",
    "header",
]


class PacketType(IntEnum):
    """Socket.IO v5 packet types (SIO v5 §packet types)."""

    CONNECT = 0
    DISCONNECT = 1
    EVENT = 2
    ACK = 3
    CONNECT_ERROR = 4
    BINARY_EVENT = 5
    BINARY_ACK = 6


class Packet(NamedTuple):
    """One Socket.IO packet with its JSON data still as text.

    Attributes:
        type: the packet type.
        namespace: ``"/"`` for the main namespace, else e.g. ``"/markets"``.
        ack_id: the acknowledgement id, or ``None``.
        data: the JSON data text, ``""`` when the packet has none.
    """

    type: PacketType
    namespace: str = "/"
    ack_id: int | None = None
    data: str = ""


MAIN_NAMESPACE: Final = "/"
NULL: Final = msgspec.Raw(b"null")
"""Payload substituted when an event or ack array has no payload element."""

# An ack id longer than this is not a JavaScript safe integer; refusing it also keeps
# int() away from its 4300-digit limit (ValueError) on hostile input.
_MAX_ACK_DIGITS: Final = 15
_DIGITS: Final = frozenset("0123456789")
_TYPE_BY_CHAR: Final[dict[str, PacketType]] = {str(int(t)): t for t in PacketType}
_BINARY_TYPES: Final = frozenset({PacketType.BINARY_EVENT, PacketType.BINARY_ACK})


class _EventArray(msgspec.Struct, array_like=True):
    """``["name", payload, ...]``; trailing elements are ignored, as the SDKs do."""

    name: str
    payload: msgspec.Raw = NULL


class _AckArray(msgspec.Struct, array_like=True):
    """``[reply, ...]``; the first element is the reply, the rest are ignored."""

    reply: msgspec.Raw = NULL


class _ConnectData(msgspec.Struct):
    """``{"sid": "..."}`` sent by the server on a successful namespace connect."""

    sid: str | None = None


# What msgspec raises on bad input: malformed or mistyped JSON, a str holding a lone
# surrogate (cannot be viewed as UTF-8), and JSON nested deeper than its recursion limit.
_DECODE_ERRORS: Final = (msgspec.DecodeError, UnicodeEncodeError, RecursionError)
_EVENT_DECODER: Final = msgspec.json.Decoder(_EventArray)
_ACK_DECODER: Final = msgspec.json.Decoder(_AckArray)
_CONNECT_DECODER: Final = msgspec.json.Decoder(_ConnectData)
_ANY_DECODER: Final = msgspec.json.Decoder()
_ENCODER: Final = msgspec.json.Encoder()


def header(packet_type: PacketType, namespace: str = MAIN_NAMESPACE) -> str:
    """Return the packet header up to the ack id: type digit plus ``<nsp>,``.

    ``"2" + "/markets,"`` is the prefix every ``/markets`` EVENT without an ack id
    starts with; the session precomputes it for its hot path.

    Args:
        packet_type: the packet type.
        namespace: the namespace; ``"/"`` adds nothing (SIO v5 §packet encoding).

    Returns:
        The header text.
    """
    if namespace == MAIN_NAMESPACE:
        return str(int(packet_type))
    return f"{int(packet_type)}{namespace},"


def decode_packet(text: str) -> Packet:
    """Split a Socket.IO packet into type, namespace, ack id and raw data.

    Call the helper for the packet type next (:func:`decode_event` for EVENT, ...).
    The data is not parsed here, so packets for other namespaces cost nothing more.

    Args:
        text: the Engine.IO message data, i.e. the frame without its leading ``4``.

    Returns:
        The packet header fields and the data text.

    Raises:
        ProtocolError: empty text, an unknown type digit, a binary packet type,
            or an ack id too long to be a JavaScript safe integer.
    """
    if not text:
        raise ProtocolError("empty socket.io packet")
    packet_type = _TYPE_BY_CHAR.get(text[0])
    if packet_type is None:
        raise ProtocolError(f"unknown socket.io packet type {text[0]!r}")
    if packet_type in _BINARY_TYPES:
        raise ProtocolError(f"unsupported binary socket.io packet type {packet_type.name}")
    namespace = MAIN_NAMESPACE
    start = 1
    if text.startswith("/", 1):
        # SIO v5: the namespace runs to the first comma, or to the end of the packet.
        comma = text.find(",", 1)
        end = len(text) if comma < 0 else comma
        namespace = text[1:end]
        start = end + 1
    ack_id, start = _scan_ack_id(text, start)
    return Packet(packet_type, namespace, ack_id, text[start:])


def _scan_ack_id(text: str, start: int) -> tuple[int | None, int]:
    """Read the ASCII digits at ``text[start:]`` (``str.isdigit`` accepts too much)."""
    end = start
    while end < len(text) and text[end] in _DIGITS:
        end += 1
    if end == start:
        return None, start
    if end - start > _MAX_ACK_DIGITS:
        raise ProtocolError(f"socket.io ack id longer than {_MAX_ACK_DIGITS} digits")
    return int(text[start:end]), end


def encode_packet(packet: Packet) -> str:
    """Encode a packet; the inverse of :func:`decode_packet`.

    Args:
        packet: the packet. ``data`` must already be JSON text (or ``""``).

    Returns:
        The packet text, to be wrapped in an Engine.IO ``4``.

    Raises:
        ValueError: the namespace does not start with ``/`` or contains a comma,
            the ack id is negative, or the data starts with a digit or ``/``
            (a JSON number there would be read back as an ack id or namespace).
    """
    namespace = packet.namespace
    if not namespace.startswith("/") or "," in namespace:
        raise ValueError(f"invalid socket.io namespace {namespace!r}")
    if packet.ack_id is not None and packet.ack_id < 0:
        raise ValueError(f"negative socket.io ack id {packet.ack_id}")
    if packet.data[:1] in _DIGITS or packet.data.startswith("/"):
        raise ValueError("socket.io data must not start with a digit or '/'")
    ack = "" if packet.ack_id is None else str(packet.ack_id)
    return f"{header(packet.type, namespace)}{ack}{packet.data}"


def decode_event(data: str) -> tuple[str, msgspec.Raw]:
    """Decode EVENT data ``["name", payload, ...]`` without decoding the payload.

    This is the hot path (hundreds of ``orderbookUpdate`` per second): one msgspec
    decode with a decoder built at import. The caller decodes the payload next, with
    the decoder registered for the event name.

    Args:
        data: the JSON data of an EVENT packet.

    Returns:
        The event name and the payload as :class:`msgspec.Raw` (:data:`NULL` when the
        array has no second element; elements after the second are ignored).

    Raises:
        ProtocolError: the data is not JSON, not a non-empty array, or its first
            element is not a string.
    """
    try:
        event = _EVENT_DECODER.decode(data)
    except _DECODE_ERRORS as exc:
        raise ProtocolError(f"bad socket.io event: {exc}") from exc
    return event.name, event.payload


def decode_ack(data: str) -> msgspec.Raw:
    """Decode ACK data ``[reply, ...]`` and return the reply undecoded.

    Args:
        data: the JSON data of an ACK packet.

    Returns:
        The first array element, or :data:`NULL` for an empty array.

    Raises:
        ProtocolError: the data is not a JSON array.
    """
    try:
        return _ACK_DECODER.decode(data).reply
    except _DECODE_ERRORS as exc:
        raise ProtocolError(f"bad socket.io ack: {exc}") from exc


def decode_connect(data: str) -> str | None:
    """Decode the server's CONNECT data ``{"sid": "..."}``.

    Tolerant like the Rust SDK, which only checks the ``40/markets,`` prefix: no data
    or an object without ``sid`` yields ``None``.

    Args:
        data: the JSON data of a CONNECT packet from the server.

    Returns:
        The namespace session id, or ``None``.

    Raises:
        ProtocolError: the data is present but not a JSON object with an optional
            string ``sid`` (SIO v5: CONNECT data must be an object).
    """
    if not data:
        return None
    try:
        return _CONNECT_DECODER.decode(data).sid
    except _DECODE_ERRORS as exc:
        raise ProtocolError(f"bad socket.io connect: {exc}") from exc


def decode_connect_error(data: str) -> str:
    """Extract a human-readable message from CONNECT_ERROR data. Never raises.

    SIO v5 sends ``{"message": "...", "data": ...}``; v4 servers sent a bare string.
    Anything else (other JSON, invalid JSON, nothing) is returned as text so that the
    refusal is still reported.

    Args:
        data: the data of a CONNECT_ERROR packet.

    Returns:
        The ``message`` string, the bare string, or the data text itself.
    """
    try:
        value = _ANY_DECODER.decode(data)
    except _DECODE_ERRORS:
        return data
    if isinstance(value, dict):
        value = value.get("message", data)
    return value if isinstance(value, str) else _ENCODER.encode(value).decode()


def encode_event_data(name: str, payload: str | None = None) -> str:
    """Build EVENT data ``["name",payload]`` (or ``["name"]`` without payload).

    Args:
        name: the event name, e.g. ``"subscribe_market_prices"``.
        payload: already-encoded JSON text, inserted verbatim.

    Returns:
        The JSON array text.

    Raises:
        ValueError: the name cannot be encoded as UTF-8 (a lone surrogate).
    """
    try:
        encoded_name = _ENCODER.encode(name).decode()
    except UnicodeEncodeError as exc:
        raise ValueError(f"event name is not valid unicode: {exc}") from exc
    if payload is None:
        return f"[{encoded_name}]"
    return f"[{encoded_name},{payload}]"
