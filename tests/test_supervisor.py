"""The reconnect loop: classify() table, backoff and reset, fresh signatures, fatal errors."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest

from streamer.config import FeedSettings
from streamer.errors import (
    ConfigError,
    ConnectError,
    ConnectionLost,
    ConnectRefused,
    HeartbeatTimeout,
    InvalidState,
    ProtocolError,
    RestError,
    ServerDisconnect,
)
from streamer.feed.retry import Backoff
from streamer.feed.supervisor import Action, ReconnectPolicy, classify, default_connect, run_feed
from streamer.partner.auth import HmacCredentials, sign
from streamer.transport.memory import MemoryTransport
from streamer.transport.websocket import (
    ENGINEIO_PATH,
    WS_CLIENTS,
    Transport,
    WebSocketTransport,
    WsClient,
    open_websocket,
)

SECRET = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="


@pytest.mark.parametrize(
    ("exc", "action"),
    [
        (ConnectError("refused"), Action.RETRY),
        (ConnectionLost("reset"), Action.RETRY),
        (HeartbeatTimeout("silent"), Action.RETRY),
        (ServerDisconnect("kicked"), Action.RETRY),
        (ConnectRefused("44"), Action.RETRY),
        (RestError("/x", 503, "down"), Action.RETRY),
        (ProtocolError("bad frame"), Action.RETRY),
        (InvalidState("our bug"), Action.FATAL),
        (ConfigError("bad"), Action.FATAL),
        (ValueError("bug"), Action.FATAL),
        (ExceptionGroup("g", [HeartbeatTimeout("x")]), Action.RETRY),
        (ExceptionGroup("g", [ExceptionGroup("h", [ServerDisconnect("x")])]), Action.RETRY),
        (ExceptionGroup("g", [ConnectionLost("x"), ConnectError("y")]), Action.RETRY),
        (ExceptionGroup("g", [ConnectionLost("x"), KeyError("bug")]), Action.FATAL),
        (ExceptionGroup("g", [InvalidState("x")]), Action.FATAL),
    ],
)
def test_classify_table(exc: BaseException, action: Action) -> None:
    assert classify(exc) is action


class ScriptedRunner:
    """A SessionRunner whose sessions end with scripted exceptions.

    A message containing "healthy" marks a session that joined and delivered events.
    """

    def __init__(self, script: list[BaseException]) -> None:
        self.script = script
        self.session_healthy = False
        self.disconnects: list[tuple[str, int, float]] = []
        self.waited_before_connect = 0

    async def before_connect(self) -> None:
        self.waited_before_connect += 1

    async def run_session(self, transport: Transport) -> None:
        exc = self.script.pop(0)
        self.session_healthy = "healthy" in str(exc)
        raise exc

    def on_disconnect(self, reason: str, detail: str, attempt: int, delay_s: float) -> None:
        self.disconnects.append((reason, attempt, delay_s))


def _settings(**kw: float) -> FeedSettings:
    return FeedSettings(backoff=Backoff(initial_s=1.0, factor=2.0, cap_s=4.0, jitter=0.0),
                        healthy_jitter_s=0.5, min_attempt_interval_s=0.0, **kw)  # type: ignore[arg-type]


@pytest.mark.anyio
async def test_run_feed_backs_off_failures_capped_and_reconnects_at_once_after_healthy() -> None:
    clock = [0.0]
    slept: list[float] = []
    headers_seen: list[dict[str, str]] = []
    wall = [1_790_000_000.0]

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        clock[0] += seconds
        wall[0] += seconds

    @asynccontextmanager
    async def connect(url: str, headers: Mapping[str, str]) -> AsyncIterator[Transport]:
        headers_seen.append(dict(headers))
        if len(headers_seen) == 2:
            raise ConnectError("refused")
        yield MemoryTransport([])

    script: list[BaseException] = [
        HeartbeatTimeout("x"), ServerDisconnect("x"), ConnectionLost("x"),
        ConnectionLost("x"), ServerDisconnect("healthy"), ConnectionLost("healthy"),
        ConnectionLost("x"),
    ]
    runner = ScriptedRunner(script)
    await run_feed(runner, "ws://x", _settings(), HmacCredentials("tok", SECRET),
                   connect=connect, sleep=sleep, clock=lambda: clock[0],
                   wall_clock=lambda: wall[0], rng=random.Random(1), max_sessions=8)
    # Failures: 1, 2, 4, then capped at 4; each healthy session is followed by at most
    # 0.5 s of jitter and resets the backoff, so the next failure waits 1 s again.
    assert slept[:5] == pytest.approx([1.0, 2.0, 4.0, 4.0, 4.0])
    assert 0.0 <= slept[5] <= 0.5 and 0.0 <= slept[6] <= 0.5
    assert slept[7] == pytest.approx(1.0)
    assert [d[0] for d in runner.disconnects] == [
        "HeartbeatTimeout", "ConnectError", "ServerDisconnect", "ConnectionLost",
        "ConnectionLost", "ServerDisconnect", "ConnectionLost", "ConnectionLost"]
    # The attempt number counts failures since the last healthy session.
    assert [d[1] for d in runner.disconnects] == [2, 3, 4, 5, 6, 1, 1, 2]
    assert runner.waited_before_connect == 8
    # Every attempt was signed afresh, over exactly the upgrade path, with its own time.
    stamps = [h["lmts-timestamp"] for h in headers_seen]
    assert len(set(stamps)) == len(stamps) == 8
    for h in headers_seen:
        assert h["lmts-signature"] == sign(SECRET, h["lmts-timestamp"], "GET", ENGINEIO_PATH)


def test_reconnect_policy_floor_stops_a_spin_of_healthy_but_instant_sessions() -> None:
    settings = FeedSettings(healthy_jitter_s=0.0, min_attempt_interval_s=1.0,
                            max_attempts_per_minute=5)
    policy = ReconnectPolicy(settings, random.Random(1))
    now, starts = 0.0, []
    for _ in range(12):
        policy.started(now)
        starts.append(now)
        now += 0.01  # the venue accepts, delivers one event, and drops at once
        now += policy.delay(True, now)
    gaps = [b - a for a, b in zip(starts, starts[1:], strict=False)]
    assert min(gaps) >= 1.0 - 1e-9  # never two attempts within min_attempt_interval_s
    for i in range(len(starts) - 5):
        assert starts[i + 5] - starts[i] >= 60.0 - 1e-9  # at most 5 in any rolling minute


def test_reconnect_policy_healthy_delay_is_small_and_resets_failures() -> None:
    settings = FeedSettings(backoff=Backoff(initial_s=1.0, factor=2.0, cap_s=30.0, jitter=0.0),
                            healthy_jitter_s=0.5, min_attempt_interval_s=0.0)
    policy = ReconnectPolicy(settings, random.Random(7))
    now = 0.0
    for expected in (1.0, 2.0, 4.0, 8.0):
        policy.started(now)
        now += 1
        assert policy.delay(False, now) == expected
    policy.started(now)
    now += 3
    delays = []
    for _ in range(50):
        delays.append(policy.delay(True, now))
        policy.started(now)
        now += 3
    assert max(delays) <= 0.5 and policy.attempt == 1
    assert policy.delay(False, now) == 1.0


@pytest.mark.anyio
async def test_run_feed_lets_a_bug_through() -> None:
    @asynccontextmanager
    async def connect(url: str, headers: Mapping[str, str]) -> AsyncIterator[Transport]:
        yield MemoryTransport([])

    runner = ScriptedRunner([KeyError("bug")])
    with pytest.raises(KeyError):
        await run_feed(runner, "ws://x", _settings(), None, connect=connect,
                       max_sessions=3)
    assert runner.disconnects == []


async def _serve_raw() -> tuple[anyio.abc.SocketListener, int]:
    """A raw TCP listener on a free port (serve it with ``listener.serve(handler)``)."""
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    return listener, listener.extra(anyio.abc.SocketAttribute.local_port)


def _no_env_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("http_proxy", "https_proxy", "ws_proxy", "wss_proxy", "all_proxy",
                 "socks_proxy", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)


async def _connect_fails(handler: Callable[[anyio.abc.SocketStream], Awaitable[None]],
                         client: WsClient, match: str, *,
                         proxy: pytest.MonkeyPatch | None = None,
                         open_timeout_s: float = 2) -> None:
    """Serve ``handler`` on a raw listener and expect ``open_websocket`` to raise a
    ``ConnectError`` matching ``match``: connecting to the listener, or, with ``proxy`` (the
    test's monkeypatch), to an unresolvable host through the listener as ``http_proxy``."""
    listener, port = await _serve_raw()
    url = f"ws://127.0.0.1:{port}"
    if proxy is not None:
        proxy.setenv("http_proxy", f"http://127.0.0.1:{port}")
        url = "ws://example.invalid:9"
    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, handler)
        with anyio.fail_after(5), pytest.raises(ConnectError, match=match):
            async with open_websocket(url, {}, open_timeout_s=open_timeout_s,
                                      max_frame_bytes=1 << 20, client=client):
                pass
        tg.cancel_scope.cancel()


@pytest.mark.integration
@pytest.mark.anyio
@pytest.mark.parametrize("client", WS_CLIENTS)
async def test_open_websocket_maps_a_refused_connection_to_connect_error(client: WsClient) -> None:
    listener, port = await _serve_raw()
    await listener.aclose()  # nothing listens there now
    with pytest.raises(ConnectError, match="connect failed"):
        async with open_websocket(f"ws://127.0.0.1:{port}", {}, open_timeout_s=2,
                                  max_frame_bytes=1 << 20, client=client):
            pass


@pytest.mark.integration
@pytest.mark.anyio
@pytest.mark.parametrize("client", WS_CLIENTS)
async def test_open_websocket_reports_a_rejected_upgrade_with_its_status(client: WsClient) -> None:
    async def answer_401(stream: anyio.abc.SocketStream) -> None:
        async with stream:
            await stream.receive()
            await stream.send(b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n\r\n")

    await _connect_fails(answer_401, client, "HTTP 401")


@pytest.mark.integration
@pytest.mark.anyio
@pytest.mark.parametrize("client", WS_CLIENTS)
async def test_default_connect_uses_the_configured_client_both_ways(client: WsClient) -> None:
    from websockets.asyncio.server import ServerConnection, serve

    got: list[str] = []

    async def echo(ws: ServerConnection) -> None:
        await ws.send("0hello")
        got.append(str(await ws.recv()))
        await ws.send("é" * 70_000)  # a long frame, and text that is not ASCII

    async with serve(echo, "127.0.0.1", 0, compression=None) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        connect = default_connect(FeedSettings(ws_client=client))
        async with connect(f"ws://127.0.0.1:{port}", {}) as transport:
            assert isinstance(transport, WebSocketTransport) and transport.client == client
            assert await transport.receive() == "0hello"
            await transport.send("40/markets,")
            assert await transport.receive() == "é" * 70_000
    assert got == ["40/markets,"]


@pytest.mark.integration
@pytest.mark.anyio
@pytest.mark.parametrize("client", WS_CLIENTS)
@pytest.mark.parametrize("answer", [b"", b"HTTP/1.1 101 Switching"])
async def test_a_peer_that_closes_during_the_upgrade_is_a_connect_error(
        client: WsClient, answer: bytes, monkeypatch: pytest.MonkeyPatch) -> None:
    _no_env_proxy(monkeypatch)

    async def close_early(stream: anyio.abc.SocketStream) -> None:
        async with stream:
            await stream.receive()
            if answer:
                await stream.send(answer)

    await _connect_fails(close_early, client, "connect failed")


@pytest.mark.integration
@pytest.mark.anyio
@pytest.mark.parametrize("client", WS_CLIENTS)
@pytest.mark.parametrize(("proxy_answer", "match"), [
    (None, "timed out after 0.5s"),  # a proxy that never answers CONNECT: one deadline
    (b"HTTP/1.1 407 Proxy Authentication Required\r\nContent-Length: 0\r\n\r\n",
     "connect failed"),
])
async def test_an_environment_proxy_that_fails_is_a_connect_error_within_the_timeout(
        client: WsClient, proxy_answer: bytes | None, match: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    _no_env_proxy(monkeypatch)

    async def proxy(stream: anyio.abc.SocketStream) -> None:
        async with stream:
            await stream.receive()
            if proxy_answer is None:
                await anyio.sleep_forever()
            await stream.send(proxy_answer)
            await anyio.sleep(1)

    await _connect_fails(proxy, client, match, proxy=monkeypatch, open_timeout_s=0.5)


@pytest.mark.integration
@pytest.mark.anyio
@pytest.mark.parametrize("client", WS_CLIENTS)
async def test_no_proxy_is_honoured_by_both_clients(
        client: WsClient, monkeypatch: pytest.MonkeyPatch) -> None:
    from websockets.asyncio.server import ServerConnection, serve

    _no_env_proxy(monkeypatch)
    dead, dead_port = await _serve_raw()
    await dead.aclose()  # nothing listens there: going through the proxy would fail
    monkeypatch.setenv("http_proxy", f"http://127.0.0.1:{dead_port}")
    monkeypatch.setenv("no_proxy", "127.0.0.1")

    async def hello(ws: ServerConnection) -> None:
        await ws.send("0hello")

    async with serve(hello, "127.0.0.1", 0, compression=None) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        async with open_websocket(f"ws://127.0.0.1:{port}", {}, open_timeout_s=2,
                                  max_frame_bytes=1 << 20, client=client) as transport:
            assert await transport.receive() == "0hello"


def test_without_picows_the_websockets_library_is_used(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    import importlib

    import streamer.transport.websocket as ws

    real = importlib.import_module

    def no_picows(name: str, package: str | None = None) -> Any:
        if name.startswith("picows"):
            raise ImportError(f"No module named {name!r}")
        return real(name, package)

    monkeypatch.setattr(ws, "_LIBRARIES", {})
    monkeypatch.setattr(ws.importlib, "import_module", no_picows)
    library = ws._library("picows")
    assert library.name == "websockets"
    assert ws._library("picows") is library  # warned once, then cached
    assert [r.message for r in caplog.records].count(
        "feed.ws_client: picows is not importable "
        "(No module named 'picows.websockets'); using websockets") == 1
