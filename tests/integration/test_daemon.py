"""The daemon against the embedded simulator, over real loopback sockets.

Each test runs the simulator and ``streamer.app.run`` in one task group, collects the
daemon's records in a MemorySink, then pauses the simulator and checks that replaying
the records (``book`` then ``book_delta`` in ``seq`` order) gives exactly the
simulator's books, and exactly the daemon's own books.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import anyio
import msgspec
import pytest

from orderbook.replay import Replayer
from orderbook.types import Book, BookDelta
from sinks.memory import MemorySink
from sinks.records import MarketCreated, MarketInfo, MarketResolved, Status
from streamer.bench import trouble as bench_trouble
from streamer.feed.feed import Feed
from streamer.simulator import Simulator, SimulatorConfig
from streamer.transport.websocket import WS_CLIENTS
from tests.books import numeric

pytestmark = [pytest.mark.anyio, pytest.mark.integration]


@dataclass


class Harness:
    sim: Simulator
    sink: MemorySink
    feed: Feed

    def replay(self) -> Replayer:
        replayer = Replayer()
        for record in self.sink.records:
            if isinstance(record, Book | BookDelta):
                replayer.apply(record)
        return replayer

    def mismatches(self) -> list[str]:
        """Markets whose replayed book differs from the simulator's (or is missing)."""
        replayer = self.replay()
        bad = []
        for slug in self.feed.universe.slugs():
            expected = self.sim.exchange.book(slug)
            rebuilt = replayer.book(slug)
            held = self.feed.universe.markets[slug].sync.book
            if (rebuilt is None or numeric(rebuilt.levels()) != expected
                    or numeric(held.levels()) != expected):
                bad.append(slug)
        return bad

    async def wait_until_books_match(self, timeout_s: float = 15.0) -> None:
        """Poll (the simulator is paused) until every book matches; fail with details."""
        try:
            with anyio.fail_after(timeout_s):
                while self.mismatches():
                    await anyio.sleep(0.05)
        except TimeoutError:
            pytest.fail(f"books never matched the simulator: {self.mismatches()}")

    async def wait_for(self, predicate: Any, timeout_s: float = 15.0) -> None:
        with anyio.fail_after(timeout_s):
            while not predicate():
                await anyio.sleep(0.02)


@asynccontextmanager
async def daemon(config: SimulatorConfig, **overrides: Any) -> AsyncIterator[Harness]:
    """Every market of the simulator through the daemon (:func:`streamer.bench.trouble.daemon`)
    with quick backoffs; ``feed`` and ``rest`` overrides are merged into these."""
    backoff = {"initial_s": 0.05, "cap_s": 0.5}
    feed = {"backoff": backoff, **overrides.pop("feed", {})}
    # The simulator here enforces no REST limits; a pace quicker than the venue's
    # documented one lets a paused (quiet) venue that kicks every second be re-verified
    # between kicks (tests/integration/test_trouble.py covers the documented limits).
    rest = {"backoff": backoff, "min_interval_s": 0.02, **overrides.pop("rest", {})}
    async with bench_trouble.daemon(config, feed=feed, rest=rest, **overrides) as run:
        yield Harness(run.sim, run.sink, run.feed)


def _seq_ok(records: list[Any]) -> dict[str, list[int]]:
    """Per market, the seqs in arrival order; asserts they are exactly 1..n."""
    seqs: dict[str, list[int]] = {}
    for record in records:
        if isinstance(record, Book | BookDelta):
            seqs.setdefault(record.market, []).append(record.seq)
    for market, got in seqs.items():
        assert got == list(range(1, len(got) + 1)), f"{market}: seq not contiguous"
    return seqs


@pytest.mark.parametrize("client", WS_CLIENTS)
async def test_daemon_streams_exact_books_through_repeated_kicks(client: str) -> None:
    config = SimulatorConfig(seed=7, markets=6, groups=1, rate_hz=80.0, kick_every_s=0.6)
    # Reconnect at once after each kick (not after the default 1 s floor between attempts).
    # Both WebSocket libraries: picows (the default) and websockets (the fallback).
    async with daemon(config, feed={"backoff": {"initial_s": 0.05, "cap_s": 0.5},
                                    "min_attempt_interval_s": 0.1,
                                    "healthy_jitter_s": 0.1, "ws_client": client}) as h:
        await h.wait_for(lambda: sum(h.feed.stats.disconnects.values()) >= 3)
        await h.wait_for(lambda: h.feed.stats.connected)
        h.sim.pause()
        await h.wait_until_books_match()
        stats = h.feed.stats
        records = list(h.sink.records)
        deltas = sum(e.sync.stats.deltas_emitted for e in h.feed.universe.markets.values())
    assert stats.disconnects["ServerDisconnect"] >= 3
    seqs = _seq_ok(records)
    assert len(seqs) == 9  # 6 single markets + 3 group children
    assert deltas > 50
    assert deltas == sum(isinstance(r, BookDelta) for r in records)
    states = [r.state for r in records if isinstance(r, Status)]
    assert states[0] == "connected" and "resubscribed" in states and "disconnected" in states
    markets = {r.market for r in records if isinstance(r, MarketInfo)}
    assert markets == set(seqs)


async def test_daemon_recovers_from_silent_stalls_by_heartbeat_timeout() -> None:
    config = SimulatorConfig(seed=3, markets=4, groups=0, rate_hz=40.0, ping_interval_ms=200,
                             ping_timeout_ms=200, stall_every_s=2.0, stall_for_s=1.0)
    async with daemon(config, feed={"connect_timeout_s": 2.0,
                                    "backoff": {"initial_s": 0.05, "cap_s": 0.5}}) as h:
        await h.wait_for(lambda: h.feed.stats.disconnects["HeartbeatTimeout"] >= 1)
        await h.wait_for(lambda: h.feed.stats.connected)
        h.sim.pause()
        h.sim.kick_all()  # updates lost in a stall are only restored by a re-seed
        await h.wait_for(lambda: h.feed.stats.connected)
        await h.wait_until_books_match()
        _seq_ok(list(h.sink.records))


async def test_daemon_skips_malformed_frames_and_keeps_streaming() -> None:
    config = SimulatorConfig(seed=11, markets=5, groups=0, rate_hz=100.0, malformed_rate=0.1)
    async with daemon(config) as h:
        stats = h.feed.stats
        await h.wait_for(lambda: stats.frames_rejected + sum(stats.decode_errors.values())
                         + stats.invalid_books >= 10)
        await h.wait_for(lambda: sum(stats.unknown_events.values()) >= 1)
        # NaN/Infinity/negative levels are refused: wait for one (the malformed kinds are
        # drawn at random, so 10 bad frames of any kind need not include one).
        await h.wait_for(lambda: stats.invalid_books >= 1, timeout_s=30.0)
        h.sim.pause()
        h.sim.kick_all()  # a malformed frame replaced a real update: re-seed restores it
        await h.wait_for(lambda: stats.connected and sum(stats.disconnects.values()) >= 1)
        await h.wait_until_books_match()
        _seq_ok(list(h.sink.records))


async def test_daemon_bootstraps_through_rest_429_and_503() -> None:
    config = SimulatorConfig(seed=5, markets=4, groups=0, rate_hz=0.0, rest_429_rate=0.2,
                             rest_503_rate=0.3)
    async with daemon(config) as h:
        await h.wait_for(lambda: len(h.feed.universe.slugs()) == 4
                         and all(e.sync.seeded for e in h.feed.universe.active()))
        h.sim.pause()
        await h.wait_until_books_match()
    statuses = h.sim.stats.rest.statuses
    assert statuses.get(429, 0) + statuses.get(503, 0) >= 1


async def test_daemon_follows_market_lifecycle_in_all_markets_mode() -> None:
    config = SimulatorConfig(seed=9, markets=3, groups=0, rate_hz=30.0, lifecycle_every_s=0.5)
    async with daemon(config, discovery_interval_s=0.5) as h:
        def removed() -> set[str]:
            return {r.market for r in h.sink.records
                    if isinstance(r, MarketInfo) and r.event == "removed"}

        def added() -> set[str]:
            return {r.market for r in h.sink.records
                    if isinstance(r, MarketInfo) and r.event == "added"}

        await h.wait_for(lambda: len(removed()) >= 2 and len(added()) >= 5)
        h.sim.pause()
        await h.wait_for(lambda: set(h.feed.universe.slugs())
                         == set(h.sim.exchange.book_slugs()))
        await h.wait_until_books_match()
        # The live subscription is the current set, not the bootstrap set.
        assert set(h.sim.subscriptions()[-1]) == set(h.feed.universe.slugs())
        # The venue's lifecycle events are passed through, payload byte for byte.
        created = [r for r in h.sink.records if isinstance(r, MarketCreated)]
        resolved = [r for r in h.sink.records if isinstance(r, MarketResolved)]
        assert created and resolved
        assert all(msgspec.json.decode(r.data)["slug"] == r.market for r in created + resolved)
        assert {r.market for r in resolved} <= removed()
