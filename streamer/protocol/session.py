"""Sans-I/O Socket.IO v5 client session over Engine.IO v4.

:class:`SocketIOProtocol` is modelled on :class:`websockets.protocol.Protocol`: the
driver feeds it every websocket text frame with :meth:`~SocketIOProtocol.receive_text`,
then sends what :meth:`~SocketIOProtocol.data_to_send` returns and dispatches what
:meth:`~SocketIOProtocol.events_received` returns. The core never performs I/O, never
reads the clock and never raises because of what the peer sent: a malformed frame
becomes a :class:`FrameRejected` event and a counter. Only our own misuse raises
(:class:`~streamer.errors.InvalidState`).

Timing stays in the driver (STYLE §3): it arms a watchdog of
``ping_interval_ms + ping_timeout_ms`` once :class:`Opened` arrives and re-arms it on
every received frame, ping included (EIO v4 §heartbeat).

Session on the wire (API reference §3.7; ``>`` client, ``<`` server)::

    < 0{"sid":"…","upgrades":[],"pingInterval":25000,"pingTimeout":20000,"maxPayload":1000000}
    > 40/markets,                               (queued automatically → state OPENING)
    < 40/markets,{"sid":"…"}                    (→ NamespaceConnected, state OPEN)
    > 42/markets,["subscribe_market_prices",{…}]          (emit)
    < 42/markets,["orderbookUpdate",{…}]        (→ EventReceived)
    < 2
    > 3                                         (queued automatically)
    > 41/markets,                               (close)
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from enum import IntEnum
from typing import Final, Literal, TypeAlias

import msgspec

from streamer.errors import InvalidState, ProtocolError
from streamer.protocol import engineio, socketio

__all__ = [
    "AckReceived",
    "ConnectRefused",
    "DisconnectReason",
    "Disconnected",
    "Event",
    "EventReceived",
    "FrameRejected",
    "MAX_REJECTED_FRAME_CHARS",
    "MessageTooBig",
    "NamespaceConnected",
    "Opened",
    "SessionStats",
    "SocketIOProtocol",
    "State",
]

logger = logging.getLogger(__name__)

MAX_REJECTED_FRAME_CHARS: Final = 200
""":attr:`FrameRejected.frame` keeps at most this many characters of the frame."""

DisconnectReason: TypeAlias = Literal["namespace_disconnect", "engineio_close", "eof"]


class State(IntEnum):
    """Lifecycle of one connection; it only moves forward."""

    CONNECTING = 0
    """Websocket open, waiting for the EIO v4 open packet."""
    OPENING = 1
    """Open packet received, namespace CONNECT sent, waiting for the server's CONNECT."""
    OPEN = 2
    """Namespace connected: events flow and :meth:`SocketIOProtocol.emit` works."""
    CLOSED = 3
    """Finished; every further frame is ignored."""


class Opened(msgspec.Struct, frozen=True):
    """The EIO v4 open packet arrived; the namespace CONNECT has been queued.

    Attributes:
        sid: Engine.IO session id.
        ping_interval_ms: server ping period.
        ping_timeout_ms: grace after a missed ping; the watchdog is the sum of both.
        max_payload: largest frame, in UTF-8 bytes, the server accepts from us.
    """

    sid: str
    ping_interval_ms: int
    ping_timeout_ms: int
    max_payload: int


class NamespaceConnected(msgspec.Struct, frozen=True):
    """The server accepted the namespace CONNECT (``40/markets,{"sid":…}``).

    Subscriptions must be (re-)emitted now: the server forgets them on disconnect.

    Attributes:
        namespace: the namespace, e.g. ``"/markets"``.
        sid: the namespace session id, ``None`` if the server sent none.
    """

    namespace: str
    sid: str | None


class ConnectRefused(msgspec.Struct, frozen=True):
    """The server refused the namespace (``44/markets,{"message":…}``); now CLOSED.

    Attributes:
        namespace: the namespace.
        message: the server's ``message``, or the raw data text when it has none.
    """

    namespace: str
    message: str


class EventReceived(msgspec.Struct, frozen=True):
    """A server event (``42/markets,["name",payload]``).

    Attributes:
        namespace: the namespace.
        name: the event name, e.g. ``"orderbookUpdate"``.
        payload: the second array element, undecoded; ``Raw(b"null")`` if absent.
    """

    namespace: str
    name: str
    payload: msgspec.Raw


class AckReceived(msgspec.Struct, frozen=True):
    """An acknowledgement (``43/markets,7[reply]``) of an :meth:`emit` with ``ack_id``.

    Attributes:
        namespace: the namespace.
        ack_id: the id passed to :meth:`SocketIOProtocol.emit`.
        payload: the first array element, undecoded; ``Raw(b"null")`` if absent.
    """

    namespace: str
    ack_id: int
    payload: msgspec.Raw


class Disconnected(msgspec.Struct, frozen=True):
    """The session ended from the server side; now CLOSED. Emitted at most once.

    Attributes:
        reason: ``"namespace_disconnect"`` (``41/markets,``, a kick),
            ``"engineio_close"`` (EIO ``1``) or ``"eof"`` (:meth:`receive_eof`).
    """

    reason: DisconnectReason


class FrameRejected(msgspec.Struct, frozen=True):
    """A malformed frame was dropped; the session continues.

    Attributes:
        reason: why, for logs and metric labels.
        frame: the first :data:`MAX_REJECTED_FRAME_CHARS` characters of the frame.
    """

    reason: str
    frame: str


Event: TypeAlias = (
    Opened
    | NamespaceConnected
    | ConnectRefused
    | EventReceived
    | AckReceived
    | Disconnected
    | FrameRejected
)


class MessageTooBig(InvalidState):
    """An emitted frame exceeds the server's ``maxPayload`` (API reference §3.2).

    Sending it would get the connection closed by the server; a subscribe list that
    does not fit is a configuration problem, so this is raised, never truncated.

    Attributes:
        size: UTF-8 length of the frame.
        max_size: the server's ``maxPayload``.
    """

    def __init__(self, size: int, max_size: int) -> None:
        self.size = size
        self.max_size = max_size
        super().__init__(size, max_size)

    def __str__(self) -> str:
        return (
            f"frame of {self.size} bytes exceeds the server's maxPayload of {self.max_size} bytes"
        )


@dataclass(slots=True)
class SessionStats:
    """Counters the edge exports as metrics. Every frame counts as received."""

    frames_received: int = 0
    frames_rejected: int = 0
    frames_ignored: int = 0
    pings: int = 0


_PONG: Final = engineio.PONG_FRAME
_EIO_MESSAGE: Final = str(int(engineio.PacketType.MESSAGE))


class SocketIOProtocol:
    """Client side of one Socket.IO v5 namespace over one Engine.IO v4 connection.

    Create one per websocket connection; it is not reusable after CLOSED. Typical use::

        proto = SocketIOProtocol(namespace="/markets")
        proto.receive_text(frame)          # for each text frame received
        for out in proto.data_to_send():   # then send these frames, in order
            ...
        for event in proto.events_received():
            ...

    Attributes:
        namespace: the Socket.IO namespace.
        state: the current :class:`State`.
        stats: counters (:class:`SessionStats`).
        sid: Engine.IO session id once opened, else ``None``.
        ping_interval_ms: from the open packet, else ``None``.
        ping_timeout_ms: from the open packet, else ``None``.
        max_payload: from the open packet, else ``None``.
    """

    def __init__(self, *, namespace: str = "/markets") -> None:
        """Start in :attr:`State.CONNECTING`; call :meth:`receive_text` next.

        Args:
            namespace: namespace to join; ``"/"`` is the main namespace.

        Raises:
            ValueError: the namespace does not start with ``/`` or contains ``,``.
        """
        if not namespace.startswith("/") or "," in namespace:
            raise ValueError(f"invalid socket.io namespace {namespace!r}")
        self.namespace: Final = namespace
        self.state = State.CONNECTING
        self.stats = SessionStats()
        self.sid: str | None = None
        self.ping_interval_ms: int | None = None
        self.ping_timeout_ms: int | None = None
        self.max_payload: int | None = None
        self._events: list[Event] = []
        self._outgoing: list[str] = []
        event_header = _EIO_MESSAGE + socketio.header(socketio.PacketType.EVENT, namespace)
        # Hot path: '42/markets,[' (the '[' excludes ack ids and, for '/', other namespaces).
        self._event_prefix: Final = event_header + "["
        self._event_data_start: Final = len(event_header)

    # -- input ------------------------------------------------------------------------

    def receive_text(self, frame: str) -> None:
        """Feed one websocket text frame (exactly one EIO v4 packet). Never raises.

        Call :meth:`data_to_send` and :meth:`events_received` next. Every frame,
        ping included, is proof of liveness for the driver's watchdog.

        Args:
            frame: the text of the websocket message.
        """
        self.stats.frames_received += 1
        if self.state is State.OPEN and frame.startswith(self._event_prefix):
            # Hot path (orderbookUpdate): one prefix check, one slice, one decode.
            try:
                name, payload = socketio.decode_event(frame[self._event_data_start :])
            except ProtocolError as exc:
                self._reject(str(exc), frame)
                return
            self._events.append(EventReceived(self.namespace, name, payload))
            return
        self._receive_other(frame)

    def event_prefix(self, name: str) -> str:
        """How every EVENT frame of ``name`` in our namespace starts (``42/markets,["name",``).

        For a caller's hot path (see :attr:`accepting_events`). ``name`` must need no JSON
        escaping.
        """
        if not name.isascii() or not name.isprintable() or '"' in name or "\\" in name:
            raise ValueError(f"event name {name!r} needs JSON escaping")
        return f'{self._event_prefix}"{name}",'

    @property
    def event_data_start(self) -> int:
        """Where the EVENT data (the JSON array) starts in a frame with :meth:`event_prefix`."""
        return self._event_data_start

    @property
    def accepting_events(self) -> bool:
        """The namespace is joined (state OPEN): EVENT frames are events now.

        For a caller's hot path that decodes a frame starting with :meth:`event_prefix`
        itself: it counts the frame in ``stats.frames_received`` as :meth:`receive_text`
        would; a frame it cannot decode goes to :meth:`receive_text` instead.
        """
        return self.state is State.OPEN

    def receive_eof(self) -> None:
        """Signal that the websocket closed. Never raises; idempotent.

        Emits ``Disconnected("eof")`` unless the session already ended (by the
        server, by :meth:`close`, or by a refused connect). Call
        :meth:`events_received` next.
        """
        if self.state is not State.CLOSED:
            self._disconnect("eof")

    # -- output -----------------------------------------------------------------------

    def emit(self, event: str, payload: bytes | None = None, *, ack_id: int | None = None) -> None:
        """Queue an EVENT ``42<nsp>,[<ack id>]["event",<payload>]`` (SIO v5 §EVENT).

        Call :meth:`data_to_send` next. An ``ack_id`` asks the server for an
        acknowledgement, delivered later as :class:`AckReceived`.

        Args:
            event: event name, e.g. ``"subscribe_market_prices"``.
            payload: the argument, already encoded as JSON (inserted verbatim after
                validation), or ``None`` for an event without argument.
            ack_id: non-negative acknowledgement id, or ``None``.

        Raises:
            InvalidState: the state is not OPEN, or the arguments cannot be encoded
                (payload not UTF-8 JSON, negative ack id, lone surrogate in the name).
            MessageTooBig: the frame is longer than the server's ``maxPayload``.
        """
        if self.state is not State.OPEN:
            raise InvalidState(f"cannot emit {event!r} in state {self.state.name}")
        try:
            data = socketio.encode_event_data(event, _payload_text(payload))
            frame = _EIO_MESSAGE + socketio.encode_packet(
                socketio.Packet(socketio.PacketType.EVENT, self.namespace, ack_id, data)
            )
        except ValueError as exc:
            raise InvalidState(f"cannot encode event {event!r}: {exc}") from exc
        size = len(frame.encode())
        assert self.max_payload is not None  # set before OPEN
        if size > self.max_payload:
            raise MessageTooBig(size, self.max_payload)
        self._outgoing.append(frame)

    def close(self) -> None:
        """Leave the namespace and move to CLOSED. Idempotent; never raises.

        Queues ``41<nsp>,`` (SIO v5 §DISCONNECT) when the namespace is connected.
        Call :meth:`data_to_send` next, send it, then close the websocket. No
        :class:`Disconnected` event is emitted for a close we initiated.
        """
        if self.state is State.OPEN:
            self._outgoing.append(
                _EIO_MESSAGE + socketio.header(socketio.PacketType.DISCONNECT, self.namespace)
            )
        self._set_state(State.CLOSED)

    def events_received(self) -> list[Event]:
        """Return the events produced since the last call, and forget them.

        Returns:
            Events in arrival order.
        """
        events, self._events = self._events, []
        return events

    def data_to_send(self) -> list[str]:
        """Return the frames to send since the last call, and forget them.

        Returns:
            Websocket text frames to send, in order.
        """
        frames, self._outgoing = self._outgoing, []
        return frames

    # -- Engine.IO dispatch -------------------------------------------------------------

    def _receive_other(self, frame: str) -> None:
        """Everything but the hot path: decode the EIO v4 packet and dispatch it."""
        if self.state is State.CLOSED:
            self.stats.frames_ignored += 1
            return
        try:
            packet = engineio.decode_packet(frame)
        except ProtocolError as exc:
            self._reject(str(exc), frame)
            return
        packet_type = packet.type
        if packet_type is engineio.PacketType.MESSAGE:
            self._receive_message(packet.data, frame)
        elif packet_type is engineio.PacketType.PING:
            # EIO v4 §heartbeat: the server pings, the client answers at once.
            self.stats.pings += 1
            self._outgoing.append(_PONG)
        elif packet_type is engineio.PacketType.OPEN:
            self._receive_open(packet.data, frame)
        elif packet_type is engineio.PacketType.CLOSE:
            self._disconnect("engineio_close")
        else:
            # pong, upgrade, noop: nothing to do on a websocket-only client.
            self.stats.frames_ignored += 1

    def _receive_open(self, data: str, frame: str) -> None:
        """EIO v4 open: record the heartbeat numbers, join the namespace."""
        if self.state is not State.CONNECTING:
            self.stats.frames_ignored += 1  # a second open packet
            return
        try:
            opened = engineio.decode_open(data)
        except ProtocolError as exc:
            self._reject(str(exc), frame)
            return
        self.sid = opened.sid
        self.ping_interval_ms = opened.ping_interval
        self.ping_timeout_ms = opened.ping_timeout
        self.max_payload = opened.max_payload
        self._events.append(
            Opened(opened.sid, opened.ping_interval, opened.ping_timeout, opened.max_payload)
        )
        # SIO v5 §CONNECT: no auth payload; auth rides on the upgrade headers (§3.1).
        self._outgoing.append(
            _EIO_MESSAGE + socketio.header(socketio.PacketType.CONNECT, self.namespace)
        )
        self._set_state(State.OPENING)

    # -- Socket.IO dispatch -------------------------------------------------------------

    def _receive_message(self, text: str, frame: str) -> None:
        """EIO v4 message: decode the SIO v5 header and dispatch on its type."""
        if self.state is State.CONNECTING:
            self.stats.frames_ignored += 1  # no Socket.IO before the EIO handshake
            return
        try:
            packet = socketio.decode_packet(text)
            if packet.namespace != self.namespace:
                self.stats.frames_ignored += 1
                return
            self._dispatch(packet)
        except ProtocolError as exc:
            self._reject(str(exc), frame)

    def _dispatch(self, packet: socketio.Packet) -> None:
        """Act on one SIO v5 packet for our namespace (OPENING or OPEN).

        Raises:
            ProtocolError: its data is malformed; the caller rejects the frame.
        """
        packet_type = packet.type
        if packet_type is socketio.PacketType.EVENT:
            # An ack requested by the server is not answered: the venue never asks.
            name, payload = socketio.decode_event(packet.data)
            self._events.append(EventReceived(self.namespace, name, payload))
        elif packet_type is socketio.PacketType.ACK:
            if packet.ack_id is None:
                raise ProtocolError("socket.io ack without an ack id")
            payload = socketio.decode_ack(packet.data)
            self._events.append(AckReceived(self.namespace, packet.ack_id, payload))
        elif packet_type is socketio.PacketType.CONNECT:
            self._receive_connect(packet.data)
        elif packet_type is socketio.PacketType.CONNECT_ERROR:
            message = socketio.decode_connect_error(packet.data)
            self._events.append(ConnectRefused(self.namespace, message))
            self._set_state(State.CLOSED)
        else:  # DISCONNECT: the server kicked us out of the namespace.
            self._disconnect("namespace_disconnect")

    def _receive_connect(self, data: str) -> None:
        """SIO v5 CONNECT from the server: the namespace is joined."""
        if self.state is not State.OPENING:
            self.stats.frames_ignored += 1  # a duplicate connect
            return
        sid = socketio.decode_connect(data)
        self._events.append(NamespaceConnected(self.namespace, sid))
        self._set_state(State.OPEN)

    # -- helpers ------------------------------------------------------------------------

    def _reject(self, reason: str, frame: str) -> None:
        self.stats.frames_rejected += 1
        logger.debug("rejected frame (%s): %.80r", reason, frame)
        self._events.append(FrameRejected(reason, frame[:MAX_REJECTED_FRAME_CHARS]))

    def _disconnect(self, reason: DisconnectReason) -> None:
        self._events.append(Disconnected(reason))
        self._set_state(State.CLOSED)

    def _set_state(self, state: State) -> None:
        if state is not self.state:
            logger.debug("%s: %s -> %s", self.namespace, self.state.name, state.name)
            self.state = state


def _payload_text(payload: bytes | None) -> str | None:
    """Check that an emit payload is one UTF-8 JSON value and return it as text.

    Raises:
        ValueError: it is not (an encoding bug in the caller).
    """
    if payload is None:
        return None
    try:
        text = payload.decode()
        msgspec.json.decode(payload, type=msgspec.Raw)
    except (UnicodeDecodeError, msgspec.DecodeError, RecursionError) as exc:
        raise ValueError(f"payload is not one UTF-8 JSON value: {exc}") from exc
    return text
