"""Soak: the daemon against a kicking simulator for a while, books exact at the end.

CI runs it for a few seconds; ``SOAK_SECONDS=300 pytest tests/integration/test_soak.py -s``
runs it for five minutes and prints the figures.
"""

from __future__ import annotations

import os
import time

import anyio
import pytest

from streamer.simulator import SimulatorConfig
from tests.integration.test_daemon import _seq_ok, daemon

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

SOAK_SECONDS = float(os.environ.get("SOAK_SECONDS", "4"))


@pytest.mark.timeout(SOAK_SECONDS + 120)
async def test_soak_with_kicks_books_match_simulator() -> None:
    config = SimulatorConfig(seed=21, markets=20, groups=2, rate_hz=200.0, kick_every_s=3.0,
                             malformed_rate=0.002)
    started = time.monotonic()
    async with daemon(config) as h:
        checks = 0
        while time.monotonic() - started < SOAK_SECONDS:
            await anyio.sleep(min(20.0, SOAK_SECONDS))
            # Mid-run check: pause, force a resubscribe (re-seeds every book), compare.
            h.sim.pause()
            h.sim.kick_all()
            await h.wait_for(lambda: h.feed.stats.connected)
            await h.wait_until_books_match()
            checks += 1
            h.sim.resume()
        stats = h.feed.stats
        records = list(h.sink.records)
    seqs = _seq_ok(records)
    elapsed = time.monotonic() - started
    deltas = sum(
        e.sync.stats.deltas_emitted for e in h.feed.universe.markets.values())
    print(f"\nsoak {elapsed:.0f}s: {len(seqs)} markets, {len(records)} records, "
          f"{stats.frames} frames, {sum(stats.disconnects.values())} reconnects "
          f"{dict(stats.disconnects)}, {stats.frames_rejected} frames rejected, "
          f"{sum(stats.decode_errors.values())} decode errors, {stats.invalid_books} invalid "
          f"books, {dict(stats.seeds)} seeds, {stats.seeds_superseded} superseded, "
          f"{checks} exact book comparisons passed, deltas {deltas}")
    assert sum(stats.disconnects.values()) >= max(1, int(SOAK_SECONDS / 3) - 1)
    assert checks >= 1
