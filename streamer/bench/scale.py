"""Scale and latency check: ``python -m streamer.bench.scale``.

The embedded simulator runs in a **child process** (``--markets`` single CLOB markets,
``--levels`` levels per side, ``--rate`` book steps per second in all); the daemon's real
``run`` path runs in this process, discovering every market (``all_markets``) and writing
NDJSON to a file sink. It prints:

- ``ready``: seconds from start until ``/readyz`` would say ready (every book held);
- ``rss``: the peak resident memory of this process (the daemon) in MB;
- receive-to-sink latency, p50 and p99: from the moment the read loop has a frame until
  the file sink's ``write`` of the record made from it returned (a dedicated, exact
  measurement; the ``process_latency_seconds`` histogram measures the same span with
  millisecond receive stamps and bucket resolution);
- ``exact``: every held book compared with the simulator's REST book at the end
  (a market that moved between the two reads is read again, up to three times).

Targets (issue 10): 5,000 markets with 10-level books at 1,000 updates/s ready within
180 s, RSS under 300 MB, every book exact; p99 latency at most 2 ms at 5,000 updates/s.
Extra daemon settings: ``--set PATH=VALUE`` as in ``python -m streamer.bench``.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio
import httpx
import msgspec

from orderbook.book import OrderBook
from orderbook.errors import InvalidLevel
from streamer.bench.e2e import LatencyMetrics, _set
from streamer.config import load_settings
from streamer.feed.feed import Feed
from streamer.ops.metrics import feed_readiness
from streamer.protocol.messages import ORDERBOOK_DECODER


def serve_simulator(config_json: str) -> None:
    """Child process: run the simulator, print its URLs, stop when stdin closes."""
    from streamer.simulator import Simulator, SimulatorConfig

    config = msgspec.json.decode(config_json, type=SimulatorConfig)

    async def main() -> None:
        sim = Simulator(config)
        async with anyio.create_task_group() as tg:
            address = await tg.start(sim.run)
            print(address.api_url, address.ws_url, flush=True)
            await anyio.to_thread.run_sync(sys.stdin.read)
            tg.cancel_scope.cancel()

    anyio.run(main)


def _percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def _exact(feed: Feed, api_url: str) -> list[str]:
    """Markets whose held book differs from the simulator's REST book (after retries)."""
    wrong = list(feed.universe.slugs())
    async with httpx.AsyncClient(base_url=api_url, timeout=30) as http:
        for _ in range(3):
            still = []
            for slug in wrong:
                body = (await http.get(f"/markets/{slug}/orderbook")).content
                payload = ORDERBOOK_DECODER.decode(body)
                rest = OrderBook()
                try:
                    rest.replace(payload.bids, payload.asks)
                except InvalidLevel:
                    still.append(slug)
                    continue
                if rest != feed.universe.markets[slug].sync.book:
                    still.append(slug)
            wrong = still
            if not wrong:
                break
            await anyio.sleep(0.2)
    return wrong


async def run(args: argparse.Namespace, rate: float, tmp: Path) -> dict[str, Any]:
    """One simulator child and one in-process daemon; the figures of that run."""
    from streamer import app

    sim_config = {"seed": args.seed, "markets": args.markets, "groups": 0, "amm_markets": 0,
                  "levels": args.levels, "rate_hz": rate, "lifecycle_every_s": None}
    child = subprocess.Popen([sys.executable, "-m", "streamer.bench.scale", "--serve-sim",  # noqa: ASYNC220
                              json.dumps(sim_config)],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert child.stdin is not None and child.stdout is not None
    api_url, ws_url = child.stdout.readline().split()
    tree: dict[str, Any] = {"api_url": api_url, "ws_url": ws_url, "all_markets": True,
                            "sinks": [f"file:{tmp / 'out.ndjson'}"],
                            "metrics_addr": "127.0.0.1:0", "log_level": "warning"}
    for item in args.set:
        key, _, raw = item.partition("=")
        _set(tree, key, raw)
    settings = load_settings(None, tree)
    metrics = LatencyMetrics()
    feeds: list[Feed] = []
    figures: dict[str, Any] = {}

    def on_feed(feed: Feed) -> None:
        feeds.append(feed)
        metrics.hook(feed)

    async def drive(scope: anyio.CancelScope) -> None:
        started = time.monotonic()
        # Readiness belongs to the feed; there is no event for it, so poll (10 Hz).
        while not (feeds and feed_readiness(feeds[0])[0]):  # noqa: ASYNC110
            await anyio.sleep(0.1)
        figures["ready_s"] = time.monotonic() - started
        feed = feeds[0]
        figures["markets"] = len(feed.universe.active())
        frames0, t0 = feed.stats.book_events, time.monotonic()
        metrics.measuring = True
        await anyio.sleep(args.seconds)
        metrics.measuring = False
        figures["updates_per_s"] = (feed.stats.book_events - frames0) / (time.monotonic() - t0)
        figures["rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        figures["samples"] = len(metrics.samples)
        if metrics.samples:
            figures["p50_ms"] = _percentile(metrics.samples, 0.50) * 1e3
            figures["p99_ms"] = _percentile(metrics.samples, 0.99) * 1e3
        if args.check:
            figures["wrong"] = await _exact(feed, api_url)
        scope.cancel()

    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(drive, tg.cancel_scope)
            await app.run(settings, None, on_feed=on_feed, handle_signals=False,
                          metrics=metrics)
    finally:
        child.stdin.close()
        child.wait(timeout=30)
        child.stdout.close()
    return figures


async def main_async(args: argparse.Namespace) -> None:
    """Run each requested rate and print its figures."""
    print(f"{args.markets} markets, {args.levels} levels per side, simulator in a child "
          f"process, daemon in this one, file sink; {args.seconds:.0f} s measured after ready"
          + (f", daemon settings {args.set}" if args.set else ""))
    for rate in args.rate:
        with tempfile.TemporaryDirectory() as tmp:
            f = await run(args, rate, Path(tmp))
        line = (f"rate {rate:.0f}/s: {f['markets']} markets ready in {f['ready_s']:.1f} s, "
                f"{f['updates_per_s']:.0f} updates/s received, peak RSS {f['rss_mb']:.0f} MB")
        if "p50_ms" in f:
            line += (f", receive-to-sink latency p50 {f['p50_ms']:.2f} ms p99 "
                     f"{f['p99_ms']:.2f} ms ({f['samples']} records)")
        if "wrong" in f:
            line += (", every book exact" if not f["wrong"]
                     else f", {len(f['wrong'])} books differ, e.g. {f['wrong'][:3]}")
        print(line, flush=True)


def main(argv: list[str] | None = None) -> None:
    """Parse flags and run (or, with ``--serve-sim``, be the simulator child)."""
    parser = argparse.ArgumentParser(prog="python -m streamer.bench.scale", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--markets", type=int, default=5000)
    parser.add_argument("--levels", type=int, default=10)
    parser.add_argument("--rate", type=float, action="append",
                        help="book steps per second in all (repeatable; default 1000 and 5000)")
    parser.add_argument("--seconds", type=float, default=30.0,
                        help="how long to measure after ready")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--no-check", dest="check", action="store_false",
                        help="skip the exact-book comparison at the end")
    parser.add_argument("--set", action="append", default=[], metavar="PATH=VALUE")
    parser.add_argument("--serve-sim", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve_sim:
        serve_simulator(args.serve_sim)
        return
    args.rate = args.rate or [1000.0, 5000.0]
    anyio.run(main_async, args)


if __name__ == "__main__":
    main()
