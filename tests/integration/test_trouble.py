"""Routine trouble against the simulator over real sockets, scaled down.

Each test runs one scenario of ``python -m streamer.bench.trouble`` (which runs them at
full size) and requires every one of its targets: reconnect latency after drops, seeding
within the venue's documented REST limits, REST faults, a clock fault, delisting, and a
stalled stdout reader. Where the venue's REST pace is not what a scenario is about, the
daemon's pace and backoffs are shortened (settings) so it takes seconds, not tens.
"""

from __future__ import annotations

import pytest

from streamer.bench import trouble as bench_trouble

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

FAST_REST = {"min_interval_s": 0.05, "backoff": {"initial_s": 0.05, "cap_s": 0.2},
             "seed_backoff": {"initial_s": 0.1, "cap_s": 0.5}}
"""The daemon's REST pace and retry delays, short (the venue's 429s still ask for 1 s)."""


async def test_drops_every_2s_reconnect_within_2s_and_books_stay_exact() -> None:
    outcome = await bench_trouble.drops(seconds=7.0, every_s=2.0, books=10)
    assert outcome.ok, outcome.report()


@pytest.mark.slow
async def test_documented_rest_limits_ready_then_quiet_books_repaired_with_one_call_each() -> None:
    outcome = await bench_trouble.pace(markets=12, trading=3, ready_within_s=60.0,
                                       resync_within_s=40.0)
    assert outcome.ok, outcome.report()


@pytest.mark.slow
async def test_sixty_percent_rest_failures_every_book_seeded_and_ready() -> None:
    outcome = await bench_trouble.faults(markets=10, within_s=60.0, rest=FAST_REST)
    assert outcome.ok, outcome.report()


async def test_microsecond_timestamp_does_not_freeze_the_market() -> None:
    outcome = await bench_trouble.clock()
    assert outcome.ok, outcome.report()


async def test_delisted_named_markets_come_back_with_a_fresh_book() -> None:
    outcome = await bench_trouble.delist(delisted_s=1.0, discovery_interval_s=0.5,
                                         rest={"min_interval_s": 0.05})
    assert outcome.ok, outcome.report()


@pytest.mark.slow
async def test_stalled_stdout_reader_never_stalls_the_venue_connection() -> None:
    # Pings every second with a one-second timeout: a reader stall of 3 s would cost the
    # connection if the daemon stopped answering pings while stdout is blocked.
    outcome = await bench_trouble.stdout(stall_s=3.0, rate_hz=800.0, ping_interval_ms=1000,
                                         ping_timeout_ms=1000, before_s=1.5, after_s=1.0)
    assert outcome.ok, outcome.report()
