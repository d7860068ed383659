"""Record the simulator with ``run --record``, replay it, compare the records.

Used by the tests and by ``python -m tests.replay.regenerate`` (which rewrites the
committed recording and its expected output).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import msgspec
from prometheus_client import CollectorRegistry

from orderbook.types import Book, BookDelta
from sinks.fanout import SinkSpec
from sinks.memory import MemorySink
from sinks.records import Record, encode
from streamer.config import load_settings
from streamer.ops.metrics import Metrics
from streamer.recording.recorder import run_daemon
from streamer.recording.replay import ReplayStats, replay
from streamer.simulator import Simulator, SimulatorConfig

IGNORED: tuple[str, ...] = ("recv_ts", "run")
"""Fields that may differ between a live run and its replay."""
BOOK_FIELDS: tuple[str, ...] = ("type", "market", "seq", "ts", "best_bid", "best_ask",
                                "bids", "asks")


def scenario(seed: int = 11, kick_every_s: float = 4.0) -> SimulatorConfig:
    """Drops every ``kick_every_s``, malformed frames, unknown events, REST 429/503."""
    return SimulatorConfig(seed=seed, markets=3, groups=1, amm_markets=1, levels=6,
                           rate_hz=15.0, kick_every_s=kick_every_s, malformed_rate=0.03,
                           rest_429_rate=0.15, rest_503_rate=0.2, lifecycle_every_s=5.0,
                           shift_p=0.05, unknown_events=True, trading_markets=3)


async def record_simulator(out: Path, config: SimulatorConfig, seconds: float | None,
                           *, until: Callable[[list[Record]], bool] | None = None,
                           credentials: Any = None, **overrides: Any) -> list[Record]:
    """Run the simulator and ``run --record out`` for ``seconds`` (or ``until`` the live
    records satisfy a condition); the live records."""
    shutil.rmtree(out, ignore_errors=True)
    sim = Simulator(config)
    sink = MemorySink()
    stop = anyio.Event()
    async with anyio.create_task_group() as tg:
        address = await tg.start(sim.run)
        settings = load_settings(None, {
            "api_url": address.api_url,
            "ws_url": address.ws_url,
            "all_markets": True,
            "shutdown_grace_s": 2.0,
            "metrics_addr": "127.0.0.1:0",
            "feed": {"backoff": {"initial_s": 0.05, "cap_s": 0.5}},
            "rest": {"backoff": {"initial_s": 0.05, "cap_s": 0.2}},
            "record": {"dir": str(out)},
            **overrides,
        })
        metrics = Metrics(CollectorRegistry(), process_metrics=False)

        async def stop_later() -> None:
            if seconds is not None:
                await anyio.sleep(seconds)
            while until is not None and not until(sink.records):
                await anyio.sleep(0.02)
            stop.set()

        tg.start_soon(stop_later)
        await run_daemon(settings, credentials, handle_signals=False, specs=[SinkSpec(sink=sink)],
                         metrics=metrics, stop=stop)
        tg.cancel_scope.cancel()
    return sink.records


async def replay_records(path: Path, **kwargs: Any) -> tuple[list[Record], ReplayStats]:
    """Replay a recording at full speed into memory."""
    sink = MemorySink()
    metrics = Metrics(CollectorRegistry(), process_metrics=False)
    stats = await replay(path, specs=[SinkSpec(sink=sink)], metrics=metrics,
                         overrides={"shutdown_grace_s": 5.0}, **kwargs)
    return sink.records, stats


def comparable(records: Sequence[Record], *, books_only: bool = False) -> list[dict[str, Any]]:
    """Records as dicts without the fields that may differ (``recv_ts``, ``run``)."""
    out = []
    for record in records:
        if books_only and not isinstance(record, Book | BookDelta):
            continue
        data = msgspec.json.decode(encode(record))
        if books_only:
            data = {k: data.get(k) for k in BOOK_FIELDS}
        for key in IGNORED:
            data.pop(key, None)
        out.append(data)
    return out


def per_market(rows: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Book rows grouped by market (the order across markets may interleave differently)."""
    grouped: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        grouped.setdefault(row["market"], []).append(row)
    return grouped


def dump(records: Sequence[Record], path: Path) -> None:
    """NDJSON of the comparable records (what the golden file holds)."""
    with path.open("wb") as f:
        for row in comparable(records):
            f.write(msgspec.json.encode(row) + b"\n")


def read(path: Path) -> list[dict[str, Any]]:
    """Rows of an NDJSON golden file."""
    return [msgspec.json.decode(line) for line in path.read_bytes().splitlines() if line]


def first_difference(a: Sequence[Any], b: Sequence[Any]) -> str:
    """Where two lists first differ (for assertion messages)."""
    for i, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            return f"row {i}:\n  live:   {x}\n  replay: {y}"
    return f"lengths {len(a)} vs {len(b)}"


def run(coro: Any, *args: Any, **kwargs: Any) -> Any:
    """Run an async function on asyncio (scripts)."""
    return anyio.run(partial(coro, *args, **kwargs))
