"""SocketIOProtocol: literal frames in, exact events and frames out."""

from __future__ import annotations

from collections.abc import Callable

import msgspec
import pytest

from streamer.errors import InvalidState
from streamer.protocol.session import (
    AckReceived,
    ConnectRefused,
    Disconnected,
    Event,
    EventReceived,
    FrameRejected,
    MessageTooBig,
    NamespaceConnected,
    Opened,
    SessionStats,
    SocketIOProtocol,
    State,
)

OPEN_FRAME = (
    '0{"sid":"Qm9","upgrades":[],"pingInterval":25000,"pingTimeout":20000,"maxPayload":1000000}'
)
CONNECTED_FRAME = '40/markets,{"sid":"ZyX"}'
NULL = msgspec.Raw(b"null")


def raw(text: str) -> msgspec.Raw:
    return msgspec.Raw(text.encode())


def open_frame(max_payload: int = 1000000) -> str:
    return (
        '0{"sid":"Qm9","upgrades":[],"pingInterval":25000,"pingTimeout":20000,'
        f'"maxPayload":{max_payload}}}'
    )


def receive(proto: SocketIOProtocol, *frames: str) -> tuple[list[Event], list[str]]:
    """Feed frames; return (events, frames to send) produced by them."""
    for frame in frames:
        proto.receive_text(frame)
    return proto.events_received(), proto.data_to_send()


def opening(namespace: str = "/markets", max_payload: int = 1000000) -> SocketIOProtocol:
    proto = SocketIOProtocol(namespace=namespace)
    receive(proto, open_frame(max_payload))
    assert proto.state is State.OPENING
    return proto


def connected(max_payload: int = 1000000) -> SocketIOProtocol:
    proto = opening(max_payload=max_payload)
    receive(proto, CONNECTED_FRAME)
    assert proto.state is State.OPEN
    return proto


def test_session_plays_reference_example_session() -> None:
    """API reference §3.7, frame by frame."""
    proto = SocketIOProtocol(namespace="/markets")
    assert proto.state is State.CONNECTING

    assert receive(proto, OPEN_FRAME) == (
        [Opened(sid="Qm9", ping_interval_ms=25000, ping_timeout_ms=20000, max_payload=1000000)],
        ["40/markets,"],
    )
    assert receive(proto, CONNECTED_FRAME) == ([NamespaceConnected("/markets", "ZyX")], [])
    proto.emit(
        "subscribe_market_prices",
        b'{"marketSlugs":["btc-above-100k"],"marketAddresses":["0xabc"]}',
    )
    proto.emit("subscribe_order_events", b"{}")
    assert proto.data_to_send() == [
        '42/markets,["subscribe_market_prices",'
        '{"marketSlugs":["btc-above-100k"],"marketAddresses":["0xabc"]}]',
        '42/markets,["subscribe_order_events",{}]',
    ]
    book = '{"marketSlug":"btc-above-100k","orderbook":{"bids":[],"asks":[]},"timestamp":"t"}'
    assert receive(proto, f'42/markets,["orderbookUpdate",{book}]') == (
        [EventReceived("/markets", "orderbookUpdate", raw(book))],
        [],
    )
    assert receive(proto, "2") == ([], ["3"])
    proto.emit("unsubscribe", b'{"channel":"subscribe_order_events"}', ack_id=5)
    assert proto.data_to_send() == [
        '42/markets,5["unsubscribe",{"channel":"subscribe_order_events"}]'
    ]
    assert receive(proto, '43/markets,5[{"ok":true}]') == (
        [AckReceived("/markets", 5, raw('{"ok":true}'))],
        [],
    )
    proto.close()
    assert proto.data_to_send() == ["41/markets,"]
    assert proto.state is State.CLOSED
    assert proto.events_received() == []
    assert proto.stats == SessionStats(frames_received=5, pings=1)


class TestHandshake:
    def test_open_records_heartbeat_and_joins_namespace(self) -> None:
        proto = SocketIOProtocol()
        assert (proto.sid, proto.ping_interval_ms, proto.ping_timeout_ms) == (None, None, None)
        assert proto.max_payload is None
        events, out = receive(proto, open_frame(4096))
        assert events == [Opened("Qm9", 25000, 20000, 4096)]
        assert out == ["40/markets,"]
        assert (proto.sid, proto.ping_interval_ms, proto.ping_timeout_ms) == ("Qm9", 25000, 20000)
        assert proto.max_payload == 4096
        assert proto.state is State.OPENING

    def test_open_on_main_namespace_sends_bare_connect(self) -> None:
        proto = SocketIOProtocol(namespace="/")
        assert receive(proto, OPEN_FRAME)[1] == ["40"]

    @pytest.mark.parametrize(
        "frame",
        [
            "0",
            "0{}",
            "0not json",
            '0{"sid":"s","pingInterval":25000,"pingTimeout":20000}',
            '0{"sid":"s","pingInterval":"25000","pingTimeout":20000,"maxPayload":1}',
        ],
    )
    def test_open_missing_fields_is_rejected_and_waits(self, frame: str) -> None:
        proto = SocketIOProtocol()
        events, out = receive(proto, frame)
        assert len(events) == 1 and isinstance(events[0], FrameRejected)
        assert events[0].frame == frame
        assert events[0].reason.startswith("bad engine.io open packet: ")
        assert out == []
        assert proto.state is State.CONNECTING
        assert receive(proto, OPEN_FRAME)[1] == ["40/markets,"]

    def test_open_twice_is_ignored(self) -> None:
        proto = opening()
        assert receive(proto, open_frame(1)) == ([], [])
        assert proto.max_payload == 1000000
        assert proto.stats.frames_ignored == 1

    def test_socketio_before_open_is_ignored(self) -> None:
        proto = SocketIOProtocol()
        assert receive(proto, CONNECTED_FRAME, '42/markets,["e",1]') == ([], [])
        assert proto.state is State.CONNECTING
        assert proto.stats.frames_ignored == 2

    def test_connect_ack_opens_namespace(self) -> None:
        proto = opening()
        assert receive(proto, CONNECTED_FRAME) == ([NamespaceConnected("/markets", "ZyX")], [])
        assert proto.state is State.OPEN

    @pytest.mark.parametrize("frame", ["40/markets,", "40/markets", "40/markets,{}"])
    def test_connect_ack_without_sid_still_opens(self, frame: str) -> None:
        proto = opening()
        assert receive(proto, frame)[0] == [NamespaceConnected("/markets", None)]
        assert proto.state is State.OPEN

    @pytest.mark.parametrize("frame", ['40/markets,"ZyX"', "40/markets,[]", "40/markets,{"])
    def test_connect_ack_with_bad_data_is_rejected(self, frame: str) -> None:
        proto = opening()
        events, _ = receive(proto, frame)
        assert [type(e) for e in events] == [FrameRejected]
        assert proto.state is State.OPENING

    def test_connect_ack_twice_is_ignored(self) -> None:
        proto = connected()
        assert receive(proto, '40/markets,{"sid":"other"}') == ([], [])
        assert proto.stats.frames_ignored == 1

    @pytest.mark.parametrize(
        ("frame", "message"),
        [
            ('44/markets,{"message":"Not authorized"}', "Not authorized"),
            ('44/markets,{"message":"Invalid namespace","data":{"code":1}}', "Invalid namespace"),
            ('44/markets,"old style"', "old style"),
            ("44/markets,", ""),
            ("44/markets,{broken", "{broken"),
            ('44/markets,{"data":1}', '{"data":1}'),
        ],
    )
    def test_connect_error_refuses_and_closes(self, frame: str, message: str) -> None:
        proto = opening()
        assert receive(proto, frame) == ([ConnectRefused("/markets", message)], [])
        assert proto.state is State.CLOSED

    def test_connect_error_after_open_also_closes(self) -> None:
        proto = connected()
        assert receive(proto, '44/markets,{"message":"bye"}')[0] == [
            ConnectRefused("/markets", "bye")
        ]
        assert proto.state is State.CLOSED


class TestHeartbeat:
    @pytest.mark.parametrize("make", [SocketIOProtocol, opening, connected])
    def test_ping_is_answered_with_pong(self, make: Callable[[], SocketIOProtocol]) -> None:
        proto = make()
        assert receive(proto, "2", "2") == ([], ["3", "3"])
        assert proto.stats.pings == 2

    def test_ping_with_data_is_answered_with_bare_pong(self) -> None:
        assert receive(connected(), "2probe") == ([], ["3"])

    @pytest.mark.parametrize("frame", ["3", "5", "6", "6junk"])
    def test_pong_upgrade_noop_are_ignored(self, frame: str) -> None:
        proto = connected()
        assert receive(proto, frame) == ([], [])
        assert proto.stats.frames_ignored == 1
        assert proto.state is State.OPEN


class TestEvents:
    def test_event_payload_stays_raw(self) -> None:
        proto = connected()
        book = '{"bids":[{"price":0.51}]}'
        events, _ = receive(proto, f'42/markets,["orderbookUpdate",{book}]')
        assert events == [EventReceived("/markets", "orderbookUpdate", raw(book))]

    def test_event_without_payload_is_null(self) -> None:
        assert receive(connected(), '42/markets,["system"]')[0] == [
            EventReceived("/markets", "system", NULL)
        ]

    def test_event_extra_elements_are_ignored(self) -> None:
        assert receive(connected(), '42/markets,["e",1,2,3]')[0] == [
            EventReceived("/markets", "e", raw("1"))
        ]

    def test_event_before_connect_ack_is_delivered(self) -> None:
        # socket.io-client buffers such events until connect; delivering keeps the order.
        assert receive(opening(), '42/markets,["e",1]')[0] == [
            EventReceived("/markets", "e", raw("1"))
        ]

    def test_event_with_server_ack_id_is_delivered_unanswered(self) -> None:
        assert receive(connected(), '42/markets,7["e",{}]') == (
            [EventReceived("/markets", "e", raw("{}"))],
            [],
        )

    def test_ack_returns_first_element(self) -> None:
        assert receive(connected(), "43/markets,5[{\"error\":\"x\"},2]")[0] == [
            AckReceived("/markets", 5, raw('{"error":"x"}'))
        ]

    def test_ack_with_empty_array_is_null(self) -> None:
        assert receive(connected(), "43/markets,0[]")[0] == [AckReceived("/markets", 0, NULL)]

    def test_rust_style_ack_frame_is_ignored(self) -> None:
        # '427/markets,[...]' parses as namespace '/', ack id 7: another namespace, ignored.
        proto = connected()
        assert receive(proto, '427/markets,["e",1]') == ([], [])
        assert proto.stats.frames_ignored == 1

    def test_rust_style_ack_frame_is_rejected_on_main_namespace(self) -> None:
        proto = SocketIOProtocol(namespace="/")
        receive(proto, OPEN_FRAME, '40{"sid":"a"}')
        events, _ = receive(proto, '427/markets,["e",1]')
        assert [type(e) for e in events] == [FrameRejected]

    @pytest.mark.parametrize(
        "frame",
        ['42/other,["e",1]', '42["e",1]', '40/other,{"sid":"x"}', "41/other,", "44/other,{}",
         "43/other,1[]", "42/marketsX,[]", "42/markets/x,[]"],
    )
    def test_other_namespace_is_ignored(self, frame: str) -> None:
        proto = connected()
        assert receive(proto, frame) == ([], [])
        assert proto.stats.frames_ignored == 1
        assert proto.state is State.OPEN

    def test_main_namespace_session_uses_bare_frames(self) -> None:
        proto = SocketIOProtocol(namespace="/")
        receive(proto, OPEN_FRAME)
        assert receive(proto, '40{"sid":"a"}')[0] == [NamespaceConnected("/", "a")]
        assert receive(proto, '42["e",1]', '42/markets,["e",2]')[0] == [
            EventReceived("/", "e", raw("1"))
        ]
        proto.emit("sub", b"{}", ack_id=3)
        proto.close()
        assert proto.data_to_send() == ['423["sub",{}]', "41"]


class TestServerDisconnect:
    @pytest.mark.parametrize("make", [opening, connected])
    def test_namespace_disconnect_is_a_kick(self, make: Callable[[], SocketIOProtocol]) -> None:
        proto = make()
        assert receive(proto, "41/markets,") == ([Disconnected("namespace_disconnect")], [])
        assert proto.state is State.CLOSED

    @pytest.mark.parametrize("make", [SocketIOProtocol, opening, connected])
    def test_engineio_close_disconnects(self, make: Callable[[], SocketIOProtocol]) -> None:
        proto = make()
        assert receive(proto, "1") == ([Disconnected("engineio_close")], [])
        assert proto.state is State.CLOSED

    @pytest.mark.parametrize("make", [SocketIOProtocol, opening, connected])
    def test_eof_disconnects_once(self, make: Callable[[], SocketIOProtocol]) -> None:
        proto = make()
        proto.receive_eof()
        proto.receive_eof()
        assert proto.events_received() == [Disconnected("eof")]
        assert proto.state is State.CLOSED

    def test_eof_after_kick_adds_nothing(self) -> None:
        proto = connected()
        receive(proto, "41/markets,")
        proto.receive_eof()
        assert proto.events_received() == []

    def test_frames_after_close_are_ignored(self) -> None:
        proto = connected()
        receive(proto, "1")
        assert receive(proto, "2", '42/markets,["e",1]', "", "41/markets,") == ([], [])
        assert proto.stats.frames_ignored == 4
        assert proto.stats.pings == 0


MALFORMED = [
    ("", "empty engine.io frame"),
    ("x", "unknown engine.io packet type 'x'"),
    ("7", "unknown engine.io packet type '7'"),
    ("b4AQID", "unknown engine.io packet type 'b'"),
    ("4", "empty socket.io packet"),
    ("48/markets,", "unknown socket.io packet type '8'"),
    ("45/markets,1-[]", "unsupported binary socket.io packet type BINARY_EVENT"),
    ("46/markets,1-1[]", "unsupported binary socket.io packet type BINARY_ACK"),
    ("43/markets,[1]", "socket.io ack without an ack id"),
    ("43/markets," + "1" * 16 + "[1]", "socket.io ack id longer than 15 digits"),
]
MALFORMED_JSON = [
    '42/markets,["e",1]x',
    '42/markets,["e",1',
    "42/markets,[1,2]",
    "42/markets,[]",
    '42/markets,[["e"],1]',
    "42/markets,{}",
    "42/markets,",
    "42/markets,7",
    '42/markets,7{"e":1}',
    '42/markets,["e",NaN]',
    "43/markets,5{}",
    "43/markets,5",
    '42/markets,["e",' + "[" * 50_000,
]


class TestMalformedFrames:
    @pytest.mark.parametrize(("frame", "reason"), MALFORMED)
    def test_malformed_frame_is_rejected_with_reason(self, frame: str, reason: str) -> None:
        proto = connected()
        assert receive(proto, frame) == ([FrameRejected(reason, frame)], [])
        assert proto.state is State.OPEN
        assert proto.stats.frames_rejected == 1

    @pytest.mark.parametrize("frame", MALFORMED_JSON)
    def test_malformed_event_data_is_rejected(self, frame: str) -> None:
        proto = connected()
        events, out = receive(proto, frame)
        assert out == []
        assert len(events) == 1 and isinstance(events[0], FrameRejected)
        assert events[0].reason.startswith(("bad socket.io event: ", "bad socket.io ack: "))
        assert events[0].frame == frame[:200]
        assert proto.state is State.OPEN
        assert proto.stats.frames_rejected == 1

    def test_rejected_frame_is_truncated_to_200_chars(self) -> None:
        frame = '42/markets,["e",' + "x" * 1000
        (event,), _ = receive(connected(), frame)
        assert isinstance(event, FrameRejected)
        assert event.frame == frame[:200]
        assert len(event.frame) == 200

    def test_session_continues_after_rejections(self) -> None:
        proto = connected()
        events, out = receive(proto, "", '42/markets,["e",1]', "x", "2")
        assert [type(e) for e in events] == [FrameRejected, EventReceived, FrameRejected]
        assert out == ["3"]
        assert proto.stats == SessionStats(
            frames_received=6, frames_rejected=2, frames_ignored=0, pings=1
        )


class TestEmit:
    @pytest.mark.parametrize("make", [SocketIOProtocol, opening])
    def test_emit_before_open_raises(self, make: Callable[[], SocketIOProtocol]) -> None:
        proto = make()
        with pytest.raises(InvalidState, match="cannot emit 'subscribe_market_prices'"):
            proto.emit("subscribe_market_prices", b"{}")
        assert proto.data_to_send() in ([], ["40/markets,"])

    def test_emit_after_close_raises(self) -> None:
        proto = connected()
        proto.close()
        with pytest.raises(InvalidState):
            proto.emit("e")

    def test_emit_without_payload(self) -> None:
        proto = connected()
        proto.emit("subscribe_order_events")
        assert proto.data_to_send() == ['42/markets,["subscribe_order_events"]']

    def test_emit_with_ack_id_puts_id_after_namespace(self) -> None:
        proto = connected()
        proto.emit("unsubscribe", b'{"channel":"x"}', ack_id=7)
        assert proto.data_to_send() == ['42/markets,7["unsubscribe",{"channel":"x"}]']

    @pytest.mark.parametrize("payload", [b"", b"{", b"{}{}", b"NaN", b'"\xff"', b"[" * 100_000])
    def test_emit_invalid_payload_raises(self, payload: bytes) -> None:
        proto = connected()
        with pytest.raises(InvalidState, match="cannot encode event 'e'"):
            proto.emit("e", payload)
        assert proto.data_to_send() == []

    def test_emit_negative_ack_id_raises(self) -> None:
        with pytest.raises(InvalidState):
            connected().emit("e", b"1", ack_id=-1)

    def test_emit_surrogate_event_name_raises(self) -> None:
        with pytest.raises(InvalidState):
            connected().emit("\ud800", b"1")

    def test_emit_at_max_payload_is_sent(self) -> None:
        frame = '42/markets,["e","aé"]'
        size = len(frame.encode())
        assert size == len(frame) + 1  # é is two bytes: the limit counts UTF-8 bytes
        proto = connected(max_payload=size)
        proto.emit("e", '"aé"'.encode())
        assert proto.data_to_send() == [frame]

    def test_emit_over_max_payload_raises_message_too_big(self) -> None:
        frame = '42/markets,["e","aé"]'
        proto = connected(max_payload=len(frame))  # one byte short
        with pytest.raises(MessageTooBig) as info:
            proto.emit("e", '"aé"'.encode())
        assert (info.value.size, info.value.max_size) == (len(frame) + 1, len(frame))
        assert str(info.value) == (
            f"frame of {len(frame) + 1} bytes exceeds the server's maxPayload of {len(frame)} bytes"
        )
        assert isinstance(info.value, InvalidState)
        assert proto.data_to_send() == []
        assert proto.state is State.OPEN


class TestClose:
    def test_close_when_open_leaves_namespace(self) -> None:
        proto = connected()
        proto.close()
        proto.close()
        assert proto.data_to_send() == ["41/markets,"]
        assert proto.state is State.CLOSED
        proto.receive_eof()
        assert proto.events_received() == []

    @pytest.mark.parametrize("make", [SocketIOProtocol, opening])
    def test_close_before_open_sends_nothing(self, make: Callable[[], SocketIOProtocol]) -> None:
        proto = make()
        proto.data_to_send()
        proto.close()
        assert proto.data_to_send() == []
        assert proto.state is State.CLOSED


class TestApi:
    @pytest.mark.parametrize("namespace", ["markets", "", "/a,b"])
    def test_invalid_namespace_raises(self, namespace: str) -> None:
        with pytest.raises(ValueError):
            SocketIOProtocol(namespace=namespace)

    def test_events_and_data_are_returned_once(self) -> None:
        proto = SocketIOProtocol()
        proto.receive_text(OPEN_FRAME)
        assert len(proto.events_received()) == 1
        assert proto.events_received() == []
        assert proto.data_to_send() == ["40/markets,"]
        assert proto.data_to_send() == []

    def test_protocol_modules_import_no_io_or_clock(self) -> None:
        import ast
        import pathlib

        import streamer.protocol

        forbidden = {"anyio", "websockets", "httpx", "prometheus_client", "time", "datetime",
                     "asyncio", "socket"}
        root = pathlib.Path(streamer.protocol.__file__).parent
        for name in ("engineio.py", "socketio.py", "session.py"):
            tree = ast.parse((root / name).read_text())
            for node in ast.walk(tree):
                if isinstance(node, ast.Import):
                    mods = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom):
                    mods = [node.module or ""]
                else:
                    continue
                assert not {m.split(".")[0] for m in mods} & forbidden, (name, mods)
