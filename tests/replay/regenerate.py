"""Rewrite the committed recording and its expected output.

    .venv/bin/python -m tests.replay.regenerate            # 12 s, drops every 4 s

Records the simulator (drops, malformed frames, unknown events, REST 429/503) with
``run --record`` into ``tests/data/replay/sim/``, replays it, checks that the replay's
records equal the live run's (``recv_ts`` and ``run`` aside), then writes
``live.ndjson`` (the live run's records) and ``expected.ndjson`` (the replay's).
Run it when the output changes on purpose, and commit the three files together.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

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
    args = parser.parse_args(argv)
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


if __name__ == "__main__":
    sys.exit(main())
