"""Periodic snapshots: a consumer that joins late has a starting point for every market."""

from __future__ import annotations

import pytest

from orderbook.replay import Replayer
from orderbook.types import Book, BookDelta
from streamer.simulator import SimulatorConfig
from tests.books import numeric
from tests.integration.test_daemon import _seq_ok, daemon

pytestmark = [pytest.mark.anyio, pytest.mark.integration]


async def test_a_late_consumer_rebuilds_every_book_from_the_periodic_snapshots() -> None:
    config = SimulatorConfig(seed=13, markets=4, groups=1, rate_hz=60.0)
    async with daemon(config, snapshot_interval_s=0.5) as h:
        await h.wait_for(lambda: all(e.sync.seeded for e in h.feed.universe.active())
                         and len(h.feed.universe.active()) == 7)
        cut = len(h.sink.records)  # the late consumer starts reading here

        def late_books() -> set[str]:
            return {r.market for r in list(h.sink.records)[cut:] if isinstance(r, Book)}

        await h.wait_for(lambda: late_books() == set(h.feed.universe.slugs()))
        h.sim.pause()
        await h.wait_until_books_match()
        records = list(h.sink.records)
    _seq_ok(records)  # the snapshots take the next seq: the full stream has no gap
    late = Replayer()
    for record in records[cut:]:
        if isinstance(record, Book | BookDelta):
            late.apply(record)
    assert not late.gaps and not late.restarts
    for slug in h.feed.universe.slugs():
        rebuilt = late.book(slug)
        assert rebuilt is not None and numeric(rebuilt.levels()) == h.sim.exchange.book(slug), slug


async def test_depth_emits_the_top_levels_and_replay_reproduces_that_view() -> None:
    config = SimulatorConfig(seed=17, markets=4, groups=0, rate_hz=80.0, levels=12)
    async with daemon(config, depth=3) as h:
        await h.wait_for(lambda: sum(e.sync.stats.deltas_emitted
                                     for e in h.feed.universe.active()) > 100)
        h.sim.pause()

        def view(slug: str) -> object:
            bids, asks = h.sim.exchange.book(slug)
            return bids[:3], asks[:3]

        def replayed_view() -> bool:  # the records too: the fan-out may still hold the last
            replayer = h.replay()
            return all(numeric(e.sync.book.levels()) == view(e.slug)
                       and (book := replayer.book(e.slug)) is not None
                       and numeric(book.levels()) == view(e.slug)
                       for e in h.feed.universe.active())

        await h.wait_for(replayed_view)
        records = list(h.sink.records)
    replayer = Replayer()
    for record in records:
        if isinstance(record, Book | BookDelta):
            if isinstance(record, Book):
                assert len(record.bids) <= 3 and len(record.asks) <= 3
            replayer.apply(record)
    for slug in h.feed.universe.slugs():
        rebuilt = replayer.book(slug)
        assert rebuilt is not None and numeric(rebuilt.levels()) == view(slug), slug
        assert rebuilt.n_bids <= 3 and rebuilt.n_asks <= 3
