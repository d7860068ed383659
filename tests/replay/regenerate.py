"""Rewrite the committed recording and its expected output.

    .venv/bin/python -m tests.replay.regenerate            # 12 s, drops every 4 s

Records the simulator (drops, malformed frames, unknown events, REST 429/503) with
``run --record`` into ``tests/data/replay/sim/``, replays it, checks that the replay's
records equal the live run's (``recv_ts`` and ``run`` aside), then writes
``live.ndjson`` (the live run's records) and ``expected.ndjson`` (the replay's).
Run it when the output changes on purpose, and commit the three files together.

    .venv/bin/python -m tests.replay.regenerate --check /tmp/rec   # measure only

``--check DIR`` records into DIR instead and only compares (the committed files are
left alone): book records of the live run against the replay's, then a second replay
against the first, and the ``--max-speed`` replay time.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from sinks.records import Status, encode
from tests.replay.harness import (
    comparable,
    dump,
    first_difference,
    record_simulator,
    replay_records,
    run,
    scenario,
)

DATA = Path(__file__).resolve().parent.parent / "data" / "replay"
RECORDING = DATA / "sim"
LIVE = DATA / "live.ndjson"
EXPECTED = DATA / "expected.ndjson"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.replay.regenerate")
    parser.add_argument("--seconds", type=float, default=12.0)
    parser.add_argument("--kick-every", type=float, default=4.0)
    parser.add_argument("--check", metavar="DIR", type=Path,
                        help="record into DIR and compare; do not touch the committed files")
    args = parser.parse_args(argv)
    if args.check is not None:
        return check(args.check, args.seconds, args.kick_every)
    live = run(record_simulator, RECORDING, scenario(kick_every_s=args.kick_every), args.seconds)
    replayed, stats = run(replay_records, RECORDING)
    a, b = comparable(live), comparable(replayed)
    if a != b:
        print(f"replay differs from the live run: {first_difference(a, b)}", file=sys.stderr)
        return 1
    DATA.mkdir(parents=True, exist_ok=True)
    dump(live, LIVE)
    dump(replayed, EXPECTED)
    size = sum(f.stat().st_size for f in RECORDING.iterdir())
    print(f"{RECORDING}: {size} bytes, {stats.frames} frames, {stats.rest} REST responses, "
          f"{stats.sessions} sessions; {len(b)} records")
    return 0


def check(out: Path, seconds: float, kick_every: float) -> int:
    live = run(record_simulator, out, scenario(kick_every_s=kick_every), seconds)
    started = time.perf_counter()
    replayed, stats = run(replay_records, out)
    wall = time.perf_counter() - started
    again, _ = run(replay_records, out)
    books_live = comparable(live, books_only=True)
    books_replay = comparable(replayed, books_only=True)
    same_books = books_live == books_replay
    same_twice = [encode(r) for r in replayed] == [encode(r) for r in again]
    drops = sum(isinstance(r, Status) and r.state == "disconnected" for r in live)
    print(f"{seconds:.0f} s recording, {drops} drops, {stats.frames} frames, {stats.rest} REST "
          f"responses ({stats.rest_orphans} unclaimed)")
    print(f"book records: live {len(books_live)}, replay {len(books_replay)}, "
          f"identical (type/market/seq/ts/bests/levels): {same_books}")
    if not same_books:
        print(first_difference(books_live, books_replay))
    print(f"two replays byte-identical: {same_twice}")
    print(f"replay at max speed: {wall:.2f} s incl. start-up ({seconds / wall:.0f}x real time)")
    return 0 if same_books and same_twice else 1


if __name__ == "__main__":
    sys.exit(main())
