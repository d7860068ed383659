"""Engine.IO v4 text-packet codec (sans-I/O).

Engine.IO v4 ("EIO v4", https://socket.io/docs/v4/engine-io-protocol/) frames every
packet as one type character followed by optional data. Over a direct websocket
connection each websocket text message carries exactly one packet, so there is no
``\\x1e`` payload batching to undo here (EIO v4 §websocket transport).

=====  =========  ==================================================================
Char   Packet     Use on the Limitless feed (API reference §3.2)
=====  =========  ==================================================================
``0``  open       server → client, first frame; JSON handshake data
``1``  close      either side
``2``  ping       server → client every ``pingInterval`` ms (reversed since v3)
``3``  pong       client → server, the answer to each ping, no data
``4``  message    carries one Socket.IO packet (see :mod:`streamer.protocol.socketio`)
``5``  upgrade    unused on a direct websocket connection
``6``  noop       unused on a direct websocket connection
=====  =========  ==================================================================

This module only converts between strings and values. It keeps no state, reads no
clock and performs no I/O; :class:`streamer.protocol.session.SocketIOProtocol` drives it.
Decoding errors raise :class:`~streamer.errors.ProtocolError`: the peer sent something
that is not EIO v4.
"""

from __future__ import annotations

from enum import IntEnum
from typing import Annotated, Final, NamedTuple

import msgspec

from streamer.errors import ProtocolError

__all__ = [
    "OpenPacket",
    "Packet",
    "PacketType",
    "PING_FRAME",
    "PONG_FRAME",
    "decode_open",
    "decode_packet",
    "encode_open",
    "encode_packet",
]


class PacketType(IntEnum):
    """Engine.IO v4 packet types (EIO v4 §packet encoding)."""

    OPEN = 0
    CLOSE = 1
    PING = 2
    PONG = 3
    MESSAGE = 4
    UPGRADE = 5
    NOOP = 6


class Packet(NamedTuple):
    """One decoded Engine.IO packet.

    Attributes:
        type: the packet type.
        data: everything after the type character (``""`` when absent). For
            :attr:`PacketType.MESSAGE` this is the Socket.IO packet text.
    """

    type: PacketType
    data: str = ""


_Positive = Annotated[int, msgspec.Meta(gt=0)]


class OpenPacket(msgspec.Struct, frozen=True, rename="camel"):
    """Handshake data of the EIO v4 open packet (``0{...}``).

    Wire names are camelCase (``pingInterval``); attributes are snake_case and keep
    the wire unit (milliseconds, bytes). Unknown keys are ignored for forward
    compatibility; ``upgrades`` is optional because a websocket-only client never
    upgrades. Every other field is required: a handshake without them is unusable.

    Attributes:
        sid: Engine.IO session id.
        ping_interval: server ping period in milliseconds.
        ping_timeout: grace after a missed ping, in milliseconds.
        max_payload: largest frame, in bytes, the server accepts from us.
        upgrades: transports the server offers to upgrade to (always ``()`` here).
    """

    sid: str
    ping_interval: _Positive
    ping_timeout: _Positive
    max_payload: _Positive
    upgrades: tuple[str, ...] = ()


PING_FRAME: Final = "2"
PONG_FRAME: Final = "3"

_TYPE_BY_CHAR: Final[dict[str, PacketType]] = {str(int(t)): t for t in PacketType}
# What msgspec raises on bad input: malformed or mistyped JSON, a str holding a lone
# surrogate (cannot be viewed as UTF-8), and JSON nested deeper than its recursion limit.
_DECODE_ERRORS: Final = (msgspec.DecodeError, UnicodeEncodeError, RecursionError)
_OPEN_DECODER: Final = msgspec.json.Decoder(OpenPacket)
_OPEN_ENCODER: Final = msgspec.json.Encoder()


def decode_packet(frame: str) -> Packet:
    """Split one websocket text frame into an Engine.IO packet.

    Only the type character is validated; the data is returned untouched. Call
    :func:`decode_open` next for :attr:`PacketType.OPEN`, or
    :func:`streamer.protocol.socketio.decode_packet` for :attr:`PacketType.MESSAGE`.

    Args:
        frame: the complete text of one websocket message.

    Returns:
        The packet type and its data.

    Raises:
        ProtocolError: the frame is empty or its first character is not one of
            the seven EIO v4 packet types (the reference parser treats any other
            type, binary ``b`` prefix included, as an error packet).
    """
    if not frame:
        raise ProtocolError("empty engine.io frame")
    packet_type = _TYPE_BY_CHAR.get(frame[0])
    if packet_type is None:
        raise ProtocolError(f"unknown engine.io packet type {frame[0]!r}")
    return Packet(packet_type, frame[1:])


def encode_packet(packet_type: PacketType, data: str = "") -> str:
    """Encode one Engine.IO packet as the text of one websocket message.

    Args:
        packet_type: the packet type.
        data: packet data, e.g. a Socket.IO packet for :attr:`PacketType.MESSAGE`.

    Returns:
        The frame text; ``decode_packet(encode_packet(t, d)) == Packet(t, d)``.
    """
    return f"{int(packet_type)}{data}"


def decode_open(data: str) -> OpenPacket:
    """Decode the JSON handshake carried by an EIO v4 open packet.

    Args:
        data: the packet data, i.e. the frame without its leading ``0``.

    Returns:
        The validated handshake values.

    Raises:
        ProtocolError: the data is not JSON, not an object, misses ``sid``,
            ``pingInterval``, ``pingTimeout`` or ``maxPayload``, or has a value of
            the wrong type or a non-positive number.
    """
    try:
        return _OPEN_DECODER.decode(data)
    except _DECODE_ERRORS as exc:
        raise ProtocolError(f"bad engine.io open packet: {exc}") from exc


def encode_open(packet: OpenPacket) -> str:
    """Encode a complete open frame (``0{...}``), as a server sends it.

    The client never sends this; the simulator and tests do.

    Args:
        packet: the handshake values.

    Returns:
        The frame text, with camelCase keys.
    """
    return encode_packet(PacketType.OPEN, _OPEN_ENCODER.encode(packet).decode())
