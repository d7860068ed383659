"""The whole daemon with credentials: private channels and allowances end to end."""

from __future__ import annotations

import re
from functools import partial

import anyio
import pytest
from prometheus_client import CollectorRegistry

from sinks.fanout import SinkSpec
from sinks.memory import MemorySink
from sinks.records import Allowance, OrderEvent
from streamer import app
from streamer.config import load_settings
from streamer.feed.feed import Feed
from streamer.ops.metrics import Metrics
from streamer.partner.auth import HmacCredentials
from streamer.simulator import Simulator, SimulatorConfig
from streamer.simulator.auth import SimulatorAuth

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

SECRET = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="


async def test_daemon_streams_private_events_and_allowance_readiness(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level("DEBUG")
    auth = SimulatorAuth(token_id="tok-1", secret=SECRET)
    sim = Simulator(SimulatorConfig(seed=8, markets=3, groups=0, rate_hz=20.0, auth=auth,
                                    private_rate_hz=30.0, kick_every_s=1.0,
                                    allowance_profiles=(4543,)))
    sink = MemorySink()
    feeds: list[Feed] = []
    metrics = Metrics(CollectorRegistry(), process_metrics=False)
    async with anyio.create_task_group() as tg:
        address = await tg.start(sim.run)
        settings = load_settings(None, {
            "api_url": address.api_url, "ws_url": address.ws_url, "all_markets": True,
            "metrics_addr": "127.0.0.1:0",
            "feed": {"backoff": {"initial_s": 0.05, "cap_s": 0.2}},
            "private.channels": ["order_events", "positions", "transactions"],
            "allowances": {"profiles": [4543], "poll_interval_s": 0.2, "after_submit_s": 0.1,
                           "conflict_wait_s": 0.1},
        })
        tg.start_soon(partial(app.run, settings, HmacCredentials("tok-1", SECRET),
                              on_feed=feeds.append, handle_signals=False,
                              specs=[SinkSpec(sink=sink)], metrics=metrics))
        with anyio.fail_after(20):
            while not (
                feeds and sum(feeds[0].stats.disconnects.values()) >= 2
                and sim.stats.ws.auth_accepted >= 3 and feeds[0].stats.connected
                and any(isinstance(r, Allowance) and r.ready for r in sink.records)
                and sum(isinstance(r, OrderEvent) for r in sink.records) >= 10
            ):
                await anyio.sleep(0.05)
        tg.cancel_scope.cancel()
    # Every reconnect was signed afresh and accepted (the simulator rejects a signature
    # whose timestamp is more than 30 s old, and checks it over the path received).
    assert not sim.stats.ws.auth_rejected, sim.stats.ws.auth_rejected
    ids = [(r.source, r.event_id) for r in sink.records if isinstance(r, OrderEvent)]
    assert len(ids) == len(set(ids))  # eventId duplicates removed
    scrape = metrics.render("text/plain")[0].decode()
    assert 'limitless_streamer_allowance_ready{profile="4543"} 1.0' in scrape
    assert "limitless_streamer_private_events_total" in scrape
    # Book updates reach the events counter the NoData alert watches.
    books = re.search(r'feed_events_total\{event="orderbookUpdate"\} (\d+)', scrape)
    assert books is not None and int(books[1]) > 0, scrape
    everything = scrape + caplog.text + "".join(repr(r) for r in sink.records)
    assert SECRET not in everything
