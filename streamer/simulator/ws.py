"""The simulator's WebSocket side: Engine.IO v4 + Socket.IO v5, server role.

Written independently of the client codec in ``streamer/protocol`` so that the
tests exercise two implementations against each other. Wire rules (API
reference §3):

* Engine.IO open ``0{"sid",…,"pingInterval","pingTimeout","maxPayload"}`` first;
  the server sends ``2`` every ``pingInterval`` and closes the socket when no
  ``3`` comes back within ``pingTimeout``.
* ``40/markets,`` -> ``40/markets,{"sid":…}``; ``41/markets,`` from the client closes.
* ``subscribe_market_prices`` replaces the socket's slug/address subscription;
  nothing is pushed on subscribe (clients seed books from REST).
* ``orderbookUpdate``/``newPriceData`` go to subscribers; ``marketCreated`` and
  ``marketResolved`` go to every socket on ``/markets`` (lenient superset of
  ``subscribe_market_lifecycle``).

Authentication (§3.1), when ``SimulatorConfig.auth`` is set: an upgrade request that
carries ``lmts-api-key`` (HMAC, signed over ``GET`` and the path and query actually
received) or ``X-API-Key`` is verified, and refused with HTTP 401 when wrong or stale;
a request without them is an anonymous (public) socket. ``subscribe_positions``,
``subscribe_order_events`` and ``subscribe_transactions`` on an anonymous socket get an
``exception`` event; on an authenticated one they start the private pushes
(``positions``, ``orderEvent``, ``tx``; see :meth:`SocketIOHub.publish_private`). An
authenticated socket gets an ``authenticated`` event after its namespace connect.

Faults: :meth:`SocketIOHub.kick_all` (``41/markets,`` then close),
:meth:`SocketIOHub.stall` (total silence, connections stay open) and
``malformed_rate`` (event frames replaced by broken ones).
"""

from __future__ import annotations

import logging
import random
import secrets
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Final, TypeAlias
from urllib.parse import parse_qs, urlsplit

import anyio
import anyio.abc
import msgspec
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from streamer.simulator.account import PrivateEvent
from streamer.simulator.auth import verify_request
from streamer.simulator.exchange import (
    BookUpdate,
    ExchangeEvent,
    MarketCreated,
    MarketResolved,
    PriceUpdate,
    SimulatorConfig,
)
from streamer.simulator.rest import JSON_ENCODER, Quirks, iso_ms, orderbook_payload

__all__ = ["MAX_PAYLOAD", "NAMESPACE", "SocketIOHub", "WsStats", "event_frame"]

logger = logging.getLogger(__name__)

NAMESPACE: Final = "/markets"
EIO_PATHS: Final = frozenset({"/socket.io/", "/socket.io"})
MAX_PAYLOAD: Final = 1_000_000
QUEUE_FRAMES: Final = 4096
"""Per-socket outgoing queue; a client that lets it fill up is disconnected."""
SHUTDOWN_TIMEOUT_S: Final = 5.0
HANDSHAKES_KEPT: Final = 100
NOISE_P: Final = 0.02
"""Quirks: probability of an extra ``system``/unknown event after a pushed frame."""
_DECODER: Final = msgspec.json.Decoder()
PRIVATE_CHANNELS: Final = {
    "subscribe_positions": "positions",
    "subscribe_order_events": "orderEvent",
    "subscribe_transactions": "tx",
}
"""Private subscribe event → the event name it starts pushing (§3.4)."""
_AUTH_HEADERS: Final = ("lmts-api-key", "x-api-key")


def event_frame(name: str, payload: Any, namespace: str = NAMESPACE) -> str:
    """``42/markets,["name",payload]`` with exact Decimals."""
    return f"42{namespace},{JSON_ENCODER.encode([name, payload]).decode()}"


@dataclass
class WsStats:
    """WebSocket counters (tests assert on them).

    Attributes:
        connections_accepted: WebSocket handshakes completed.
        connections_rejected: upgrade requests refused (wrong path or query).
        namespace_connects: ``40/markets,`` answered.
        subscriptions: ``subscribe_market_prices`` calls received.
        kicks: sockets kicked (``41/markets,`` + close).
        stalls: stalls started.
        frames_sent: text frames written, pings included.
        events_sent: event frames written, by event name.
        malformed_sent: event frames replaced by malformed ones.
        dropped_in_stall: event frames not sent because of a stall.
        pings_sent: Engine.IO pings written.
        pongs_received: Engine.IO pongs read.
        ping_timeouts: sockets closed for a missing pong.
        overflow_closes: sockets closed because their queue filled up.
        unknown_emits: client events the server ignored.
        handshake_paths: request paths of the last accepted upgrades, oldest first.
        auth_accepted: upgrades with valid credentials.
        auth_rejected: upgrades refused with 401, by reason (``stale_timestamp`` …).
        private_subscriptions: private subscribes accepted.
        private_refused: private subscribes on anonymous sockets (``exception`` sent).
    """

    connections_accepted: int = 0
    connections_rejected: int = 0
    namespace_connects: int = 0
    subscriptions: int = 0
    kicks: int = 0
    stalls: int = 0
    frames_sent: int = 0
    events_sent: dict[str, int] = field(default_factory=dict)
    malformed_sent: int = 0
    dropped_in_stall: int = 0
    pings_sent: int = 0
    pongs_received: int = 0
    ping_timeouts: int = 0
    overflow_closes: int = 0
    unknown_emits: int = 0
    handshake_paths: deque[str] = field(default_factory=lambda: deque(maxlen=HANDSHAKES_KEPT))
    auth_accepted: int = 0
    auth_rejected: Counter[str] = field(default_factory=Counter)
    private_subscriptions: int = 0
    private_refused: int = 0


class _Kick:
    """Queue marker: send ``41/markets,`` and close."""


_KICK: Final = _Kick()
_Item: TypeAlias = str | _Kick


class _Session:
    """One WebSocket connection: its queue, namespaces and subscriptions."""

    def __init__(self, ws: ServerConnection) -> None:
        self.ws = ws
        self.sid = secrets.token_urlsafe(15)
        send, receive = anyio.create_memory_object_stream[_Item](QUEUE_FRAMES)
        self.send: MemoryObjectSendStream[_Item] = send
        self.receive: MemoryObjectReceiveStream[_Item] = receive
        self.namespaces: set[str] = set()
        self.slugs: frozenset[str] = frozenset()
        self.addresses: frozenset[str] = frozenset()
        self.lifecycle = False
        self.authenticated = False
        self.private: set[str] = set()
        self.pong = anyio.Event()
        self.scope: anyio.CancelScope | None = None

    @property
    def joined(self) -> bool:
        return NAMESPACE in self.namespaces


class SocketIOHub:
    """Serves the Socket.IO endpoint and fans exchange events out to sockets.

    Args:
        config: simulator configuration (ping times, quirks, malformed rate, auth).
        stats: counters to update.
        clock: epoch seconds, for the HMAC timestamp window.
    """

    def __init__(
        self, config: SimulatorConfig, stats: WsStats, *, clock: Callable[[], float] = time.time
    ) -> None:
        self._config = config
        self._stats = stats
        self._clock = clock
        self._sessions: set[_Session] = set()
        self._stall_until = 0.0
        self._rng = random.Random(f"ws-faults-{config.seed}")
        self._quirks = Quirks(config.quirks, random.Random(f"ws-quirks-{config.seed}"))

    # -- server ----------------------------------------------------------------------

    async def serve(
        self,
        host: str,
        port: int,
        *,
        task_status: anyio.abc.TaskStatus[int] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        """Listen on ``host:port`` (0 = any free port) until cancelled; reports the port."""
        # websockets' own pings are off: liveness is Engine.IO's job, and a stall
        # must be total silence.
        server = await serve(
            self._handle,
            host,
            port,
            process_request=self._process_request,
            ping_interval=None,
            max_size=MAX_PAYLOAD,
        )
        try:
            task_status.started(server.sockets[0].getsockname()[1])
            await anyio.sleep_forever()
        finally:
            # Shielded so the close handshake and handler exits survive cancellation.
            with anyio.CancelScope(shield=True), anyio.move_on_after(SHUTDOWN_TIMEOUT_S):
                server.close()
                await server.wait_closed()

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        parts = urlsplit(request.path)
        if parts.path not in EIO_PATHS:
            self._stats.connections_rejected += 1
            return connection.respond(404, "Not Found\n")
        query = parse_qs(parts.query)
        if query.get("EIO") != ["4"] or query.get("transport") != ["websocket"]:
            self._stats.connections_rejected += 1
            return connection.respond(400, '{"code":5,"message":"Unsupported protocol version"}')
        if self._config.auth is not None and _has_credentials(request):
            verdict = verify_request(self._config.auth, request.headers, "GET", request.path,
                                     b"", self._clock())
            if not verdict.ok:
                self._stats.auth_rejected[verdict.reason or "unknown"] += 1
                return connection.respond(401, '{"statusCode":401,"message":"Unauthorized"}')
            self._stats.auth_accepted += 1
        self._stats.handshake_paths.append(request.path)
        return None

    async def _handle(self, ws: ServerConnection) -> None:
        session = _Session(ws)
        # _process_request refused every upgrade whose credentials did not verify.
        request = ws.request
        session.authenticated = (
            self._config.auth is not None and request is not None and _has_credentials(request)
        )
        self._stats.connections_accepted += 1
        self._sessions.add(session)
        try:
            async with anyio.create_task_group() as tg:
                session.scope = tg.cancel_scope
                tg.start_soon(self._write_loop, session)
                tg.start_soon(self._ping_loop, session)
                self._control(session, self._open_frame(session))
                await self._read_loop(session)
                tg.cancel_scope.cancel()
        finally:
            self._sessions.discard(session)
            session.send.close()
            session.receive.close()
            with anyio.CancelScope(shield=True), anyio.move_on_after(SHUTDOWN_TIMEOUT_S):
                await ws.close()

    def _open_frame(self, session: _Session) -> str:
        """Engine.IO open packet (EIO v4 §open): the first frame of every connection."""
        return "0" + JSON_ENCODER.encode({
            "sid": session.sid,
            "upgrades": [],
            "pingInterval": self._config.ping_interval_ms,
            "pingTimeout": self._config.ping_timeout_ms,
            "maxPayload": MAX_PAYLOAD,
        }).decode()

    # -- per-connection loops ---------------------------------------------------------

    async def _read_loop(self, session: _Session) -> None:
        try:
            async for message in session.ws:
                if isinstance(message, str) and not self._on_frame(session, message):
                    return
        except ConnectionClosed:
            return

    async def _write_loop(self, session: _Session) -> None:
        try:
            async for item in session.receive:
                await self._wait_unstalled()
                if isinstance(item, _Kick):
                    await self._send(session, f"41{NAMESPACE},")
                    await session.ws.close()
                    return
                await self._send(session, item)
        except ConnectionClosed:
            pass
        if session.scope is not None:
            session.scope.cancel()

    async def _send(self, session: _Session, frame: str) -> None:
        await session.ws.send(frame)
        self._stats.frames_sent += 1

    async def _ping_loop(self, session: _Session) -> None:
        interval = self._config.ping_interval_ms / 1000
        while True:
            await anyio.sleep(interval)
            await self._wait_unstalled()  # a stall silences pings too
            session.pong = anyio.Event()
            self._control(session, "2")
            self._stats.pings_sent += 1
            if not await self._got_pong(session):
                self._stats.ping_timeouts += 1
                logger.debug("sid %s: ping timeout", session.sid)
                await session.ws.close(1000, "ping timeout")
                return

    async def _got_pong(self, session: _Session) -> bool:
        timeout = self._config.ping_timeout_ms / 1000
        while True:
            started = anyio.current_time()
            with anyio.move_on_after(timeout):
                await session.pong.wait()
                return True
            if self._stall_until <= started:
                return False
            # A stall held our ping back: give the client a full timeout again.

    async def _wait_unstalled(self) -> None:
        # A plain sleep to a deadline that stall() may push further out, re-checked after.
        while (remaining := self._stall_until - anyio.current_time()) > 0:  # noqa: ASYNC110
            await anyio.sleep(remaining)

    # -- incoming frames --------------------------------------------------------------

    def _on_frame(self, session: _Session, text: str) -> bool:
        """Handle one Engine.IO packet; returns False when the socket must close."""
        kind, body = text[:1], text[1:]
        if kind == "3":
            self._stats.pongs_received += 1
            session.pong.set()
        elif kind == "2":
            self._control(session, "3" + body)  # an EIO v3-style client ping: answer it
        elif kind == "1":
            return False
        elif kind == "4" and body:
            return self._on_packet(session, body)
        return True

    def _on_packet(self, session: _Session, packet: str) -> bool:
        """Handle one Socket.IO packet (``<type>[<nsp>,][<ack>][<json>]``)."""
        kind, rest = packet[0], packet[1:]
        namespace = "/"
        if rest.startswith("/"):
            namespace, _, rest = rest.partition(",")
        digits = len(rest) - len(rest.lstrip("0123456789"))
        ack, rest = (int(rest[:digits]) if digits else None), rest[digits:]
        if kind == "0":
            self._connect(session, namespace)
        elif kind == "1":
            return namespace != NAMESPACE
        elif kind == "2" and namespace in session.namespaces:
            self._on_event(session, namespace, ack, rest)
        return True

    def _connect(self, session: _Session, namespace: str) -> None:
        prefix = "" if namespace == "/" else f"{namespace},"
        if namespace not in (NAMESPACE, "/"):
            self._control(session, f"44{prefix}" + '{"message":"Invalid namespace"}')
            return
        session.namespaces.add(namespace)
        self._stats.namespace_connects += 1
        sid = JSON_ENCODER.encode({"sid": secrets.token_urlsafe(15)}).decode()
        self._control(session, f"40{prefix}{sid}")
        if session.authenticated and namespace == NAMESPACE and self._config.auth is not None:
            notice = {"message": "Authenticated", "account": self._config.auth.account}
            self._control(session, event_frame("authenticated", notice))

    def _on_event(self, session: _Session, namespace: str, ack: int | None, data: str) -> None:
        try:
            args = _DECODER.decode(data)
        except msgspec.DecodeError:
            logger.debug("sid %s: undecodable event %r", session.sid, data[:200])
            return
        if not isinstance(args, list) or not args or not isinstance(args[0], str):
            return
        payload = args[1] if len(args) > 1 and isinstance(args[1], dict) else {}
        reply = self._dispatch(session, args[0], payload)
        if ack is not None:
            prefix = "" if namespace == "/" else f"{namespace},"
            self._control(session, f"43{prefix}{ack}{JSON_ENCODER.encode([reply]).decode()}")

    def _dispatch(self, session: _Session, name: str, payload: dict[str, Any]) -> dict[str, Any]:
        if name == "subscribe_market_prices":
            self._subscribe(session, payload)
        elif name == "subscribe_market_lifecycle":
            session.lifecycle = True
        elif name == "unsubscribe_market_lifecycle":
            session.lifecycle = False
        elif name in PRIVATE_CHANNELS:
            return self._subscribe_private(session, name)
        elif name == "unsubscribe":
            channel = payload.get("channel")
            if channel == "subscribe_market_prices":
                session.slugs, session.addresses = frozenset(), frozenset()
            elif isinstance(channel, str) and channel in PRIVATE_CHANNELS:
                session.private.discard(PRIVATE_CHANNELS[channel])
            return {"success": True, "channel": channel}
        else:
            self._stats.unknown_emits += 1
            logger.debug("sid %s: ignored emit %r", session.sid, name)
        return {"success": True}

    def _subscribe(self, session: _Session, payload: dict[str, Any]) -> None:
        # Reference §3.4: each call REPLACES the socket's market-price subscription.
        slugs = _strings(payload.get("marketSlugs")) | _strings(payload.get("marketSlug"))
        addresses = _strings(payload.get("marketAddresses"))
        addresses |= _strings(payload.get("marketAddress"))
        session.slugs = frozenset(slugs)
        session.addresses = frozenset(a.lower() for a in addresses)
        self._stats.subscriptions += 1
        if self._quirks.chance(0.5):
            notice = {
                "message": "Successfully subscribed to market prices",
                "markets": {"addresses": sorted(addresses), "slugs": sorted(slugs)},
            }
            self._control(session, event_frame("system", notice))

    def _subscribe_private(self, session: _Session, name: str) -> dict[str, Any]:
        if not session.authenticated:
            self._stats.private_refused += 1
            message = f"Unauthorized: {name} requires an authenticated connection"
            self._control(session, event_frame("exception", {"status": "error",
                                                             "message": message}))
            return {"success": False, "error": message}
        session.private.add(PRIVATE_CHANNELS[name])
        self._stats.private_subscriptions += 1
        if name == "subscribe_positions":
            notice = {"message": "Successfully subscribed to position updates"}
            self._control(session, event_frame("system", notice))
        return {"success": True}

    # -- outgoing ---------------------------------------------------------------------

    def _control(self, session: _Session, frame: str) -> None:
        """Queue a frame that must not be lost (held, not dropped, during a stall)."""
        self._enqueue(session, frame)

    def _enqueue(self, session: _Session, item: _Item) -> None:
        try:
            session.send.send_nowait(item)
        except anyio.WouldBlock:
            self._stats.overflow_closes += 1
            logger.warning("sid %s: outgoing queue full, disconnecting", session.sid)
            if session.scope is not None:
                session.scope.cancel()
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            pass

    def publish(self, events: Iterable[ExchangeEvent]) -> None:
        """Push exchange events to the sockets that should see them."""
        for event in events:
            targets = [s for s in self._sessions if self._wants(s, event)]
            if not targets:
                continue
            name, payload = self._render(event)
            frame = event_frame(name, payload)
            for session in targets:
                self._push(session, name, payload, frame)

    def publish_private(self, events: Iterable[PrivateEvent]) -> None:
        """Push the user's private events to authenticated sockets that subscribed them."""
        for event in events:
            targets = [s for s in self._sessions if s.joined and event.name in s.private]
            if not targets:
                continue
            frame = event_frame(event.name, event.payload)
            for session in targets:
                self._push(session, event.name, event.payload, frame)

    def publish_frame(self, slug: str, name: str, payload: Any) -> int:
        """Push one hand-made event to the sockets subscribed to ``slug``; returns how many."""
        frame = event_frame(name, payload)
        targets = [s for s in self._sessions if s.joined and slug in s.slugs]
        for session in targets:
            self._enqueue(session, frame)
        return len(targets)

    @property
    def private_subscribers(self) -> int:
        """Open sockets with at least one private subscription."""
        return sum(1 for s in self._sessions if s.private)

    def _wants(self, session: _Session, event: ExchangeEvent) -> bool:
        if not session.joined:
            return False
        if isinstance(event, BookUpdate):
            return event.slug in session.slugs
        if isinstance(event, PriceUpdate):
            return event.address.lower() in session.addresses
        return True  # lifecycle: everyone on /markets, subscribed or not

    def _push(self, session: _Session, name: str, payload: Any, frame: str) -> None:
        if self.stalled:
            self._stats.dropped_in_stall += 1
            return
        if self._config.malformed_rate and self._rng.random() < self._config.malformed_rate:
            frame = malformed_frame(self._rng, name, payload)
            self._stats.malformed_sent += 1
        self._stats.events_sent[name] = self._stats.events_sent.get(name, 0) + 1
        self._enqueue(session, frame)
        if self._quirks.chance(NOISE_P):
            self._enqueue(session, self._noise())

    def _noise(self) -> str:
        if not self._config.unknown_events or self._rng.random() < 0.5:
            return event_frame("system", {"message": "Simulator heartbeat notice"})
        return event_frame("marketStats", {"openMarkets": len(self._sessions), "note": "unknown"})

    def _render(self, event: ExchangeEvent) -> tuple[str, dict[str, Any]]:
        if isinstance(event, BookUpdate):
            return "orderbookUpdate", _book_payload(event, self._quirks)
        if isinstance(event, PriceUpdate):
            return "newPriceData", _price_payload(event, self._quirks)
        if isinstance(event, MarketCreated):
            return "marketCreated", _created_payload(event)
        return "marketResolved", _resolved_payload(event)

    # -- faults and inspection --------------------------------------------------------

    @property
    def stalled(self) -> bool:
        """Whether a stall is in progress."""
        return anyio.current_time() < self._stall_until

    def stall(self, seconds: float) -> None:
        """Go silent on every socket for ``seconds`` (no pings, no data, no close).

        Event frames produced meanwhile are dropped; control frames are held.
        """
        self._stall_until = max(self._stall_until, anyio.current_time() + seconds)
        self._stats.stalls += 1

    def kick_all(self) -> int:
        """Send ``41/markets,`` to every socket, then close it. Returns how many."""
        sessions = list(self._sessions)
        for session in sessions:
            self._enqueue(session, _KICK)
        self._stats.kicks += len(sessions)
        return len(sessions)

    def subscriptions(self) -> list[frozenset[str]]:
        """The market-slug subscription of every open socket."""
        return [session.slugs for session in self._sessions]

    @property
    def connections(self) -> int:
        """Open sockets."""
        return len(self._sessions)


def _has_credentials(request: Request) -> bool:
    return any(request.headers.get(name) is not None for name in _AUTH_HEADERS)


def _strings(value: object) -> set[str]:
    if isinstance(value, str):
        return {value}
    if isinstance(value, list):
        return {v for v in value if isinstance(v, str)}
    return set()


def _book_payload(event: BookUpdate, quirks: Quirks) -> dict[str, Any]:
    stamp = event.book.timestamp_ms or 0
    return quirks.decorate(
        {
            "marketSlug": event.slug,
            "orderbook": orderbook_payload(event.book, quirks, rest=False),
            "timestamp": quirks.timestamp(stamp),
        }
    )


def _created_payload(event: MarketCreated) -> dict[str, Any]:
    market = event.market
    payload: dict[str, Any] = {
        "slug": event.slug,
        "title": market.title,
        "type": market.trade_type.upper(),
        "categoryIds": [1],
        "createdAt": iso_ms(market.created_ms),
    }
    if market.group_slug is not None:
        payload["groupSlug"] = market.group_slug
    return payload


def _resolved_payload(event: MarketResolved) -> dict[str, Any]:
    market = event.market
    winner = market.winning_index or 0
    return {
        "slug": event.slug,
        "type": market.trade_type.upper(),
        "winningOutcome": "YES" if winner == 0 else "NO",
        "winningIndex": winner,
        "resolutionDate": iso_ms(market.resolved_ms or 0),
    }


def _price_payload(event: PriceUpdate, quirks: Quirks) -> dict[str, Any]:
    prices: Any
    if quirks.chance(0.3):  # the docs page's shape: {"yes": "0.65", "no": "0.35"}
        prices = {"yes": str(event.yes_price), "no": str(event.no_price)}
    else:
        entry = {
            "marketId": event.market_id,
            "marketAddress": event.address,
            "yesPrice": quirks.number(event.yes_price),
            "noPrice": quirks.number(event.no_price),
        }
        prices = [entry]
    payload = {
        "marketAddress": event.address,
        "updatedPrices": prices,
        "blockNumber": event.block_number,
        "timestamp": quirks.timestamp(event.timestamp_ms),
    }
    return quirks.decorate(payload)


def malformed_frame(rng: random.Random, name: str, payload: Any) -> str:
    """A broken stand-in for ``42/markets,[name,payload]`` (one of several kinds)."""
    frame = event_frame(name, payload)
    kind = rng.randrange(6)
    if kind == 0:
        return frame[: max(12, len(frame) // 2)]  # truncated JSON
    if kind == 1:
        return rng.choice(("42/markets,}{garbage", "9nonsense", "4", "42/markets,[]", "\x00\x01"))
    if kind == 2:
        return event_frame(name, {"marketSlug": 12345, "orderbook": "oops", "timestamp": [None]})
    if kind == 3 and name == "orderbookUpdate":
        return event_frame(name, _poisoned(rng, payload))
    if kind == 4:
        return event_frame("mysteryEvent", {"payload": rng.random()})
    return f"42{NAMESPACE},[\"{name}\",{{\"marketSlug\":"  # cut mid-object


def _poisoned(rng: random.Random, payload: dict[str, Any]) -> dict[str, Any]:
    """The same book with a NaN price or an infinite size on its best level."""
    book = dict(payload["orderbook"])
    side = "bids" if book["bids"] and (rng.random() < 0.5 or not book["asks"]) else "asks"
    levels = [dict(level) for level in book[side]]
    if levels:
        key, bad = rng.choice((("price", "NaN"), ("size", "Infinity"), ("price", "-0.5")))
        levels[0][key] = bad
    else:
        levels = [{"price": "NaN", "size": Decimal(1)}]
    book[side] = levels
    return {**payload, "orderbook": book}


def orderbook_frame(event: BookUpdate, quirks: Quirks) -> str:
    """The ``orderbookUpdate`` frame the simulator would push for ``event`` (benchmarks)."""
    return event_frame("orderbookUpdate", _book_payload(event, quirks))
