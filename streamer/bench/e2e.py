"""End-to-end benchmark over a real loopback socket: ``python -m streamer.bench``.

Frames come from the simulator's exchange model (20-level books by default, the
simulator's encoding quirks on), rendered once up front and handed to a server in a
**child process** (so its CPU is not counted). The server speaks Engine.IO v4 /
Socket.IO v5 on ``127.0.0.1`` and answers the REST calls the daemon makes at start
(market metadata, the initial books); after the client's ``subscribe_market_prices``
(and, for the daemon, once every book has been seeded over REST) it pushes every
pre-encoded ``orderbookUpdate`` frame as fast as the client reads.

Two clients read the very same frames in this process, one after the other:

- ``bare``: ``websockets`` receive plus an untyped ``msgspec.json.decode`` of the
  event array: the least any Python client does;
- ``daemon``: the real ``run`` path (:func:`streamer.app.run`: discovery over REST,
  REST seeding, the supervisor, the feed, the fan-out, the metrics server) into a real
  file sink, drained before the clock stops.

CPU is ``getrusage(RUSAGE_SELF)`` user + system time, i.e. every thread of this
process (the file sink's writer thread included), counted from the first book frame
received to the last record written (and, with ``record.dir`` set, to the last entry
of the recording written). The headline is the ratio of CPU per frame,
daemon over bare. After each daemon run the NDJSON output is replayed and every book
must equal the exchange model's final book, level for level.

To measure an option of the daemon, pass settings with ``--set`` (repeatable), e.g.
``--set record.dir=/tmp/rec`` for the cost of ``run --record``, or
``--set feed.lifecycle=false`` or ``--set 'sinks=["file:/dev/null"]'``: each is a dotted
settings path and a JSON (or plain string) value, applied to the daemon runs only.

To measure what an option costs in one command, pass it with ``--compare-set`` instead
(repeatable, same syntax): each repeat then runs the daemon without and with it,
alternating which goes first, and prints both, the best-of overhead in percent and the
spread of the per-repeat overheads, e.g. ``--workload typical --repeat 5 --compare-set
record.dir=/tmp/rec`` for the cost of ``run --record``.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import anyio
import msgspec
from prometheus_client import CollectorRegistry

from orderbook import book
from orderbook.replay import Replayer
from sinks.records import Book, BookDelta, Record, decode_record
from streamer.app import tune_process
from streamer.config import load_settings
from streamer.feed.feed import Feed
from streamer.ops.metrics import Metrics
from streamer.recording.recorder import run_daemon as run_recorded
from streamer.simulator import SimulatorConfig
from streamer.simulator.exchange import BookUpdate, Exchange
from streamer.simulator.rest import Quirks, market_payload, orderbook_payload
from streamer.simulator.ws import orderbook_frame

RECORD_PENDING: Final = "limitless_streamer_record_queue_entries"
_ENCODER: Final = msgspec.json.Encoder(decimal_format="number")
_OPEN: Final = ('0{"sid":"bench","upgrades":[],"pingInterval":25000,"pingTimeout":20000,'
                '"maxPayload":100000000}')
NAMESPACE: Final = "/markets"

WORKLOADS: Final = {"typical": 0.01, "stress": 0.15}
"""Workload name -> simulator ``shift_p``: the share of random-walk steps that move the
whole book by 1-3 ticks, so every level changes. Real CLOB updates mostly touch one or
two levels ("typical"); at ``0.15`` (the simulator's default) about a third of the
updates shift a whole side ("stress")."""

TARGETS: Final = {"typical": 2.0, "stress": 2.5}
"""Target ratio, daemon CPU per frame over bare, per workload (issue 10)."""


class Workload(msgspec.Struct):
    """What the server serves: frames in order, REST bodies by slug, final books."""

    frames: list[str]
    markets: dict[str, bytes]
    books: dict[str, bytes]
    final: dict[str, tuple[list[tuple[str, str]], list[tuple[str, str]]]]


@dataclass
class Result:
    """One timed run of one client."""

    name: str
    frames: int
    records: int
    wall_s: float
    cpu_s: float

    @property
    def cpu_us_per_frame(self) -> float:
        return self.cpu_s / self.frames * 1e6

    @property
    def frames_per_s(self) -> float:
        return self.frames / self.wall_s if self.wall_s else 0.0


def make_workload(n_frames: int, markets: int, levels: int, seed: int,
                  shift_p: float, quirks_on: bool = True) -> Workload:
    """Render ``n_frames`` ``orderbookUpdate`` frames from the simulator's model.

    With ``quirks_on`` (the default) the encodings vary the way the simulator varies
    them (numbers as strings now and then, ``side`` spelled three ways or absent).
    """
    config = SimulatorConfig(seed=seed, markets=markets, groups=0, amm_markets=0, levels=levels,
                             shift_p=shift_p)
    exchange = Exchange(config)
    quirks = Quirks(quirks_on, random.Random(seed))
    slugs = exchange.book_slugs()
    market_bodies = {m.slug: _ENCODER.encode(market_payload(m, exchange))
                     for m in exchange.markets() if m.slug in slugs}
    books = {slug: _ENCODER.encode(orderbook_payload(exchange.book_view(slug), quirks, rest=True))
             for slug in slugs}
    frames: list[str] = []
    clock = 1_790_000_000_000
    while len(frames) < n_frames:
        clock += 1
        for event in exchange.step(clock):
            if isinstance(event, BookUpdate) and len(frames) < n_frames:
                frames.append(orderbook_frame(event, quirks))
    final = {}
    for slug in slugs:
        bids, asks = exchange.book(slug)
        final[slug] = ([(str(p), str(s)) for p, s in bids], [(str(p), str(s)) for p, s in asks])
    return Workload(frames, market_bodies, books, final)


# ----------------------------------------------------------------------------- server


async def serve(workload_path: str) -> None:
    """The server process: print the port, serve until stdin closes."""
    from websockets.asyncio.server import ServerConnection
    from websockets.asyncio.server import serve as ws_serve
    from websockets.http11 import Request, Response

    work = msgspec.msgpack.decode(Path(workload_path).read_bytes(), type=Workload)  # noqa: ASYNC240
    chunks = ws_frames(work.frames)
    single = ws_frames(work.frames, chunk_bytes=1)
    seeded: set[str] = set()
    all_seeded = anyio.Event()

    def process_request(connection: ServerConnection, request: Request) -> Response | None:
        path = request.path.split("?")[0]
        if not path.startswith("/markets/"):
            return None
        parts = path.split("/")
        slug = parts[2]
        if len(parts) == 4 and parts[3] == "orderbook" and slug in work.books:
            seeded.add(slug)
            if len(seeded) == len(work.books):
                all_seeded.set()
            return connection.respond(200, work.books[slug].decode())
        if len(parts) == 3 and slug in work.markets:
            return connection.respond(200, work.markets[slug].decode())
        return connection.respond(404, '{"message":"not found"}')

    async def handler(ws: ServerConnection) -> None:
        path = ws.request.path if ws.request else ""
        bare = "bare=1" in path
        rate = int(path.split("/paced")[1].split("/")[0]) if "/paced" in path else 0
        await ws.send(_OPEN)
        async for message in ws:
            text = message if isinstance(message, str) else message.decode()
            if text.startswith("40"):
                await ws.send(f'40{NAMESPACE},{{"sid":"bench-ns"}}')
            elif '"subscribe_market_prices"' in text:
                break
        if not bare:
            with anyio.move_on_after(10):
                await all_seeded.wait()
        async with anyio.create_task_group() as tg:
            tg.start_soon(_drain, ws)
            # Pre-framed WebSocket bytes written straight to the socket: the server must
            # never be what limits the client, whose CPU is what is measured.
            transport = ws.transport
            if rate:
                await _paced(transport, single, rate)
            for chunk in () if rate else chunks:
                transport.write(chunk)
                while transport.get_write_buffer_size() > 4 << 20:  # noqa: ASYNC110
                    await anyio.sleep(0.0005)
            await ws.wait_closed()
            tg.cancel_scope.cancel()

    # No permessage-deflate: Engine.IO servers have it off by default since v4.
    async with ws_serve(handler, "127.0.0.1", 0, process_request=process_request,
                        max_size=None, compression=None) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        print(port, flush=True)
        await anyio.to_thread.run_sync(sys.stdin.read)
        # Exit here, not after closing the server: closing waits for every connection, and
        # a handler may still be mid-send to a client that went away (on a loaded machine
        # that wait outlasted the parent's 10 s and failed the run).
        os._exit(0)


def ws_frames(frames: list[str], chunk_bytes: int = 1 << 18) -> list[bytes]:
    """Server-to-client WebSocket text frames (RFC 6455 §5.2, unmasked), in chunks."""
    chunks: list[bytes] = []
    buffer = bytearray()
    for frame in frames:
        payload = frame.encode()
        n = len(payload)
        if n < 126:
            buffer += bytes((0x81, n))
        elif n < 1 << 16:
            buffer += bytes((0x81, 126)) + n.to_bytes(2, "big")
        else:
            buffer += bytes((0x81, 127)) + n.to_bytes(8, "big")
        buffer += payload
        if len(buffer) >= chunk_bytes:
            chunks.append(bytes(buffer))
            buffer.clear()
    if buffer:
        chunks.append(bytes(buffer))
    return chunks


async def _paced(transport: Any, frames: list[bytes], rate: int) -> None:
    """Write ``rate`` frames a second, evenly (whatever is due every half millisecond)."""
    start = time.monotonic()
    sent = 0
    while sent < len(frames):
        due = min(len(frames), int((time.monotonic() - start) * rate) + 1)
        if due > sent:
            transport.write(b"".join(frames[sent:due]))
            sent = due
        await anyio.sleep(0.0005)


async def _drain(ws: Any) -> None:
    async for _ in ws:
        pass


class Server:
    """The benchmark server child process (see :func:`serve`)."""

    def __init__(self, work: Workload, tmp: Path) -> None:
        path = tmp / "workload.msgpack"
        path.write_bytes(msgspec.msgpack.encode(work))
        self.process = subprocess.Popen(
            [sys.executable, "-m", "streamer.bench.e2e", "--serve", str(path)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.process.stdout is not None
        self.port = int(self.process.stdout.readline())

    @property
    def url(self) -> str:
        return f"127.0.0.1:{self.port}"

    def close(self) -> None:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.close()
        self.process.wait(timeout=10)
        self.process.stdout.close()


# ----------------------------------------------------------------------------- clients


def cpu_s() -> float:
    """CPU seconds (user + system) of every thread of this process so far."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def run_bare(work: Workload, server: Server) -> Result:
    """``websockets`` receive plus ``msgspec.json.decode`` of each event array."""
    from websockets.asyncio.client import connect

    decode = msgspec.json.decode
    n = len(work.frames)
    prefix = f"42{NAMESPACE},"
    skip = len(prefix)
    url = f"ws://{server.url}/socket.io/?EIO=4&transport=websocket&bare=1"
    async with connect(url, max_size=None, ping_interval=None, compression="deflate") as ws:
        await ws.recv()
        await ws.send(f"40{NAMESPACE},")
        await ws.recv()
        await ws.send(f'42{NAMESPACE},["subscribe_market_prices",{{"marketSlugs":[]}}]')
        received = 0
        cpu0 = wall0 = 0.0
        while received < n:
            frame = await ws.recv()
            if received == 0:
                cpu0, wall0 = cpu_s(), time.perf_counter()
            if isinstance(frame, str) and frame.startswith(prefix):
                decode(frame[skip:])
                received += 1
        wall, cpu = time.perf_counter() - wall0, cpu_s() - cpu0
    return Result("bare: websockets recv + msgspec decode", n - 1, received, wall, cpu)


def _set(tree: dict[str, Any], dotted: str, raw: str) -> None:
    try:
        value: Any = json.loads(raw)
    except ValueError:
        value = raw
    *parents, leaf = dotted.split(".")
    for part in parents:
        tree = tree.setdefault(part, {})
    tree[leaf] = value


def daemon_settings(work: Workload, server: Server, out: Path,
                    overrides: list[str]) -> dict[str, Any]:
    """The daemon's settings for one run: the bench server, a file sink, ``--set`` items."""
    tree: dict[str, Any] = {
        "api_url": f"http://{server.url}",
        "ws_url": f"ws://{server.url}",
        "markets": sorted(work.markets),
        "sinks": [f"file:{out}"],
        "metrics_addr": "127.0.0.1:0",
        "log_level": "warning",
        # The frames carry synthetic exchange times from a fixed epoch: trust them for
        # ordering, as a live feed's are (a real venue's clock is near ours).
        "feed": {"lifecycle": False, "max_clock_skew_s": 1e12},
    }
    for item in overrides:
        key, _, raw = item.partition("=")
        _set(tree, key, raw)
    return tree


async def run_daemon(work: Workload, server: Server, out: Path,
                     overrides: list[str]) -> Result:
    """The real ``run`` path into a file sink; stops once every frame is written out."""

    tune_process()  # as the CLI does for a daemon process
    settings = load_settings(None, daemon_settings(work, server, out, overrides))
    n = len(work.frames)
    feeds: list[Feed] = []
    metrics = Metrics(registry=CollectorRegistry())
    result: list[Result] = []

    async def watch(scope: anyio.CancelScope) -> None:
        # The feed offers no event per frame; polling costs ~200 wake-ups a second.
        while not feeds or feeds[0].stats.book_events == 0:  # noqa: ASYNC110
            await anyio.sleep(0.0005)
        cpu0, wall0, main0 = cpu_s(), time.perf_counter(), time.thread_time()
        feed = feeds[0]
        while feed.stats.book_events < n:  # noqa: ASYNC110
            await anyio.sleep(0.005)
        await _wait_written(feed)
        await _wait_recorded(metrics)
        wall, cpu = time.perf_counter() - wall0, cpu_s() - cpu0
        if os.environ.get("BENCH_THREADS"):
            print(f"event-loop thread {(time.thread_time() - main0) / n * 1e6:.1f} us/frame, "
                  f"all threads {cpu / n * 1e6:.1f}")
        result.append(Result("daemon: run path into a file sink", n - 1, 0, wall, cpu))
        scope.cancel()

    async with anyio.create_task_group() as tg:
        tg.start_soon(watch, tg.cancel_scope)
        # run_daemon is app.run, plus the recording tap when --set record.dir=DIR is given
        await run_recorded(settings, None, on_feed=feeds.append, handle_signals=False,
                           metrics=metrics)
    return result[0]


async def _wait_written(feed: Any) -> None:
    """Wait until the fan-out has written every record the feed produced."""
    stats = list(feed._fanout.stats.values())
    while any(s.depth or s.in_flight for s in stats):  # noqa: ASYNC110
        await anyio.sleep(0.002)


async def _wait_recorded(metrics: Metrics) -> None:
    """With ``record.dir`` set: wait until the recorder has written everything received, so
    the recording's cost of these frames is all counted."""
    while metrics.registry.get_sample_value(RECORD_PENDING):  # noqa: ASYNC110
        await anyio.sleep(0.01)


def _text(sides: tuple[list[Any], list[Any]]) -> tuple[list[tuple[str, str]], ...]:
    return tuple([(str(p), str(s)) for p, s in side] for side in sides)


class LatencyMetrics(Metrics):
    """Metrics that also time each book record from frame to sink write, exactly.

    Start: the read loop has the frame (``Feed._on_book_frame``, the hot path, or
    ``Feed._on_orderbook`` is entered). End: the
    sink's ``write`` of the batch holding the record returned (``on_written``).
    """

    def __init__(self) -> None:
        super().__init__(registry=CollectorRegistry())
        self.pending: dict[int, float] = {}
        self.samples: list[float] = []
        self.frame_start = 0.0
        self.measuring = False

    def on_written(self, sink: str, batch: Any) -> None:
        super().on_written(sink, batch)
        now = time.perf_counter()
        pending, samples = self.pending, self.samples
        for record in batch:
            start = pending.pop(id(record), None)
            if start is not None:
                samples.append(now - start)

    def hook(self, feed: Feed) -> None:
        """Stamp each frame as the read loop takes it, and each record it makes."""
        on_orderbook = feed._on_orderbook
        on_book_frame = feed._on_book_frame
        fanout = feed._fanout
        publish = fanout.publish_nowait

        def timed_orderbook(payload: msgspec.Raw) -> None:
            self.frame_start = time.perf_counter()
            on_orderbook(payload)

        def timed_book_frame(frame: str, start: int) -> bool:
            self.frame_start = time.perf_counter()
            return on_book_frame(frame, start)

        def timed_publish(record: Record) -> bool:
            if self.measuring and type(record) in (Book, BookDelta):
                self.pending[id(record)] = self.frame_start
            return publish(record)

        feed._on_orderbook = timed_orderbook  # type: ignore[method-assign]
        feed._on_book_frame = timed_book_frame  # type: ignore[method-assign]
        fanout.publish_nowait = timed_publish  # type: ignore[method-assign]

    def percentiles_ms(self) -> tuple[float, float]:
        """(p50, p99) of the samples, in milliseconds."""
        ordered = sorted(self.samples)
        n = len(ordered)
        return ordered[n // 2] * 1e3, ordered[min(n - 1, int(0.99 * n))] * 1e3


async def run_latency(work: Workload, server: Server, out: Path, overrides: list[str],
                      rate: int) -> LatencyMetrics:
    """The run path fed ``rate`` frames a second; exact receive-to-sink latencies."""
    tree = daemon_settings(work, server, out, overrides)
    tree["ws_url"] += f"/paced{rate}"
    tune_process()
    settings = load_settings(None, tree)
    metrics = LatencyMetrics()
    feeds: list[Feed] = []
    n = len(work.frames)

    def on_feed(feed: Feed) -> None:
        feeds.append(feed)
        metrics.hook(feed)
        metrics.measuring = True

    async def watch(scope: anyio.CancelScope) -> None:
        while not feeds or feeds[0].stats.book_events < n:  # noqa: ASYNC110
            await anyio.sleep(0.05)
        await _wait_written(feeds[0])
        scope.cancel()

    async with anyio.create_task_group() as tg:
        tg.start_soon(watch, tg.cancel_scope)
        await run_recorded(settings, None, on_feed=on_feed, handle_signals=False,
                           metrics=metrics)
    return metrics


def check_books(work: Workload, out: Path) -> tuple[int, int, float]:
    """Replay the NDJSON output; every book must equal the model's final book.

    Returns:
        (records, deltas, mean changed levels per delta).

    Raises:
        SystemExit: a book differs or is missing.
    """
    replayer = Replayer()
    records = deltas = changed = 0
    with out.open("rb") as f:
        for line in f:
            record = decode_record(line)
            records += 1
            if isinstance(record, Book | BookDelta):
                replayer.apply(record)
                if isinstance(record, BookDelta):
                    deltas += 1
                    changed += len(record.bids) + len(record.asks)
    wrong = [slug for slug, (bids, asks) in work.final.items()
             if (book := replayer.book(slug)) is None or _text(book.levels()) != (bids, asks)]
    if wrong or replayer.gaps:
        raise SystemExit(f"books differ from the exchange model: {wrong[:5]} "
                         f"({len(wrong)} markets), seq gaps {replayer.gaps[:3]}")
    return records, deltas, changed / deltas if deltas else 0.0


# ----------------------------------------------------------------------------- driver


COMPARED: Final = "compared"
"""The key of the daemon runs with ``--compare-set`` in :func:`measure`'s results."""


async def measure(work: Workload, args: argparse.Namespace,
                  tmp: Path) -> dict[str, list[Result]]:
    """``repeat`` alternating runs of each client, in run order; books checked.

    With ``--compare-set``, each repeat also runs the daemon with those settings
    (:data:`COMPARED`), alternating which of the two daemon runs goes first.
    """
    runs: dict[str, list[Result]] = {}
    server = Server(work, tmp)
    try:
        for i in range(args.repeat):
            order = ["daemon", COMPARED] if args.compare_set else ["daemon"]
            for name in ["bare", *(order if i % 2 == 0 else order[::-1])]:
                gc.collect()
                out = tmp / f"run{i}.ndjson"
                if name == "bare":
                    result = await run_bare(work, server)
                else:
                    overrides = args.set + (args.compare_set if name == COMPARED else [])
                    result = await run_daemon(work, server, out, overrides)
                    result.records, deltas, changed = check_books(work, out)
                    result.name += f" ({changed:.1f} levels/delta)"
                    if name == COMPARED:
                        result.name = "daemon + " + " ".join(args.compare_set)
                    out.unlink()
                runs.setdefault(name, []).append(result)
    finally:
        server.close()
    return runs


def best_of(results: list[Result]) -> Result:
    """The run with the least CPU."""
    return min(results, key=lambda r: r.cpu_s)


def overhead_line(workload: str, runs: dict[str, list[Result]], compared: list[str]) -> str:
    """The cost of the ``--compare-set`` settings: best over best, and the per-repeat spread."""
    base, other = best_of(runs["daemon"]), best_of(runs[COMPARED])
    best = other.cpu_us_per_frame / base.cpu_us_per_frame - 1
    pairs = sorted(b.cpu_us_per_frame / a.cpu_us_per_frame - 1
                   for a, b in zip(runs["daemon"], runs[COMPARED], strict=True))
    median = pairs[len(pairs) // 2]
    return (f"cost of {' '.join(compared)}, {workload}: {best:+.1%} CPU per frame, best of "
            f"{len(pairs)} each ({base.cpu_us_per_frame:.1f} -> {other.cpu_us_per_frame:.1f} "
            f"us); per repeat {pairs[0]:+.1%} .. {pairs[-1]:+.1%}, median {median:+.1%}")


async def latency_main(args: argparse.Namespace) -> tuple[float, float]:
    """``--latency-rate``: p50/p99 receive-to-sink latency of the typical workload."""
    work = make_workload(args.frames, args.markets, args.levels, args.seed,
                         WORKLOADS["typical"])
    with tempfile.TemporaryDirectory() as tmp:
        server = Server(work, Path(tmp))
        try:
            metrics = await run_latency(work, server, Path(tmp) / "out.ndjson", args.set,
                                        args.latency_rate)
        finally:
            server.close()
    p50, p99 = metrics.percentiles_ms()
    print(f"{len(work.frames)} frames at {args.latency_rate}/s over a loopback socket into a "
          f"file sink, {args.markets} markets, {args.levels} levels: receive-to-sink latency "
          f"p50 {p50:.2f} ms, p99 {p99:.2f} ms ({len(metrics.samples)} records)")
    return p50, p99


async def main_async(args: argparse.Namespace) -> dict[str, float]:
    """Run the chosen workloads; print a table and the ratios; return the ratios."""
    print(f"{args.frames} orderbookUpdate frames per run over a loopback socket, "
          f"{args.markets} markets, {args.levels} levels per side, best of {args.repeat}"
          + ("" if args.quirks else ", no encoding quirks")
          + f", book core: {book.BOOK_CORE}"
          + (f", daemon settings {args.set}" if args.set else "")
          + (f", daemon with and without {args.compare_set}" if args.compare_set else ""))
    print(f"{'workload':9} {'client':58} {'frames/s':>9} {'CPU us/frame':>13}")
    ratios: dict[str, float] = {}
    overheads: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.workload:
            work = make_workload(args.frames, args.markets, args.levels, args.seed,
                                 WORKLOADS[name], args.quirks)
            runs = await measure(work, args, Path(tmp))
            best = {client: best_of(results) for client, results in runs.items()}
            for r in best.values():
                print(f"{name:9} {r.name:58} {r.frames_per_s:9.0f} {r.cpu_us_per_frame:13.1f}")
            ratios[name] = best["daemon"].cpu_us_per_frame / best["bare"].cpu_us_per_frame
            if args.compare_set:
                overheads.append(overhead_line(name, runs, args.compare_set))
    for name, ratio in ratios.items():
        verdict = "within" if ratio <= TARGETS[name] else "OVER"
        print(f"ratio daemon/bare CPU per frame, {name}: {ratio:.2f}x "
              f"({verdict} the {TARGETS[name]}x target); final books exact")
    for line in overheads:
        print(line)
    return ratios


def build_parser() -> argparse.ArgumentParser:
    """The benchmark's flags."""
    description = __doc__.replace("``", "").replace("**", "") if __doc__ else None
    parser = argparse.ArgumentParser(prog="python -m streamer.bench", description=description,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=40_000, metavar="N",
                        help="frames per client run (default %(default)s)")
    parser.add_argument("--markets", type=int, default=20, metavar="N",
                        help="markets the frames spread over (default %(default)s)")
    parser.add_argument("--levels", type=int, default=20, metavar="N",
                        help="price levels per side (default %(default)s)")
    parser.add_argument("--seed", type=int, default=1, help="random seed (default %(default)s)")
    parser.add_argument("--repeat", type=int, default=3, metavar="N",
                        help="runs of each client; the best counts (default %(default)s)")
    parser.add_argument("--workload", action="append", choices=sorted(WORKLOADS),
                        help="typical or stress (repeatable; default both)")
    parser.add_argument("--set", action="append", default=[], metavar="PATH=VALUE",
                        help="daemon setting for the daemon runs, e.g. feed.lifecycle=false "
                             "(repeatable; default: none)")
    parser.add_argument("--compare-set", action="append", default=[], metavar="PATH=VALUE",
                        help="also run the daemon with this setting, interleaved with the runs "
                             "without it, and print its CPU overhead, e.g. "
                             "record.dir=/tmp/rec (repeatable; default: none)")
    parser.add_argument("--latency-rate", type=int, metavar="N",
                        help="instead: push N frames a second and report receive-to-sink "
                             "latency p50/p99 (the typical workload; default off)")
    parser.add_argument("--no-quirks", dest="quirks", action="store_false",
                        help="one encoding throughout (numbers as numbers, one side style)")
    parser.add_argument("--uvloop", action="store_true",
                        help="run both clients on uvloop (pip install uvloop) to compare")
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse the benchmark's flags."""
    args = build_parser().parse_args(argv)
    args.workload = args.workload or list(WORKLOADS)
    return args


def main(argv: list[str] | None = None) -> None:
    """Parse flags and run the benchmark (or, with ``--serve``, the server child)."""
    args = parse_args(argv)
    if args.serve:
        anyio.run(serve, args.serve)
        return
    options = {"use_uvloop": True} if args.uvloop else {}
    if args.latency_rate:
        anyio.run(latency_main, args, backend_options=options)
        return
    anyio.run(main_async, args, backend_options=options)


if __name__ == "__main__":
    main()
