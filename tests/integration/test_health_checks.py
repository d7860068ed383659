"""Per-market freshness and REST audits against the simulator."""

from __future__ import annotations

from decimal import Decimal

import pytest

from sinks.records import Status
from streamer.simulator import SimulatorConfig
from tests.integration.test_daemon import daemon

pytestmark = [pytest.mark.anyio, pytest.mark.integration]


async def test_audit_finds_a_silently_altered_book_and_repairs_it() -> None:
    config = SimulatorConfig(seed=12, markets=3, groups=0, rate_hz=0.0)
    health = {"stale_after_s": 3600.0, "probe_check_s": 0.05, "audit_interval_s": 0.1,
              "audit_sample": 3}
    async with daemon(config, health=health) as h:
        await h.wait_for(lambda: all(e.sync.seeded for e in h.feed.universe.active())
                         and len(h.feed.universe.active()) == 3)
        await h.wait_until_books_match()
        slug = h.feed.universe.slugs()[0]
        bids, asks = h.sim.exchange.book(slug)
        # One level resized, no event: only a REST comparison can notice.
        price, size = bids[0]
        h.sim.exchange.set_book(slug, [(price, size + Decimal("7"))] + bids[1:], asks)
        await h.wait_for(lambda: h.feed.stats.divergences["audit"] >= 1)
        await h.wait_until_books_match()
        assert sum(h.feed.stats.disconnects.values()) == 0
        divergence = [r for r in h.sink.records if isinstance(r, Status)
                      and r.state == "divergence"]
        assert [r.market for r in divergence] == [slug]


async def test_a_quiet_market_is_probed_and_found_quiet_without_reconnecting() -> None:
    config = SimulatorConfig(seed=13, markets=2, groups=0, rate_hz=0.0)
    health = {"stale_after_s": 0.3, "probe_check_s": 0.05, "audit_interval_s": 0.0}
    async with daemon(config, health=health) as h:
        await h.wait_for(lambda: h.feed.stats.quiet >= 4)
        assert sum(h.feed.stats.divergences.values()) == 0
        assert sum(h.feed.stats.disconnects.values()) == 0
        await h.wait_until_books_match()


async def test_a_stale_market_that_missed_an_update_is_reseeded_by_the_probe() -> None:
    config = SimulatorConfig(seed=14, markets=2, groups=0, rate_hz=0.0)
    health = {"stale_after_s": 0.3, "probe_check_s": 0.05, "audit_interval_s": 0.0}
    async with daemon(config, health=health) as h:
        await h.wait_for(lambda: h.feed.stats.quiet >= 2)
        slug = h.feed.universe.slugs()[1]
        bids, asks = h.sim.exchange.book(slug)
        h.sim.exchange.set_book(slug, bids[:-1], asks)  # the deepest bid vanished unseen
        await h.wait_for(lambda: h.feed.stats.divergences["stale_probe"] >= 1)
        await h.wait_until_books_match()
        assert sum(h.feed.stats.disconnects.values()) == 0
