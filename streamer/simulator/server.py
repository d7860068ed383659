"""The simulator process: REST server, Socket.IO server and market driver in one task group."""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import anyio
import anyio.abc
import msgspec

from streamer.ops.addr import bind_error
from streamer.simulator.account import Account
from streamer.simulator.exchange import Exchange, Market, SimulatorConfig
from streamer.simulator.rest import Quirks, RestHandler, RestServer, RestStats, orderbook_payload
from streamer.simulator.ws import SocketIOHub, WsStats

__all__ = ["Simulator", "SimulatorAddress", "SimulatorStats"]

logger = logging.getLogger(__name__)

MAX_CATCH_UP_STEPS = 100
"""Book steps run at most this many at once when the driver falls behind."""


class SimulatorAddress(msgspec.Struct, frozen=True):
    """Where a running simulator listens.

    Attributes:
        api_url: REST base URL, e.g. ``http://127.0.0.1:40123``.
        ws_url: WebSocket base URL (append ``/socket.io/?EIO=4&transport=websocket``).
    """

    api_url: str
    ws_url: str


@dataclass
class SimulatorStats:
    """Counters of a simulator: ``rest`` and ``ws`` plus shortcuts to the common ones."""

    rest: RestStats = field(default_factory=RestStats)
    ws: WsStats = field(default_factory=WsStats)
    book_steps: int = 0
    lifecycle_events: int = 0
    private_events: int = 0

    @property
    def connections_accepted(self) -> int:
        """WebSocket connections accepted."""
        return self.ws.connections_accepted

    @property
    def kicks(self) -> int:
        """Sockets kicked."""
        return self.ws.kicks

    @property
    def frames_sent(self) -> int:
        """WebSocket text frames written."""
        return self.ws.frames_sent

    @property
    def subscriptions(self) -> int:
        """``subscribe_market_prices`` calls received."""
        return self.ws.subscriptions


class Simulator:
    """A Limitless-compatible exchange on loopback (REST + Socket.IO).

    Args:
        config: markets, rates and faults; defaults to :class:`SimulatorConfig()`.
        clock: wall clock in epoch seconds, for book timestamps, market times and the
            HMAC timestamp window (inject one to test stale signatures).

    Attributes:
        account: the authenticated user (private events, portfolio, allowances).
    """

    def __init__(
        self,
        config: SimulatorConfig | None = None,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config if config is not None else SimulatorConfig()
        self._clock = clock
        self.exchange = Exchange(self.config, start_ms=self._now_ms())
        self.stats = SimulatorStats()
        self.account = Account(self.config, self.exchange)
        handler = RestHandler(self.config, self.exchange, self.stats.rest, account=self.account,
                              clock=clock)
        self._rest = RestServer(handler, self.stats.rest, self.config)
        self._hub = SocketIOHub(self.config, self.stats.ws, clock=clock)

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)

    async def run(
        self,
        *,
        host: str = "127.0.0.1",
        rest_port: int = 0,
        ws_port: int = 0,
        task_status: anyio.abc.TaskStatus[SimulatorAddress] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        """Serve until cancelled; reports the bound URLs through ``task_status``."""
        async with anyio.create_task_group() as tg:
            try:
                bound_rest = await tg.start(self._rest.serve, host, rest_port)
            except OSError as exc:
                raise bind_error("--rest-port", host, rest_port, exc) from None
            try:
                bound_ws = await tg.start(self._hub.serve, host, ws_port)
            except OSError as exc:
                raise bind_error("--ws-port", host, ws_port, exc) from None
            tg.start_soon(self._drive_books)
            config = self.config
            if config.auth is not None and config.private_rate_hz > 0:
                tg.start_soon(self._every, 1.0 / config.private_rate_hz, self._private_step)
            if config.lifecycle_every_s is not None:
                tg.start_soon(self._every, config.lifecycle_every_s, self._lifecycle)
            if config.kick_every_s is not None:
                tg.start_soon(self._every, config.kick_every_s, self.kick_all)
            if config.stall_every_s is not None:
                tg.start_soon(self._every, config.stall_every_s, self._stall_once)
            netloc = f"[{host}]" if ":" in host else host
            address = SimulatorAddress(f"http://{netloc}:{bound_rest}", f"ws://{netloc}:{bound_ws}")
            logger.info("simulator listening: REST %s, WS %s", address.api_url, address.ws_url)
            task_status.started(address)

    async def _drive_books(self) -> None:
        if self.config.rate_hz <= 0:
            return  # frozen books
        interval = 1.0 / self.config.rate_hz
        deadline = anyio.current_time()
        while True:
            deadline += interval
            await anyio.sleep_until(deadline)
            due = int((anyio.current_time() - deadline) / interval) + 1
            if due > MAX_CATCH_UP_STEPS:
                deadline = anyio.current_time()
                due = MAX_CATCH_UP_STEPS
            else:
                deadline += (due - 1) * interval
            for _ in range(due):
                events = self.exchange.step(self._now_ms())
                self.stats.book_steps += len(events)
                self._hub.publish(events)

    async def _every(self, period_s: float, action: Callable[[], object]) -> None:
        while True:
            await anyio.sleep(period_s)
            action()

    def _lifecycle(self) -> None:
        events = self.exchange.lifecycle_step(self._now_ms())
        self.stats.lifecycle_events += len(events)
        self._hub.publish(events)

    def _private_step(self) -> None:
        if self._hub.private_subscribers:
            self.push_private()

    def push_private(self) -> int:
        """Run one step of account activity now and push it; returns how many events."""
        events = self.account.step(self._now_ms())
        self.stats.private_events += len(events)
        self._hub.publish_private(events)
        return len(events)

    def _stall_once(self) -> None:
        self.stall(self.config.stall_for_s)

    def kick_all(self) -> int:
        """Send ``41/markets,`` to every socket and close it; returns how many."""
        return self._hub.kick_all()

    def stall(self, seconds: float) -> None:
        """Total silence on every socket for ``seconds`` (connections stay open)."""
        self._hub.stall(seconds)

    def pause(self) -> None:
        """Freeze books, AMM prices and lifecycle (faults keep running)."""
        self.exchange.pause()

    def resume(self) -> None:
        """Undo :meth:`pause`."""
        self.exchange.resume()

    def create_market(self) -> Market:
        """List a new market now and announce it (``marketCreated``)."""
        event = self.exchange.create_market(self._now_ms())
        self._hub.publish([event])
        return event.market

    def resolve_market(self, slug: str) -> Market:
        """Resolve a market now and announce it (``marketResolved``)."""
        event = self.exchange.resolve_market(slug, self._now_ms())
        self._hub.publish([event])
        return event.market

    def delist(self, slug: str) -> None:
        """Take a market off the venue (404 on REST, no updates) until :meth:`relist`."""
        self.exchange.delist(slug)

    def relist(self, slug: str) -> None:
        """Put a delisted market back."""
        self.exchange.relist(slug)

    def change_quiet_books(self) -> list[str]:
        """Change every quiet book without any event; returns their slugs."""
        slugs = self.exchange.quiet_slugs()
        for slug in slugs:
            self.exchange.change_silently(slug, self._now_ms())
        return slugs

    def push_book(self, slug: str, timestamp: object) -> int:
        """Push ``slug``'s current book now with the given ``timestamp`` field (e.g. an
        epoch in microseconds); returns how many sockets got it."""
        view = self.exchange.book_view(slug)
        payload = {"marketSlug": slug,
                   "orderbook": orderbook_payload(view, Quirks(False, random.Random(0)),
                                                  rest=False),
                   "timestamp": timestamp}
        return self._hub.publish_frame(slug, "orderbookUpdate", payload)

    def subscriptions(self) -> list[frozenset[str]]:
        """The market-slug subscription of every open socket."""
        return self._hub.subscriptions()

    @property
    def connections(self) -> int:
        """Open WebSocket connections."""
        return self._hub.connections
