"""Hypothesis: codec round-trips, and no text from the peer ever makes the core raise."""

from __future__ import annotations

from typing import Any

import msgspec
from hypothesis import given
from hypothesis import strategies as st

from streamer.protocol import engineio, socketio
from streamer.protocol.session import (
    AckReceived,
    ConnectRefused,
    Disconnected,
    EventReceived,
    FrameRejected,
    NamespaceConnected,
    Opened,
    SocketIOProtocol,
    State,
)

EVENT_TYPES = (
    Opened, NamespaceConnected, ConnectRefused, EventReceived, AckReceived, Disconnected,
    FrameRejected,
)
OPEN_FRAME = (
    '0{"sid":"Qm9","upgrades":[],"pingInterval":25000,"pingTimeout":20000,"maxPayload":1000000}'
)
# Any code point, lone surrogates included: websockets never yields them, but the core
# must not care.
any_text = st.text(st.characters(exclude_categories=()))
prefixes = st.sampled_from(
    ["", "0", "0{", "1", "2", "3", "4", "40", "40/markets,", "41/markets,", "42/markets,",
     "42/markets,[", '42/markets,["e",', "42/markets,7", "43/markets,", "43/markets,5[",
     "44/markets,", "45/markets,", "42", "42[", "4/markets,"]
)
frames = st.one_of(any_text, st.builds(str.__add__, prefixes, any_text))
json_values: st.SearchStrategy[Any] = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)
namespaces = st.one_of(
    st.just("/"), st.text(st.characters(exclude_characters=",", codec="utf-8")).map("/{}".format)
)
ack_ids = st.none() | st.integers(min_value=0, max_value=10**15 - 1)


def json_text(value: Any) -> str:
    return msgspec.json.encode(value).decode()


def fresh(state: State) -> SocketIOProtocol:
    proto = SocketIOProtocol()
    frames_for_state = {
        State.CONNECTING: [],
        State.OPENING: [OPEN_FRAME],
        State.OPEN: [OPEN_FRAME, '40/markets,{"sid":"x"}'],
        State.CLOSED: [OPEN_FRAME, "41/markets,"],
    }[state]
    for frame in frames_for_state:
        proto.receive_text(frame)
    proto.events_received()
    proto.data_to_send()
    assert proto.state is state
    return proto


@given(st.sampled_from(State), st.lists(frames, max_size=8), st.booleans())
def test_session_never_raises_on_peer_text(state: State, texts: list[str], eof: bool) -> None:
    proto = fresh(state)
    received_before = proto.stats.frames_received
    previous = proto.state
    for text in texts:
        proto.receive_text(text)
        assert proto.state >= previous  # the state only moves forward
        previous = proto.state
        for event in proto.events_received():
            assert isinstance(event, EVENT_TYPES)
            if isinstance(event, FrameRejected):
                assert event.frame == text[:200]
        assert all(out in ("3", "40/markets,") for out in proto.data_to_send())
    if eof:
        proto.receive_eof()
        assert proto.state is State.CLOSED
    stats = proto.stats
    assert stats.frames_received == received_before + len(texts)
    assert stats.frames_rejected + stats.frames_ignored <= stats.frames_received


@given(st.sampled_from(engineio.PacketType), any_text)
def test_engineio_packet_round_trips(packet_type: engineio.PacketType, data: str) -> None:
    packet = engineio.Packet(packet_type, data)
    assert engineio.decode_packet(engineio.encode_packet(packet_type, data)) == packet


@given(
    st.text(),
    st.integers(1, 2**53),
    st.integers(1, 2**53),
    st.integers(1, 2**53),
    st.lists(st.text(), max_size=3).map(tuple),
)
def test_engineio_open_round_trips(
    sid: str, interval: int, timeout: int, max_payload: int, upgrades: tuple[str, ...]
) -> None:
    opened = engineio.OpenPacket(sid, interval, timeout, max_payload, upgrades)
    packet = engineio.decode_packet(engineio.encode_open(opened))
    assert packet.type is engineio.PacketType.OPEN
    assert engineio.decode_open(packet.data) == opened


@given(
    st.sampled_from([t for t in socketio.PacketType if t < socketio.PacketType.BINARY_EVENT]),
    namespaces,
    ack_ids,
    st.none() | json_values,
)
def test_socketio_packet_round_trips(
    packet_type: socketio.PacketType, namespace: str, ack_id: int | None, value: Any
) -> None:
    data = "" if value is None else json_text(value)
    packet = socketio.Packet(packet_type, namespace, ack_id, data)
    if data[:1].isdigit():  # JSON numbers cannot follow the header unambiguously
        return
    assert socketio.decode_packet(socketio.encode_packet(packet)) == packet


@given(st.text(), json_values, st.lists(json_values, max_size=2))
def test_socketio_event_data_round_trips(name: str, payload: Any, extra: list[Any]) -> None:
    data = socketio.encode_event_data(name, json_text(payload))
    assert msgspec.json.decode(data) == [name, payload]
    trailing = "".join("," + json_text(element) for element in extra)
    decoded_name, raw = socketio.decode_event(data[:-1] + trailing + "]")
    assert decoded_name == name
    assert msgspec.json.decode(raw) == payload


@given(st.text(min_size=1), st.none() | json_values, ack_ids)
def test_session_emit_is_read_back_by_a_server_parser(
    name: str, payload: Any, ack_id: int | None
) -> None:
    proto = fresh(State.OPEN)
    proto.emit(name, None if payload is None else msgspec.json.encode(payload), ack_id=ack_id)
    (frame,) = proto.data_to_send()
    eio = engineio.decode_packet(frame)
    assert eio.type is engineio.PacketType.MESSAGE
    sio = socketio.decode_packet(eio.data)
    assert (sio.type, sio.namespace, sio.ack_id) == (socketio.PacketType.EVENT, "/markets", ack_id)
    expected = [name] if payload is None else [name, payload]
    assert msgspec.json.decode(sio.data) == expected


@given(st.text(), json_values)
def test_session_event_delivers_exact_payload(name: str, payload: Any) -> None:
    proto = fresh(State.OPEN)
    proto.receive_text("42/markets," + json_text([name, payload]))
    (event,) = proto.events_received()
    assert isinstance(event, EventReceived)
    assert event.name == name
    assert msgspec.json.decode(event.payload) == payload
