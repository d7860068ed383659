"""Private channels end to end: supervisor + SocketIOProtocol + PrivateChannels over a real
websocket against the simulator, which verifies every HMAC handshake.

The runner below is the wiring the feed is meant to get (subscribe after every namespace
connect, ``handle`` every event, a portfolio snapshot per session outside the read loop).
The simulator and the client share one injected wall clock, so a kick after the clock
moved 31 s proves that the supervisor signs each handshake afresh.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager

import anyio
import anyio.lowlevel
import httpx
import pytest

from sinks.records import OrderEvent, Position, PrivateRaw, Record, Tx, encode
from streamer.config import FeedSettings
from streamer.errors import ConnectError, RestError, ServerDisconnect
from streamer.feed.retry import Backoff
from streamer.feed.supervisor import run_feed
from streamer.partner.auth import HmacCredentials, auth_headers
from streamer.partner.private import PrivateChannels, PrivateSettings
from streamer.protocol.session import (
    Disconnected,
    EventReceived,
    NamespaceConnected,
    SocketIOProtocol,
)
from streamer.simulator import Simulator, SimulatorAddress, SimulatorAuth, SimulatorConfig
from streamer.transport.rest import RestClient
from streamer.transport.websocket import ENGINEIO_PATH, Transport, open_websocket

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

SECRET = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
WRONG_SECRET = "c3VwZXItc2VjcmV0LWtleQ=="
TOKEN_ID = "tok-integration-01"
HMAC = HmacCredentials(TOKEN_ID, SECRET)
START_S = 1_768_469_400.123
FEED = FeedSettings(connect_timeout_s=5.0, backoff=Backoff(initial_s=0.01, cap_s=0.05, jitter=0))
CONFIG = SimulatorConfig(seed=5, markets=4, groups=0, amm_markets=0, rate_hz=0, quirks=True,
                         private_rate_hz=200.0, private_duplicate_p=0.3,
                         auth=SimulatorAuth(token_id=TOKEN_ID, secret=SECRET))
SETTINGS = PrivateSettings(channels=("positions", "order_events", "transactions"))


class Clock:
    def __init__(self) -> None:
        self.now = START_S

    def __call__(self) -> float:
        return self.now


class PrivateRunner:
    """A SessionRunner that streams the private channels into ``records``.

    In session 1, once ``per_session`` order events arrived, it moves the shared clock
    by ``advance_s`` and has the simulator kick every socket; in the last session it
    ends the session itself.
    """

    def __init__(self, sim: Simulator, rest: RestClient, clock: Clock, *, sessions: int,
                 per_session: int = 5, advance_s: float = 31.0) -> None:
        self.sim, self.rest, self.clock = sim, rest, clock
        self.channels = PrivateChannels(SETTINGS, clock_ms=lambda: int(clock() * 1000))
        self.records: list[Record] = []
        self.sessions = 0
        self.last_session = sessions
        self.per_session = per_session
        self.advance_s = advance_s
        self.disconnects: list[tuple[str, str]] = []
        self.snapshots = 0
        self.session_healthy = False

    async def before_connect(self) -> None:
        pass

    async def run_session(self, transport: Transport) -> None:
        self.sessions += 1
        protocol = SocketIOProtocol(namespace="/markets")
        connected = anyio.Event()
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._snapshot_when, connected)
            await self._read(transport, protocol, connected)

    async def _snapshot_when(self, connected: anyio.Event) -> None:
        await connected.wait()
        try:
            self.records.extend(await self.channels.snapshot(self.rest))
            self.snapshots += 1
        except RestError:
            pass  # counted by the channels' stats

    async def _read(
        self, transport: Transport, protocol: SocketIOProtocol, connected: anyio.Event
    ) -> None:
        order_events = 0
        kicked = False
        while True:
            protocol.receive_text(await transport.receive())
            for event in protocol.events_received():
                if isinstance(event, NamespaceConnected):
                    for name, payload in self.channels.subscribe_frames():
                        protocol.emit(name, payload)
                    connected.set()
                elif isinstance(event, EventReceived):
                    recv_ts = int(self.clock() * 1000)
                    records = self.channels.handle(event.name, event.payload, recv_ts)
                    for record in records or ():
                        self.records.append(record)
                        order_events += isinstance(record, OrderEvent)
                elif isinstance(event, Disconnected):
                    raise ServerDisconnect(f"server closed the session ({event.reason})")
            for out in protocol.data_to_send():
                await transport.send(out)
            if order_events >= self.per_session and self.snapshots == self.sessions:
                if self.sessions == self.last_session:
                    raise ServerDisconnect("test done")
                if not kicked:
                    kicked = True
                    self.clock.now += self.advance_s
                    self.sim.kick_all()

    def on_disconnect(self, reason: str, detail: str, attempt: int, delay_s: float) -> None:
        self.disconnects.append((reason, detail))


@asynccontextmanager
async def simulator(
    config: SimulatorConfig, clock: Clock
) -> AsyncIterator[tuple[Simulator, SimulatorAddress]]:
    sim = Simulator(config, clock=clock)
    async with anyio.create_task_group() as tg:
        address = await tg.start(sim.run)
        try:
            yield sim, address
        finally:
            tg.cancel_scope.cancel()


class RecordingConnect:
    """``open_websocket`` that remembers the headers of every handshake."""

    def __init__(self) -> None:
        self.headers: list[dict[str, str]] = []

    def __call__(
        self, url: str, headers: Mapping[str, str]
    ) -> AbstractAsyncContextManager[Transport]:
        self.headers.append(dict(headers))
        return open_websocket(url, headers, open_timeout_s=5.0, max_frame_bytes=1 << 20)


async def no_sleep(_: float) -> None:
    await anyio.lowlevel.checkpoint()


@asynccontextmanager
async def private_run(
    credentials: HmacCredentials, *, sessions: int
) -> AsyncIterator[tuple[Simulator, PrivateRunner, RecordingConnect, SimulatorAddress]]:
    """Run ``sessions`` supervised sessions, then yield while the simulator still runs."""
    clock = Clock()
    connect = RecordingConnect()
    async with simulator(CONFIG, clock) as (sim, address), httpx.AsyncClient() as http:
        rest = RestClient(http, base_url=address.api_url, credentials=credentials, clock=clock)
        runner = PrivateRunner(sim, rest, clock, sessions=sessions)
        with anyio.fail_after(20):
            await run_feed(runner, address.ws_url, FEED, credentials, connect=connect,
                           sleep=no_sleep, wall_clock=clock, max_sessions=sessions)
        yield sim, runner, connect, address


def assert_no_secret(*texts: str) -> None:
    for text in texts:
        assert SECRET not in text and WRONG_SECRET not in text


async def test_private_channels_resume_after_kick_with_fresh_signature(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    async with private_run(HMAC, sessions=2) as (sim, runner, connect, address):
        # The reused first signature is now 31 s old: the simulator refuses it.
        with pytest.raises(ConnectError, match="HTTP 401"):
            async with open_websocket(address.ws_url, connect.headers[0], open_timeout_s=5,
                                      max_frame_bytes=1 << 20):
                pass
    assert sim.stats.ws.auth_rejected == {"stale_timestamp": 1}

    # Two handshakes, both verified; the second signed 31 s later.
    assert sim.stats.ws.auth_accepted == 2
    first, second = connect.headers
    assert first["lmts-timestamp"] == "2026-01-15T09:30:00.123Z"
    assert second["lmts-timestamp"] == "2026-01-15T09:30:31.123Z"
    assert first["lmts-signature"] != second["lmts-signature"]
    assert [reason for reason, _ in runner.disconnects] == ["ServerDisconnect"] * 2

    # Subscribed twice (once per session), events flowed in both sessions.
    assert runner.channels.stats.subscriptions == 2
    assert sim.stats.ws.private_subscriptions == 6
    order_events = [r for r in runner.records if isinstance(r, OrderEvent)]
    assert len(order_events) >= 10
    assert {r.source for r in order_events} <= {"OME", "SETTLEMENT"}
    after_kick = int((START_S + 31) * 1000)
    assert any(r.recv_ts >= after_kick for r in order_events)  # the second session streamed
    keys = [(r.source, r.event_id) for r in order_events]
    assert len(keys) == len(set(keys))  # de-duplicated on eventId
    assert runner.channels.stats.duplicates > 0  # the simulator did re-send some
    assert runner.channels.stats.decode_errors == {}
    assert any(isinstance(r, Tx) for r in runner.records)
    snapshots = [r for r in runner.records if isinstance(r, Position) and r.origin == "snapshot"]
    assert len({r.recv_ts for r in snapshots}) == 2  # one snapshot per session
    assert runner.channels.stats.authenticated == 2
    assert all(r.event == "authenticated" for r in runner.records if isinstance(r, PrivateRaw))

    assert_no_secret(caplog.text, *(encode(r).decode() for r in runner.records),
                     *(detail for _, detail in runner.disconnects), repr(sim.config),
                     repr(runner.channels.stats), repr(sim.stats))


async def test_reused_stale_handshake_headers_rejected_by_live_simulator() -> None:
    clock = Clock()
    async with simulator(CONFIG, clock) as (sim, address):
        headers = auth_headers(HMAC, "GET", ENGINEIO_PATH, b"", clock())
        async with open_websocket(address.ws_url, headers, open_timeout_s=5,
                                  max_frame_bytes=1 << 20):
            pass
        clock.now += 31
        with pytest.raises(ConnectError, match="HTTP 401"):
            async with open_websocket(address.ws_url, headers, open_timeout_s=5,
                                      max_frame_bytes=1 << 20):
                pass
    assert sim.stats.ws.auth_accepted == 1
    assert sim.stats.ws.auth_rejected == {"stale_timestamp": 1}


async def test_wrong_secret_rejected_at_handshake_and_retried_without_leaking(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = HmacCredentials(TOKEN_ID, WRONG_SECRET)
    clock = Clock()
    connect = RecordingConnect()
    async with simulator(CONFIG, clock) as (sim, address), httpx.AsyncClient() as http:
        rest = RestClient(http, base_url=address.api_url, credentials=wrong, clock=clock)
        runner = PrivateRunner(sim, rest, clock, sessions=3)
        with anyio.fail_after(10):
            await run_feed(runner, address.ws_url, FEED, wrong, connect=connect, sleep=no_sleep,
                           wall_clock=clock, max_sessions=3)
    assert runner.disconnects == [("ConnectError", "upgrade rejected with HTTP 401")] * 3
    assert runner.sessions == 0 and runner.records == []
    assert sim.stats.ws.auth_rejected == {"bad_signature": 3}
    assert len(connect.headers) == 3  # signed for every attempt
    assert_no_secret(caplog.text, *(d for _, d in runner.disconnects))


async def test_snapshot_and_stream_agree_on_the_account() -> None:
    async with private_run(HMAC, sessions=1) as (sim, runner, _, _):
        pass
    snapshot = [r for r in runner.records if isinstance(r, Position) and r.origin == "snapshot"]
    assert snapshot and all(r.kind == "clob" for r in snapshot)
    assert {r.market for r in snapshot} <= set(sim.exchange.book_slugs())
    assert sim.stats.rest.auth_ok["hmac"] == 1
