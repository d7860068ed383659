"""Routine trouble, measured: the daemon against the embedded simulator over real sockets.

Each scenario runs the real daemon (``streamer.app.run`` in-process, or the CLI as a
subprocess for the stdout one) against a :class:`~streamer.simulator.Simulator` on
loopback, injects one kind of routine trouble, and reports numbers plus whether the
books the consumer rebuilds end equal to the venue's. The test suite runs each scenario
scaled down (tests/integration/test_trouble.py); this command runs them at full size::

    python -m streamer.bench.trouble            # every scenario, full size (~4 min)
    python -m streamer.bench.trouble drops pace # some of them

Scenarios: ``drops`` (the venue drops every client every 3 s), ``pace`` (the venue's
documented REST limits enforced, 120 markets of which 8 trade, then a drop while every
quiet book changes silently), ``faults`` (60 % of REST calls fail), ``clock`` (one
update stamped in epoch microseconds), ``delist`` (two named markets delisted and
relisted), ``stdout`` (the stdout reader stops reading for 20 s at 1,500 updates/s).
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import sys
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from functools import partial
from typing import Any

import anyio
import anyio.abc
from prometheus_client import CollectorRegistry

from orderbook.replay import Replayer
from orderbook.types import Book, BookDelta
from sinks.fanout import SinkSpec
from sinks.memory import MemorySink
from sinks.records import MarketInfo, Record, Status, decode_record
from streamer import app
from streamer.config import load_settings
from streamer.feed.feed import Feed
from streamer.ops.metrics import Metrics
from streamer.simulator import Simulator, SimulatorConfig

FAST_BACKOFF: dict[str, Any] = {"initial_s": 0.2, "cap_s": 2.0}


@dataclass
class Outcome:
    """What one scenario measured; ``ok`` says whether every target held."""

    name: str
    ok: bool = True
    figures: dict[str, Any] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)

    def check(self, condition: bool, what: str) -> None:
        """Record a target; a false one makes the outcome fail with ``what``."""
        if not condition:
            self.ok = False
            self.failures.append(what)

    def report(self) -> str:
        """One block of text for the terminal."""
        lines = [f"{self.name}: {'PASS' if self.ok else 'FAIL'}"]
        lines += [f"  {key}: {value}" for key, value in self.figures.items()]
        lines += [f"  target missed: {what}" for what in self.failures]
        return "\n".join(lines)


@dataclass
class Run:
    """A daemon running in-process against a simulator."""

    sim: Simulator
    sink: MemorySink
    feed: Feed
    metrics: Metrics
    started: float
    replayer: Replayer = field(default_factory=Replayer)
    replayed: int = 0

    def rebuilt(self) -> Replayer:
        """Replay the records the consumer got (incrementally: this runs in the event loop
        the simulator and the daemon share, so it must not block it)."""
        records = self.sink.records
        for record in records[self.replayed:]:
            if isinstance(record, Book | BookDelta):
                self.replayer.apply(record)
        self.replayed = len(records)
        return self.replayer

    def wrong_books(self, slugs: Sequence[str] | None = None) -> list[str]:
        """Markets whose rebuilt or held book differs from the simulator's."""
        replayer = self.rebuilt()
        bad = []
        for slug in self.sim.exchange.book_slugs() if slugs is None else slugs:
            expected = self.sim.exchange.book(slug)
            rebuilt = replayer.book(slug)
            entry = self.feed.universe.markets.get(slug)
            if (rebuilt is None or entry is None or not same_levels(rebuilt.levels(), expected)
                    or not same_levels(entry.sync.book.levels(), expected)):
                bad.append(slug)
        return bad

    def statuses(self, state: str) -> list[Status]:
        """The ``status`` records of one state, in order."""
        return [r for r in self.sink.records if isinstance(r, Status) and r.state == state]

    async def wait_for(self, predicate: Callable[[], bool], timeout_s: float) -> bool:
        """Poll ``predicate`` until true; False on timeout."""
        with anyio.move_on_after(timeout_s):
            while not predicate():
                await anyio.sleep(0.2)
            return True
        return False

    async def settle(self, timeout_s: float = 20.0) -> list[str]:
        """Pause the venue and wait until every book is equal; the ones that are not."""
        self.sim.pause()
        await self.wait_for(lambda: not self.wrong_books(), timeout_s)
        return self.wrong_books()


@asynccontextmanager
async def daemon(config: SimulatorConfig, **overrides: Any) -> AsyncIterator[Run]:
    """The simulator and the daemon (all markets unless ``markets`` is given)."""
    sim = Simulator(config)
    sink = MemorySink()
    feeds: list[Feed] = []
    async with anyio.create_task_group() as tg:
        address = await tg.start(sim.run)
        base: dict[str, Any] = {
            "api_url": address.api_url,
            "ws_url": address.ws_url,
            "all_markets": "markets" not in overrides,
            "shutdown_grace_s": 2.0,
            "metrics_addr": "127.0.0.1:0",
            "feed": {"backoff": FAST_BACKOFF},
            "rest": {"backoff": FAST_BACKOFF},
        }
        for key, value in overrides.items():
            if isinstance(value, dict) and isinstance(base.get(key), dict):
                base[key] = {**base[key], **value}
            else:
                base[key] = value
        settings = load_settings(None, base)
        metrics = Metrics(CollectorRegistry(), process_metrics=False)
        started = time.monotonic()
        tg.start_soon(partial(app.run, settings, None, on_feed=feeds.append,
                              handle_signals=False, specs=[SinkSpec(sink=sink)],
                              metrics=metrics))
        with anyio.fail_after(10):
            while not feeds:
                await anyio.sleep(0.01)
        try:
            yield Run(sim, sink, feeds[0], metrics, started)
        finally:
            tg.cancel_scope.cancel()


def same_levels(got: tuple[Sequence[tuple[str, str]], Sequence[tuple[str, str]]],
                want: tuple[Sequence[tuple[Decimal, Decimal]], Sequence[tuple[Decimal, Decimal]]],
                ) -> bool:
    """A book's (bids, asks) as text equals the simulator's as Decimals, number for number."""
    return all(
        len(g) == len(w) and all(Decimal(p) == wp and Decimal(q) == wq
                                 for (p, q), (wp, wq) in zip(g, w, strict=True))
        for g, w in zip(got, want, strict=True))


def _drop_to_resubscribe(run: Run) -> list[float]:
    """Seconds from each ``disconnected`` status to the next ``resubscribed`` one."""
    out, down = [], None
    for record in run.sink.records:
        if isinstance(record, Status):
            if record.state == "disconnected" and down is None:
                down = record.recv_ts
            elif record.state == "resubscribed" and down is not None:
                out.append((record.recv_ts - down) / 1000)
                down = None
    return out


# -- scenarios --------------------------------------------------------------------------


async def drops(seconds: float = 30.0, every_s: float = 3.0, books: int = 20,
                **overrides: Any) -> Outcome:
    """The venue drops every client every ``every_s``: reconnect at once, books exact.

    ``overrides``: daemon settings (as for :func:`daemon`), here and in the other scenarios.
    """
    out = Outcome("drops")
    config = SimulatorConfig(seed=11, markets=books, groups=0, amm_markets=0, rate_hz=100.0,
                             kick_every_s=every_s)
    async with daemon(config, **overrides) as run:
        await anyio.sleep(seconds)  # the scenario's length: the venue does the work
        wrong = await run.settle()
        gaps = _drop_to_resubscribe(run)
    out.figures.update(drops=len(gaps), median_s=round(statistics.median(gaps), 3) if gaps
                       else None, max_s=round(max(gaps), 3) if gaps else None,
                       wrong_books=len(wrong))
    out.check(len(gaps) >= seconds / every_s - 2, f"expected ~{seconds / every_s:.0f} drops")
    out.check(bool(gaps) and statistics.median(gaps) <= 1.0, "median drop->resubscribe <= 1 s")
    out.check(bool(gaps) and max(gaps) <= 2.0, "max drop->resubscribe <= 2 s")
    out.check(not wrong, f"books equal at the end (wrong: {wrong[:5]})")
    return out


async def pace(markets: int = 120, trading: int = 8, ready_within_s: float = 90.0,
               resync_within_s: float = 60.0) -> Outcome:
    """Documented REST limits enforced: ready in time, then a silent change of every quiet
    book during a drop is repaired with about one orderbook call per market, no 429 storm."""
    out = Outcome("pace")
    config = SimulatorConfig(seed=12, markets=markets, groups=0, amm_markets=0, rate_hz=40.0,
                             trading_markets=trading, rest_max_in_flight=2,
                             rest_min_interval_ms=300, rest_latency_ms=5)
    async with daemon(config) as run:
        ready = await run.wait_for(lambda: run.metrics.readiness()[0], ready_within_s)
        ready_s = time.monotonic() - run.started
        out.figures["ready_s"] = round(ready_s, 1)
        out.check(ready, f"ready within {ready_within_s:.0f} s")
        rest = run.sim.stats.rest
        calls_before = _orderbook_calls(run)
        quiet = run.sim.exchange.quiet_slugs()
        run.sim.kick_all()
        run.sim.change_quiet_books()
        kicked = time.monotonic()
        repaired = await run.wait_for(lambda: not run.wrong_books(quiet), resync_within_s)
        out.figures["quiet_books_right_after_s"] = round(time.monotonic() - kicked, 1)
        calls = _orderbook_calls(run) - calls_before
        out.figures["orderbook_calls_per_market_after_drop"] = round(calls / markets, 3)
        wrong = await run.settle()
        out.figures["responses_429"] = rest.statuses.get(429, 0)
        out.figures["wrong_books"] = len(wrong)
    out.check(repaired, f"every quiet book right within {resync_within_s:.0f} s of the drop")
    out.check(calls / markets <= 1.25, "at most 1.25 orderbook calls per market")
    out.check(out.figures["responses_429"] <= 5, "at most 5 responses 429 in the run")
    out.check(not wrong, f"books equal at the end (wrong: {wrong[:5]})")
    return out


def _orderbook_calls(run: Run) -> int:
    return sum(n for path, n in run.sim.stats.rest.requests.items()
               if path.endswith("/orderbook"))


async def faults(markets: int = 30, failing: float = 0.6, within_s: float = 60.0,
                 **overrides: Any) -> Outcome:
    """60 % of REST calls fail (429 or 503): every quiet book seeded, /readyz 200."""
    out = Outcome("faults")
    config = SimulatorConfig(seed=13, markets=markets, groups=0, amm_markets=0, rate_hz=10.0,
                             trading_markets=1, rest_429_rate=failing / 2,
                             rest_503_rate=failing / 2)
    async with daemon(config, **overrides) as run:
        ready = await run.wait_for(lambda: run.metrics.readiness()[0], within_s)
        out.figures["ready_s"] = round(time.monotonic() - run.started, 1)
        out.figures["seed_failures"] = run.feed.stats.seed_failures
        wrong = await run.settle()
        out.figures["wrong_books"] = len(wrong)
    out.check(ready, f"every book seeded and /readyz 200 within {within_s:.0f} s")
    out.check(not wrong, f"books equal at the end (wrong: {wrong[:5]})")
    return out


async def clock(after_updates: int = 20) -> Outcome:
    """One update stamped in epoch microseconds: the market keeps streaming, ends equal."""
    out = Outcome("clock")
    config = SimulatorConfig(seed=14, markets=2, groups=0, amm_markets=0, rate_hz=60.0)
    async with daemon(config) as run:
        slug = run.sim.exchange.book_slugs()[0]
        await run.wait_for(lambda: run.metrics.readiness()[0], 20.0)
        run.sim.push_book(slug, time.time_ns() // 1000)  # microseconds, read as ms: year ~58,000
        entry = run.feed.universe.markets[slug]
        applied = entry.sync.stats.applied
        streamed = await run.wait_for(
            lambda: entry.sync.stats.applied >= applied + after_updates, 20.0)
        wrong = await run.settle()
        out.figures.update(updates_after=entry.sync.stats.applied - applied,
                           clock_skew_counted=run.feed.stats.clock_skew,
                           stale_dropped=entry.sync.stats.stale_dropped, wrong_books=len(wrong))
    out.check(streamed, f"the market kept streaming ({after_updates} updates applied after)")
    out.check(out.figures["clock_skew_counted"] >= 1, "the far timestamp was counted")
    out.check(not wrong, f"books equal at the end (wrong: {wrong[:5]})")
    return out


async def delist(delisted_s: float = 8.0, **overrides: Any) -> Outcome:
    """Two named markets delisted for a while and relisted: the daemon stays up, emits a
    ``removed`` record and later a fresh ``book`` for each, and their books end equal."""
    out = Outcome("delist")
    config = SimulatorConfig(seed=15, markets=5, groups=0, amm_markets=0, rate_hz=40.0)
    probe = Simulator(config).exchange.book_slugs()  # the same seed: the same slugs
    async with daemon(config, **{"markets": probe, "discovery_interval_s": 1.0,
                                 **overrides}) as run:
        await run.wait_for(lambda: run.metrics.readiness()[0], 20.0)
        gone = probe[:2]
        for slug in gone:
            run.sim.delist(slug)
        removed = await run.wait_for(lambda: _removed(run) >= set(gone), 10.0)
        await anyio.sleep(delisted_s)  # delisted this long (the venue's choice)
        for slug in gone:
            run.sim.relist(slug)
        back = await run.wait_for(lambda: set(gone) <= set(run.feed.universe.slugs())
                                  and all(run.feed.universe.markets[s].sync.seeded
                                          for s in gone), 15.0)
        wrong = await run.settle()
        fresh = {slug: _first_after_removal(run.sink.records, slug) for slug in gone}
    out.figures.update(removed=sorted(_removed(run)), first_record_after_relist={
        slug: kind for slug, kind in fresh.items()}, wrong_books=len(wrong))
    out.check(removed, "a removed record for each delisted market")
    out.check(back, "both followed again after relisting")
    out.check(all(kind == "book" for kind in fresh.values()), "a fresh book after relisting")
    out.check(not wrong, f"books equal at the end (wrong: {wrong[:5]})")
    return out


def _removed(run: Run) -> set[str]:
    return {r.market for r in run.sink.records if isinstance(r, MarketInfo)
            and r.event == "removed"}


def _first_after_removal(records: Sequence[Record], slug: str) -> str | None:
    removed = False
    for record in records:
        if isinstance(record, MarketInfo) and record.market == slug and record.event == "removed":
            removed = True
        elif removed and isinstance(record, Book | BookDelta) and record.market == slug:
            return "book" if isinstance(record, Book) else "book_delta"
    return None


async def stdout(stall_s: float = 20.0, rate_hz: float = 1500.0, ping_interval_ms: int = 25000,
                 ping_timeout_ms: int = 20000, before_s: float = 3.0,
                 after_s: float = 5.0) -> Outcome:
    """The stdout reader stops reading for ``stall_s`` with default settings: no feed
    disconnect, and the books rebuilt from stdout equal the venue's. It reads for
    ``before_s`` first, and for ``after_s`` after the stall before the venue pauses."""
    out = Outcome("stdout")
    config = SimulatorConfig(seed=16, markets=20, groups=0, amm_markets=0, rate_hz=rate_hz,
                             ping_interval_ms=ping_interval_ms, ping_timeout_ms=ping_timeout_ms)
    sim = Simulator(config)
    replayer = Replayer()
    statuses: list[str] = []
    lines = 0
    async with anyio.create_task_group() as tg:
        address = await tg.start(sim.run)
        cmd = [sys.executable, "-m", "streamer", "run", "--api-url", address.api_url,
               "--ws-url", address.ws_url, "--all-markets", "--metrics-addr", "127.0.0.1:0",
               "--log-level", "warning"]
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        async with await anyio.open_process(cmd, stderr=None, env=env) as proc:
            assert proc.stdout is not None
            buffer = bytearray()

            async def read_for(seconds: float, until: Callable[[], bool] | None = None) -> None:
                nonlocal lines
                assert proc.stdout is not None
                with anyio.move_on_after(seconds):
                    while until is None or not until():
                        try:
                            buffer.extend(await proc.stdout.receive())
                        except anyio.EndOfStream:
                            return
                        *complete, rest = bytes(buffer).split(b"\n")
                        buffer[:] = rest
                        for line in complete:
                            lines += 1
                            record = decode_record(line)
                            if isinstance(record, Book | BookDelta):
                                replayer.apply(record)
                            elif isinstance(record, Status):
                                statuses.append(record.state)

            await read_for(before_s)
            await anyio.sleep(stall_s)  # the reader stops reading: the point of the scenario
            await read_for(after_s)
            sim.pause()

            def equal() -> bool:
                for slug in sim.exchange.book_slugs():
                    book = replayer.book(slug)
                    if book is None or not same_levels(book.levels(), sim.exchange.book(slug)):
                        return False
                return True

            await read_for(30.0, equal)
            matched = equal()
            proc.send_signal(signal.SIGTERM)
            with anyio.move_on_after(10):
                await read_for(10.0)
                await proc.wait()
        tg.cancel_scope.cancel()
    out.figures.update(records=lines, feed_disconnects=statuses.count("disconnected"),
                       venue_connections=sim.stats.connections_accepted,
                       books_equal=matched, steps=sim.stats.book_steps)
    out.check(statuses.count("disconnected") == 0, "0 feed disconnects")
    out.check(matched, "books rebuilt from stdout equal the venue's")
    return out


SCENARIOS: dict[str, Callable[[], Any]] = {
    "drops": drops, "pace": pace, "faults": faults, "clock": clock, "delist": delist,
    "stdout": stdout,
}


def main(argv: list[str] | None = None) -> int:
    """Run the named scenarios (all by default) at full size; exit 1 if a target missed."""
    parser = argparse.ArgumentParser(
        prog="python -m streamer.bench.trouble",
        description="Routine trouble against the embedded simulator: reconnects, REST limits "
                    "and faults, clock faults, delisting, a stalled stdout reader.")
    parser.add_argument("scenarios", nargs="*", metavar="SCENARIO",
                        help=f"which to run (default: all of {', '.join(SCENARIOS)})")
    args = parser.parse_args(argv)
    unknown = [name for name in args.scenarios if name not in SCENARIOS]
    if unknown:
        parser.error(f"unknown scenario {unknown[0]!r}; choose from {', '.join(SCENARIOS)}")
    ok = True
    for name in args.scenarios or list(SCENARIOS):
        outcome: Outcome = anyio.run(SCENARIOS[name])
        print(outcome.report(), flush=True)
        ok &= outcome.ok
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
