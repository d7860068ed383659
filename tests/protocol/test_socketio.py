"""Socket.IO v5 codec: header grammar ``<type>[<nsp>,][<ackId>][<json>]`` and data helpers."""

from __future__ import annotations

import msgspec
import pytest

from streamer.errors import ProtocolError
from streamer.protocol.socketio import (
    NULL,
    Packet,
    PacketType,
    decode_ack,
    decode_connect,
    decode_connect_error,
    decode_event,
    decode_packet,
    encode_event_data,
    encode_packet,
    header,
)

EVENT = PacketType.EVENT
CONNECT = PacketType.CONNECT
CONNECT_ERROR = PacketType.CONNECT_ERROR


class TestDecodePacket:
    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            ("0/markets,", Packet(PacketType.CONNECT, "/markets")),
            ("0/markets", Packet(PacketType.CONNECT, "/markets")),  # comma optional at end
            ("0", Packet(PacketType.CONNECT)),
            ('0/markets,{"sid":"ZyX"}', Packet(CONNECT, "/markets", None, '{"sid":"ZyX"}')),
            ("1/markets,", Packet(PacketType.DISCONNECT, "/markets")),
            ('2/markets,["a",1]', Packet(EVENT, "/markets", None, '["a",1]')),
            ('2/markets,7["a",1]', Packet(EVENT, "/markets", 7, '["a",1]')),
            ('2["a"]', Packet(EVENT, "/", None, '["a"]')),
            ('212["a"]', Packet(EVENT, "/", 12, '["a"]')),
            ("3/markets,5[{}]", Packet(PacketType.ACK, "/markets", 5, "[{}]")),
            ("3/markets,0[]", Packet(PacketType.ACK, "/markets", 0, "[]")),
            ('4/markets,{"e":1}', Packet(CONNECT_ERROR, "/markets", None, '{"e":1}')),
            ("2/a/b,[]", Packet(EVENT, "/a/b", None, "[]")),
            ("2/,[]", Packet(EVENT, "/", None, "[]")),
        ],
    )
    def test_decode_packet_reads_header(self, text: str, expected: Packet) -> None:
        assert decode_packet(text) == expected

    def test_decode_packet_reads_namespace_before_ack_id(self) -> None:
        assert decode_packet('2/markets,7["unsubscribe",{}]') == Packet(
            EVENT, "/markets", 7, '["unsubscribe",{}]'
        )

    def test_decode_packet_reads_rust_style_ack_as_main_namespace(self) -> None:
        # The Rust SDK writes the ack id before the namespace. Standard grammar: after the
        # type comes no '/', so the namespace is '/', the digits are the ack id, and the
        # rest ("/markets,[...]") is data, which is not JSON.
        packet = decode_packet('27/markets,["x",1]')
        assert packet == Packet(EVENT, "/", 7, '/markets,["x",1]')
        with pytest.raises(ProtocolError):
            decode_event(packet.data)

    def test_decode_packet_accepts_only_ascii_digits_as_ack_id(self) -> None:
        # '٧' (ARABIC-INDIC SEVEN) passes str.isdigit() and int(); it must stay data.
        assert decode_packet("2/markets,٧[]") == Packet(EVENT, "/markets", None, "٧[]")

    @pytest.mark.parametrize(
        ("text", "reason"),
        [
            ("", "empty socket.io packet"),
            ("7", "unknown socket.io packet type '7'"),
            ("x/markets,", "unknown socket.io packet type 'x'"),
            ("5/markets,1-[]", "unsupported binary socket.io packet type BINARY_EVENT"),
            ("6/markets,1-[]", "unsupported binary socket.io packet type BINARY_ACK"),
            ("3/markets," + "9" * 16 + "[]", "socket.io ack id longer than 15 digits"),
            ("2" + "1" * 10_000 + "[]", "socket.io ack id longer than 15 digits"),
        ],
    )
    def test_decode_packet_rejects_bad_header(self, text: str, reason: str) -> None:
        with pytest.raises(ProtocolError) as info:
            decode_packet(text)
        assert str(info.value) == reason

    def test_decode_packet_accepts_longest_ack_id(self) -> None:
        assert decode_packet("3/markets," + "9" * 15 + "[]").ack_id == 999_999_999_999_999


class TestEncodePacket:
    @pytest.mark.parametrize(
        ("packet", "text"),
        [
            (Packet(PacketType.CONNECT, "/markets"), "0/markets,"),
            (Packet(PacketType.DISCONNECT, "/markets"), "1/markets,"),
            (Packet(EVENT, "/markets", None, '["a",{}]'), '2/markets,["a",{}]'),
            (Packet(EVENT, "/markets", 7, '["a",{}]'), '2/markets,7["a",{}]'),
            (Packet(EVENT, "/", 7, '["a"]'), '27["a"]'),
            (Packet(PacketType.CONNECT), "0"),
            (Packet(PacketType.ACK, "/markets", 0, "[]"), "3/markets,0[]"),
        ],
    )
    def test_encode_packet_writes_namespace_then_ack_id(self, packet: Packet, text: str) -> None:
        assert encode_packet(packet) == text
        assert decode_packet(text) == packet

    @pytest.mark.parametrize(
        "packet",
        [
            Packet(EVENT, "markets"),
            Packet(EVENT, ""),
            Packet(EVENT, "/a,b"),
            Packet(EVENT, "/markets", -1, "[]"),
            Packet(EVENT, "/markets", None, "5"),
            Packet(EVENT, "/", None, "/x"),
        ],
    )
    def test_encode_packet_refuses_ambiguous_packets(self, packet: Packet) -> None:
        with pytest.raises(ValueError):
            encode_packet(packet)

    def test_header_omits_main_namespace(self) -> None:
        assert header(EVENT) == "2"
        assert header(EVENT, "/markets") == "2/markets,"


class TestEventData:
    def test_decode_event_keeps_payload_raw(self) -> None:
        name, payload = decode_event('["orderbookUpdate",{"marketSlug":"btc","orderbook":{}}]')
        assert name == "orderbookUpdate"
        assert bytes(payload) == b'{"marketSlug":"btc","orderbook":{}}'

    def test_decode_event_ignores_trailing_elements(self) -> None:
        name, payload = decode_event('["e", 1, 2, {"x": 3}]')
        assert (name, bytes(payload)) == ("e", b"1")

    def test_decode_event_without_payload_gives_null(self) -> None:
        name, payload = decode_event('["e"]')
        assert (name, payload) == ("e", NULL)
        assert msgspec.json.decode(payload) is None

    @pytest.mark.parametrize(
        "data",
        [
            "",
            "[]",
            "{}",
            '"e"',
            "[1, 2]",
            "[null]",
            '[["e"], 1]',
            '["e", 1',
            '["e", 1]]',
            '["e", NaN]',
            '["e",]',
            "[\"e\", '1']",
            '["\ud800", 1]',
            '["e", ' + "[" * 100_000 + "]",
        ],
    )
    def test_decode_event_rejects_malformed_array(self, data: str) -> None:
        with pytest.raises(ProtocolError, match="^bad socket.io event: "):
            decode_event(data)

    def test_encode_event_data_inserts_payload_verbatim(self) -> None:
        assert encode_event_data("subscribe_market_prices", '{"marketSlugs":["a"]}') == (
            '["subscribe_market_prices",{"marketSlugs":["a"]}]'
        )
        assert encode_event_data('we"ird') == '["we\\"ird"]'

    def test_encode_event_data_refuses_lone_surrogate(self) -> None:
        with pytest.raises(ValueError):
            encode_event_data("\ud800")


class TestAckAndConnectData:
    def test_decode_ack_returns_first_element(self) -> None:
        assert bytes(decode_ack('[{"ok":true}, 2]')) == b'{"ok":true}'
        assert decode_ack("[]") == NULL

    @pytest.mark.parametrize("data", ["", "{}", "1", "[1", "[" * 100_000])
    def test_decode_ack_rejects_non_array(self, data: str) -> None:
        with pytest.raises(ProtocolError, match="^bad socket.io ack: "):
            decode_ack(data)

    @pytest.mark.parametrize(
        ("data", "sid"),
        [("", None), ("{}", None), ('{"sid":"ZyX"}', "ZyX"), ('{"sid":null,"pid":"p"}', None)],
    )
    def test_decode_connect_reads_optional_sid(self, data: str, sid: str | None) -> None:
        assert decode_connect(data) == sid

    @pytest.mark.parametrize("data", ["[]", '"ZyX"', '{"sid":1}', "{", "{" * 100_000])
    def test_decode_connect_rejects_non_object(self, data: str) -> None:
        with pytest.raises(ProtocolError, match="^bad socket.io connect: "):
            decode_connect(data)

    @pytest.mark.parametrize(
        ("data", "message"),
        [
            ('{"message":"Not authorized","data":{"code":401}}', "Not authorized"),
            ('"legacy string"', "legacy string"),
            ('{"message":[{"field":"x"}]}', '[{"field":"x"}]'),
            ('{"data":1}', '{"data":1}'),
            ("42", "42"),
            ("null", "null"),
            ("", ""),
            ("not json", "not json"),
        ],
    )
    def test_decode_connect_error_tolerates_any_data(self, data: str, message: str) -> None:
        assert decode_connect_error(data) == message
