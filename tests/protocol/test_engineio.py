"""Engine.IO v4 codec: strings in, packets out, and back."""

from __future__ import annotations

import pytest

from streamer.errors import ProtocolError
from streamer.protocol.engineio import (
    PING_FRAME,
    PONG_FRAME,
    OpenPacket,
    Packet,
    PacketType,
    decode_open,
    decode_packet,
    encode_open,
    encode_packet,
)

OPEN_FRAME = (
    '0{"sid":"Qm9vYmFy","upgrades":[],"pingInterval":25000,'
    '"pingTimeout":20000,"maxPayload":1000000}'
)


@pytest.mark.parametrize(
    ("frame", "expected"),
    [
        ("0{}", Packet(PacketType.OPEN, "{}")),
        ("1", Packet(PacketType.CLOSE)),
        ("2", Packet(PacketType.PING)),
        ("2probe", Packet(PacketType.PING, "probe")),
        ("3", Packet(PacketType.PONG)),
        ('42/markets,["a"]', Packet(PacketType.MESSAGE, '2/markets,["a"]')),
        ("5", Packet(PacketType.UPGRADE)),
        ("6", Packet(PacketType.NOOP)),
    ],
)
def test_decode_packet_splits_type_and_data(frame: str, expected: Packet) -> None:
    assert decode_packet(frame) == expected


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        ("", "empty engine.io frame"),
        ("7", "unknown engine.io packet type '7'"),
        ("9abc", "unknown engine.io packet type '9'"),
        ("bAAEC", "unknown engine.io packet type 'b'"),
        (" 2", "unknown engine.io packet type ' '"),
        ("٤2", "unknown engine.io packet type '٤'"),  # ARABIC-INDIC DIGIT FOUR is not '4'
    ],
)
def test_decode_packet_rejects_bad_type(frame: str, reason: str) -> None:
    with pytest.raises(ProtocolError) as info:
        decode_packet(frame)
    assert str(info.value) == reason


def test_encode_packet_writes_type_digit_then_data() -> None:
    assert encode_packet(PacketType.MESSAGE, '0/markets,') == "40/markets,"
    assert encode_packet(PacketType.PONG) == "3"


def test_ping_and_pong_frames_are_bare_digits() -> None:
    assert decode_packet(PING_FRAME) == Packet(PacketType.PING)
    assert decode_packet(PONG_FRAME) == Packet(PacketType.PONG)


def test_decode_open_reads_reference_handshake() -> None:
    packet = decode_packet(OPEN_FRAME)
    assert packet.type is PacketType.OPEN
    assert decode_open(packet.data) == OpenPacket(
        sid="Qm9vYmFy",
        ping_interval=25000,
        ping_timeout=20000,
        max_payload=1000000,
        upgrades=(),
    )


def test_decode_open_ignores_unknown_keys_and_missing_upgrades() -> None:
    opened = decode_open(
        '{"sid":"s","pingInterval":1,"pingTimeout":2,"maxPayload":3,"future":{"x":1}}'
    )
    assert opened == OpenPacket("s", 1, 2, 3)


@pytest.mark.parametrize(
    "data",
    [
        "",
        "not json",
        "[]",
        '"sid"',
        '{"pingInterval":25000,"pingTimeout":20000,"maxPayload":1000000}',
        '{"sid":"s","pingTimeout":20000,"maxPayload":1000000}',
        '{"sid":"s","pingInterval":25000,"maxPayload":1000000}',
        '{"sid":"s","pingInterval":25000,"pingTimeout":20000}',
        '{"sid":1,"pingInterval":25000,"pingTimeout":20000,"maxPayload":1000000}',
        '{"sid":"s","pingInterval":"25000","pingTimeout":20000,"maxPayload":1000000}',
        '{"sid":"s","pingInterval":25000.5,"pingTimeout":20000,"maxPayload":1000000}',
        '{"sid":"s","pingInterval":0,"pingTimeout":20000,"maxPayload":1000000}',
        '{"sid":"s","pingInterval":25000,"pingTimeout":-1,"maxPayload":1000000}',
        '{"sid":"s","pingInterval":25000,"pingTimeout":20000,"maxPayload":true}',
        '{"sid":"s","pingInterval":25000,"pingTimeout":20000,"maxPayload":1,"upgrades":"ws"}',
        '{"sid":"\ud800","pingInterval":1,"pingTimeout":1,"maxPayload":1}',
        "[" * 100_000,
    ],
)
def test_decode_open_rejects_unusable_handshake(data: str) -> None:
    with pytest.raises(ProtocolError, match="^bad engine.io open packet: "):
        decode_open(data)


def test_encode_open_round_trips_through_decode() -> None:
    opened = OpenPacket("abc", 25000, 20000, 1000000, ("websocket",))
    frame = encode_open(opened)
    assert frame == (
        '0{"sid":"abc","pingInterval":25000,"pingTimeout":20000,'
        '"maxPayload":1000000,"upgrades":["websocket"]}'
    )
    assert decode_open(decode_packet(frame).data) == opened
