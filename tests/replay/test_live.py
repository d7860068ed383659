"""Record a live run against the simulator, replay it: the same records."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import anyio
import msgspec
import pytest

from orderbook.replay import Replayer
from orderbook.types import Book, BookDelta
from sinks.records import Record, Status, encode
from streamer.partner.auth import ApiKey
from streamer.recording.recorder import REQUEST, load
from streamer.recording.recorder import zstd as _zstd
from streamer.simulator import SimulatorConfig
from tests.replay.harness import (
    comparable,
    first_difference,
    record_simulator,
    replay_records,
    scenario,
)

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

KEY = "lmts_live-api-key-never-on-disk-0123456789"


def _sessions(n: int) -> Callable[[list[Record]], bool]:
    def enough(records: list[Record]) -> bool:
        subscribed = ("subscribed", "resubscribed")
        return sum(isinstance(r, Status) and r.state in subscribed for r in records) >= n

    return enough


_three_sessions = _sessions(3)
FAST_SESSIONS = {"backoff": {"initial_s": 0.05, "cap_s": 0.5}, "min_attempt_interval_s": 0.1,
                 "healthy_jitter_s": 0.05}
"""Feed settings for many short sessions: reconnect at once after each drop (not after the
default 1 s floor between attempts)."""


async def test_live_run_and_its_replay_emit_the_same_records(tmp_path: Path) -> None:
    out = tmp_path / "rec"
    with anyio.fail_after(60):
        live = await record_simulator(out, scenario(seed=5, kick_every_s=1.0), None,
                                      until=_three_sessions, credentials=ApiKey(KEY))
        replayed, stats = await replay_records(out)
        again, _ = await replay_records(out)
    a, b = comparable(live), comparable(replayed)
    assert a == b, first_difference(a, b)
    assert [encode(r) for r in replayed] == [encode(r) for r in again]
    assert stats.sessions >= 3 and stats.rest_orphans == 0
    raw = b"".join(_zstd.decompress(p.read_bytes()) for p in out.iterdir())
    assert KEY.encode() not in raw


async def test_timer_driven_audits_and_probes_replay_too(tmp_path: Path) -> None:
    out = tmp_path / "rec"
    config = SimulatorConfig(seed=3, markets=4, groups=0, amm_markets=0, levels=5, rate_hz=4.0,
                             kick_every_s=1.0, rest_503_rate=0.1)
    health = {"audit_interval_s": 0.3, "probe_check_s": 0.1, "stale_after_s": 0.4,
              "audit_sample": 2}
    with anyio.fail_after(60):
        live = await record_simulator(out, config, None, until=_three_sessions, health=health)
        replayed, stats = await replay_records(out)
    a, b = comparable(live), comparable(replayed)
    assert a == b, first_difference(a, b)
    checks = sum(e[0] == REQUEST and e[3].endswith("/orderbook")
                 and e[4] in ("audit", "stale_probe") for e in load(out)[1])
    assert checks > 0  # some fetches were audits or probes, and they replayed
    assert stats.rest_orphans == 0


async def test_a_recording_whose_start_was_rotated_away_still_replays(tmp_path: Path) -> None:
    out = tmp_path / "rec"
    record = {"dir": str(out), "max_bytes": 1024, "keep": 20, "flush_interval_s": 0.05}

    def done(records: list[Record]) -> bool:  # 6 sessions, the last one with books
        if not _sessions(6)(records):
            return False
        last = max(i for i, r in enumerate(records) if isinstance(r, Status)
                   and r.state in ("subscribed", "resubscribed"))
        return sum(isinstance(r, Book | BookDelta) for r in records[last:]) >= 5

    with anyio.fail_after(60):
        config = msgspec.structs.replace(scenario(seed=9, kick_every_s=0.5), rate_hz=40.0)
        live = await record_simulator(out, config, None, until=done, record=record,
                                      feed=FAST_SESSIONS)
        replayed, stats = await replay_records(out)
    header, _ = load(out)
    assert header["segment"] > 0  # the run's first segments are gone
    assert stats.sessions >= 1 and stats.rest_orphans == 0
    final_live, final_replay = Replayer(), Replayer()
    for record_ in live:
        if isinstance(record_, Book | BookDelta):
            final_live.apply(record_)
    for record_ in replayed:
        if isinstance(record_, Book | BookDelta):
            final_replay.apply(record_)
    markets = {r.market for r in replayed if isinstance(r, Book)}
    assert markets
    for market in markets:
        assert final_replay.book(market).levels() == final_live.book(market).levels(), market
