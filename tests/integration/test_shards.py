"""Scale-out: N daemons with --shard i/N cover every market exactly once."""

from __future__ import annotations

from functools import partial

import anyio
import pytest
from prometheus_client import CollectorRegistry

from orderbook.types import Book, BookDelta
from sinks.fanout import SinkSpec
from sinks.memory import MemorySink
from streamer import app
from streamer.config import load_settings
from streamer.errors import ConfigError
from streamer.feed.feed import Feed
from streamer.feed.universe import in_shard
from streamer.ops.metrics import Metrics
from streamer.simulator import Simulator, SimulatorConfig


def test_in_shard_puts_every_slug_in_exactly_one_shard() -> None:
    slugs = [f"market-{i}" for i in range(2000)]
    for count in (1, 2, 3, 7):
        owners = [[i for i in range(count) if in_shard(s, i, count)] for s in slugs]
        assert all(len(o) == 1 for o in owners)
        sizes = [sum(1 for o in owners if o == [i]) for i in range(count)]
        assert min(sizes) > len(slugs) / count * 0.8  # roughly even


def test_in_shard_assignment_is_pinned() -> None:
    # Golden values: a change of hash function would silently reshuffle a running fleet
    # (two daemons of different versions would both follow, or both skip, a market).
    assert [in_shard(f"m{i}", 0, 2) for i in range(8)] == [True] * 4 + [False] * 4
    assert sum(in_shard(f"m{i}", 0, 4) for i in range(400)) == 100


@pytest.mark.parametrize("shard", ["2/2", "1", "-1/2", "a/b", "0/0", "1/2/3"])
def test_shard_config_errors_name_the_field(shard: str) -> None:
    with pytest.raises(ConfigError, match="shard"):
        load_settings(None, {"markets": ["a"], "shard": shard})


@pytest.mark.anyio
@pytest.mark.integration
async def test_two_shards_cover_every_market_exactly_once() -> None:
    sim = Simulator(SimulatorConfig(seed=4, markets=10, groups=2, rate_hz=50.0))
    sinks = [MemorySink(), MemorySink()]
    feeds: dict[int, Feed] = {}
    async with anyio.create_task_group() as tg:
        address = await tg.start(sim.run)
        for index, sink in enumerate(sinks):
            settings = load_settings(None, {"api_url": address.api_url,
                                            "ws_url": address.ws_url, "all_markets": True,
                                            "shard": f"{index}/2",
                                            "metrics_addr": "127.0.0.1:0"})
            metrics = Metrics(CollectorRegistry(), process_metrics=False)
            tg.start_soon(partial(app.run, settings, None,
                                  on_feed=partial(feeds.__setitem__, index),
                                  handle_signals=False, specs=[SinkSpec(sink=sink)],
                                  metrics=metrics))
        with anyio.fail_after(15):
            while len(feeds) < 2 or not all(
                f.stats.connected and f.universe.slugs()
                and all(e.sync.seeded for e in f.universe.active()) for f in feeds.values()
            ):
                await anyio.sleep(0.05)
        tg.cancel_scope.cancel()
    books = sim.exchange.book_slugs()
    followed = [set(feeds[i].universe.slugs()) for i in range(2)]
    assert followed[0].isdisjoint(followed[1])
    assert followed[0] | followed[1] == set(books)
    streamed = [{r.market for r in s.records if isinstance(r, Book | BookDelta)} for s in sinks]
    assert streamed == followed
