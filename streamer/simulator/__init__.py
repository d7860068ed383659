"""Embedded Limitless Exchange simulator: REST + Socket.IO on loopback.

Used by the integration tests and by the ``simulate`` and ``demo`` commands::

    sim = Simulator(SimulatorConfig(seed=7, rate_hz=50))
    async with anyio.create_task_group() as tg:
        address = await tg.start(sim.run)   # SimulatorAddress(api_url=..., ws_url=...)
        ...
        tg.cancel_scope.cancel()

It is written independently of the client codec (``streamer.protocol``) and REST
client so tests compare two implementations of the wire contract.
"""

from __future__ import annotations

from streamer.simulator.account import Account, AllowanceReply, Allowances, PrivateEvent
from streamer.simulator.auth import AuthResult, SimulatorAuth, verify_request
from streamer.simulator.exchange import (
    BookUpdate,
    BookView,
    Exchange,
    ExchangeEvent,
    Level,
    Market,
    MarketCreated,
    MarketResolved,
    PriceUpdate,
    SimulatorConfig,
    StepEvent,
)
from streamer.simulator.rest import RestStats
from streamer.simulator.server import Simulator, SimulatorAddress, SimulatorStats
from streamer.simulator.ws import WsStats

__all__ = [
    "Account",
    "AllowanceReply",
    "Allowances",
    "AuthResult",
    "BookUpdate",
    "BookView",
    "Exchange",
    "ExchangeEvent",
    "Level",
    "Market",
    "MarketCreated",
    "MarketResolved",
    "PriceUpdate",
    "PrivateEvent",
    "RestStats",
    "Simulator",
    "SimulatorAddress",
    "SimulatorAuth",
    "SimulatorConfig",
    "SimulatorStats",
    "StepEvent",
    "WsStats",
    "verify_request",
]
