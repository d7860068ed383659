"""Every record type the simulator can make the daemon emit validates against the schema.

The daemon runs public and private (``demo --private`` in one process): books through
kicks, lifecycle events, AMM prices, order events, positions, transactions, the
``authenticated`` notice, allowances. Each record is validated as its NDJSON bytes.
"""

from __future__ import annotations

import json
from functools import partial

import anyio
import jsonschema
import pytest
from prometheus_client import CollectorRegistry

from sinks.fanout import SinkSpec
from sinks.memory import MemorySink
from sinks.records import RECORD_TYPES, encode, record_type
from streamer import app
from streamer.config import load_settings
from streamer.ops.metrics import Metrics
from streamer.partner.auth import HmacCredentials
from streamer.schema import shipped
from streamer.simulator import Simulator, SimulatorConfig
from streamer.simulator.auth import SimulatorAuth

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

SECRET = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="


async def test_every_record_type_of_a_private_demo_run_validates() -> None:
    auth = SimulatorAuth(token_id="tok-1", secret=SECRET)
    sim = Simulator(SimulatorConfig(seed=4, markets=3, groups=1, rate_hz=40.0, auth=auth,
                                    private_rate_hz=30.0, kick_every_s=1.0,
                                    lifecycle_every_s=0.5, allowance_profiles=(4543,)))
    sink = MemorySink()
    async with anyio.create_task_group() as tg:
        address = await tg.start(sim.run)
        settings = load_settings(None, {
            "api_url": address.api_url, "ws_url": address.ws_url, "all_markets": True,
            "metrics_addr": "127.0.0.1:0", "discovery_interval_s": 0.5,
            "feed": {"backoff": {"initial_s": 0.05, "cap_s": 0.2}},
            "private.channels": ["order_events", "positions", "transactions"],
            "allowances": {"profiles": [4543], "poll_interval_s": 0.2, "after_submit_s": 0.1,
                           "conflict_wait_s": 0.1},
        })
        tg.start_soon(partial(app.run, settings, HmacCredentials("tok-1", SECRET),
                              handle_signals=False, specs=[SinkSpec(sink=sink)],
                              metrics=Metrics(CollectorRegistry(), process_metrics=False)))
        with anyio.fail_after(30):
            while {record_type(r) for r in sink.records} != set(RECORD_TYPES):
                await anyio.sleep(0.05)
        tg.cancel_scope.cancel()
    validator = jsonschema.Draft202012Validator(json.loads(shipped()))
    records = list(sink.records)
    bad = [(record_type(r), next(iter(validator.iter_errors(json.loads(encode(r))))).message)
           for r in records if not validator.is_valid(json.loads(encode(r)))]
    assert not bad, bad[:5]
    assert len({r.run for r in records}) == 1 and records[0].run
