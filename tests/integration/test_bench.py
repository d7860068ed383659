"""Smoke run of the end-to-end benchmark: it runs, and the daemon's books come out exact.

The ratio targets live in the benchmark's output, not here: this machine's timing is
shared with other work, so no assertion depends on how fast anything ran.
"""

from __future__ import annotations

import pytest

from streamer.bench import e2e as bench

pytestmark = [pytest.mark.anyio, pytest.mark.integration]


async def test_bench_smoke_run_checks_books_and_reports_both_ratios(
    capsys: pytest.CaptureFixture[str],
) -> None:
    args = bench.parse_args(["--frames", "300", "--markets", "3", "--levels", "5",
                             "--repeat", "1", "--set", "per_market_metrics=false"])
    ratios = await bench.main_async(args)
    assert set(ratios) == {"typical", "stress"}
    assert all(ratio > 0 for ratio in ratios.values())
    out = capsys.readouterr().out
    assert "final books exact" in out
    assert "per_market_metrics=false" in out


async def test_bench_compare_set_runs_the_daemon_with_and_without_and_prints_the_cost(
    capsys: pytest.CaptureFixture[str], tmp_path: object,
) -> None:
    from pathlib import Path

    rec = Path(str(tmp_path)) / "rec"
    args = bench.parse_args(["--frames", "300", "--markets", "3", "--levels", "5",
                             "--repeat", "2", "--workload", "typical",
                             "--compare-set", f"record.dir={rec}"])
    await bench.main_async(args)
    out = capsys.readouterr().out
    assert f"daemon + record.dir={rec}" in out
    assert f"cost of record.dir={rec}, typical: " in out and "per repeat" in out
    # The compared runs really ran with the setting: one recording per compared run.
    assert len({p.name.split(".")[0] for p in rec.iterdir()}) == 2


def test_bench_check_books_refuses_a_wrong_book(tmp_path: object) -> None:
    from pathlib import Path

    work = bench.make_workload(50, 2, 3, 1, bench.WORKLOADS["typical"])
    out = Path(str(tmp_path)) / "out.ndjson"
    out.write_text("")
    with pytest.raises(SystemExit, match="books differ"):
        bench.check_books(work, out)
