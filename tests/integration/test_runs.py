"""Two daemon runs appended to one file: the consumer follows the newest run per market.

The first daemon streams for a while and stops; a second one (a restart) appends to the
same file. Every record carries ``run`` (two distinct values); replaying the file by the
README's consumer rules (``Replayer``, and so ``tail``) reports each market's restart,
no gap and no duplicate, and rebuilds exactly the simulator's books.
"""

from __future__ import annotations

import io
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import msgspec
import pytest
from prometheus_client import CollectorRegistry

from orderbook.types import Book, BookDelta
from sinks.records import decode_record
from streamer import app
from streamer.cli import main
from streamer.config import load_settings
from streamer.feed.feed import Feed
from streamer.ops.metrics import Metrics
from streamer.simulator import Simulator, SimulatorConfig
from streamer.tools.tail import file_lines, summary, tail
from tests.books import numeric

pytestmark = [pytest.mark.anyio, pytest.mark.integration]


async def _wait_for(predicate: Any, timeout_s: float = 15.0) -> None:
    with anyio.fail_after(timeout_s):
        while not predicate():
            await anyio.sleep(0.02)


async def _one_run(address: Any, path: Path, until: Any, sim: Simulator | None = None) -> Feed:
    """Run a daemon into ``file:path`` until ``until(feed)``, then stop it (flushed).

    With ``sim``: then pause the simulator and wait until the daemon holds its books.
    """
    settings = load_settings(None, {
        "api_url": address.api_url, "ws_url": address.ws_url, "all_markets": True,
        "shutdown_grace_s": 2.0, "metrics_addr": "127.0.0.1:0", "sinks": [f"file:{path}"],
    })
    feeds: list[Feed] = []
    async with anyio.create_task_group() as tg:
        tg.start_soon(partial(app.run, settings, None, on_feed=feeds.append,
                              handle_signals=False,
                              metrics=Metrics(CollectorRegistry(), process_metrics=False)))
        await _wait_for(lambda: feeds and until(feeds[0]))
        if sim is not None:
            sim.pause()
            await _wait_for(lambda: all(numeric(e.sync.book.levels()) == sim.exchange.book(e.slug)
                                        for e in feeds[0].universe.active()))
        tg.cancel_scope.cancel()
    return feeds[0]


def _all_seeded(feed: Feed) -> bool:
    active = feed.universe.active()
    return bool(active) and all(e.sync.seeded for e in active)


async def test_two_runs_in_one_file_rebuild_the_simulators_books(tmp_path: Path) -> None:
    path = tmp_path / "events.ndjson"
    sim = Simulator(SimulatorConfig(seed=21, markets=5, groups=1, rate_hz=60.0))
    async with anyio.create_task_group() as tg:
        address = await tg.start(sim.run)
        first = await _one_run(address, path, lambda f: _all_seeded(f) and sum(
            e.sync.seq for e in f.universe.active()) > 60)
        # The second run must not apply its deltas on top of the first run's books.
        second = await _one_run(address, path, lambda f: _all_seeded(f) and sum(
            e.sync.seq for e in f.universe.active()) > 60, sim)
        expected = {slug: sim.exchange.book(slug) for slug in second.universe.slugs()}
        tg.cancel_scope.cancel()
    assert first.run != second.run

    lines = [line for line in path.read_bytes().split(b"\n") if line]
    runs = {msgspec.json.decode(line)["run"] for line in lines}
    assert runs == {first.run, second.run}
    records = [decode_record(line) for line in lines]
    report = await tail(file_lines(str(path)), out=None, err=(err := io.StringIO()))
    replayer = report.replayer
    assert not report.gaps and replayer.duplicates == 0 and replayer.stale_runs == 0
    markets = {r.market for r in records if isinstance(r, Book | BookDelta)}
    assert {(r.market, r.old_run, r.new_run) for r in replayer.restarts} == {
        (m, first.run, second.run) for m in markets}
    assert "RESTART of" in err.getvalue()
    for slug in second.universe.slugs():
        rebuilt = replayer.book(slug)
        assert rebuilt is not None and numeric(rebuilt.levels()) == expected[slug]
    # Every market's first record in each run is a book with seq 1.
    for run in (first.run, second.run):
        firsts: dict[str, Book | BookDelta] = {}
        for r in records:
            if isinstance(r, Book | BookDelta) and r.run == run:
                firsts.setdefault(r.market, r)
        assert all(isinstance(r, Book) and r.seq == 1 for r in firsts.values())
    assert f"{len(markets)} market restarts" in summary(report)
    status = await anyio.to_thread.run_sync(main, ["tail", "--quiet", "--summary",
                                                   f"file:{path}"])
    assert status == 0
