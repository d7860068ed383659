"""The command line: exit statuses, one-line errors, and real-process shutdown."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sinks.records import decode_record, record_type
from streamer.cli import main
from streamer.schema import render, shipped


def _one_line_error(capsys: pytest.CaptureFixture[str], *words: str) -> None:
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    for word in words:
        assert word in lines[0], lines[0]


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["run"], ["markets"]),
        (["run", "--bogus"], ["--bogus"]),
        (["run", "--market"], ["--market"]),
        (["run", "--market", "a", "--log-level", "loud"], ["--log-level"]),
        (["run", "--market", "a", "--api-url", "ftp://x"], ["api_url"]),
        (["run", "--market", "a", "--ws-url", "http://x"], ["ws_url"]),
        (["run", "--market", "bad slug!"], ["markets", "bad slug!"]),
        (["run", "--market", "a", "--sink", "carrier-pigeon:"], ["sinks"]),
        (["run", "--market", "a", "--sink", "file:/tmp/x?rotate=soon"], ["rotate"]),
        (["run", "--market", "a", "--sink", "stdout:?types=book,trades"],
         ["sinks", "types", "trades"]),
        (["run", "--market", "a", "--sink", "kafka://b:9092/t?compression=brotli"],
         ["sinks", "compression"]),
        (["run", "--market", "a", "--discovery-interval", "-1"], ["discovery_interval_s"]),
        (["bogus"], ["bogus"]),
    ],
)
def test_cli_bad_flags_exit_2_with_one_line(
    argv: list[str], words: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc_info:
        raise SystemExit(main(argv, env={}))
    assert exc_info.value.code == 2
    _one_line_error(capsys, *words)


@pytest.mark.parametrize(
    ("toml", "words"),
    [
        ('markets = ["a"]\nfeed = { connect_timeout_s = "soon" }\n', ["feed.connect_timeout_s"]),
        ('markets = ["a"]\ncolour = "blue"\n', ["colour"]),
        ('markets = ["a"]\n[rest]\nmax_attempts = 0\n', ["rest.max_attempts"]),
        ("markets = [\n", ["--config"]),
        ('markets = ["a"]\n[feed.backoff]\njitter = 2.0\n', ["feed.backoff"]),
        ('markets = ["a"]\nsnapshot_interval_s = -1\n', ["snapshot_interval_s"]),
        ('markets = ["a"]\ndepth = 0\n', ["depth"]),
        ('markets = ["a"]\nlease = "nats://h:4222/b?ttl=soon"\n', ["lease", "ttl"]),
        ('markets = ["a"]\nlease = "redis://u:pw@h:6379/0"\n', ["lease", "key"]),
    ],
)
def test_cli_bad_config_file_exits_2_naming_the_field(
    tmp_path: Path, toml: str, words: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "config.toml"
    path.write_text(toml)
    assert main(["run", "--config", str(path)], env={}) == 2
    _one_line_error(capsys, *words)


def test_cli_missing_config_file_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--config", "/nonexistent/limitless.toml"], env={}) == 2
    _one_line_error(capsys, "/nonexistent/limitless.toml")


def test_cli_half_hmac_credentials_exit_2_without_the_secret(
    capsys: pytest.CaptureFixture[str],
) -> None:
    secret = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
    assert main(["run", "--market", "a"], env={"LIMITLESS_HMAC_SECRET": secret}) == 2
    err = capsys.readouterr().err
    assert "LIMITLESS_HMAC_TOKEN_ID" in err and secret not in err


@pytest.mark.parametrize(
    ("argv", "env", "words"),
    [
        (["run", "--market", "a", "--private-channel", "positions"], {}, ["credentials"]),
        (["run", "--market", "a", "--allowance-profile", "4543"],
         {"LIMITLESS_API_KEY": "lmts_k"}, ["HMAC"]),
        (["allowances", "4543"], {}, ["HMAC"]),
    ],
)
def test_cli_private_features_without_credentials_exit_2(
    argv: list[str], env: dict[str, str], words: list[str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(argv, env=env) == 2
    _one_line_error(capsys, *words)
    assert "lmts_k" not in capsys.readouterr().err


def test_cli_section_flags_merge_into_the_config_file(tmp_path: Path) -> None:
    from streamer.config import load_settings

    path = tmp_path / "config.toml"
    path.write_text('markets = ["a"]\n[private]\ndedupe_window_s = 5.0\n')
    settings = load_settings(str(path), {"private.channels": ["positions"]})
    assert settings.private.channels == ("positions",)
    assert settings.private.dedupe_window_s == 5.0


def test_cli_flags_override_the_config_file(tmp_path: Path) -> None:
    from streamer.config import load_settings

    path = tmp_path / "config.toml"
    path.write_text('markets = ["from-file"]\nlog_level = "debug"\n[rest]\nmax_attempts = 7\n')
    settings = load_settings(str(path), {"markets": ["from-flag"]})
    assert settings.markets == ("from-flag",)
    assert settings.log_level == "debug" and settings.rest.max_attempts == 7


def test_schema_file_shipped_matches_the_record_structs() -> None:
    assert shipped() == render(), (
        "run: python -m streamer.schema > streamer/schema/events.schema.json"
    )


# -- real processes -----------------------------------------------------------------------


def _spawn(*args: str, stdout: int | None = subprocess.DEVNULL) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "streamer", *args], stdout=stdout,
                            stderr=subprocess.PIPE, env=env)


def _wait_lines(path: Path, n: int, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if path.exists() and path.read_bytes().count(b"\n") >= n:
            return
        time.sleep(0.05)
    raise AssertionError(f"{path} never reached {n} lines")


def _stop(proc: subprocess.Popen[bytes], sig: signal.Signals) -> tuple[int, float, str]:
    start = time.monotonic()
    proc.send_signal(sig)
    try:
        _, err = proc.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
        raise AssertionError("did not exit within 10 s") from None
    return proc.returncode, time.monotonic() - start, err.decode(errors="replace")


@pytest.mark.integration
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_demo_process_flushes_and_exits_0_on_signal(tmp_path: Path, sig: signal.Signals) -> None:
    out = tmp_path / "events.ndjson"
    proc = _spawn("demo", "--rate", "200", "--kick-every", "1", "--sink", f"file:{out}")
    _wait_lines(out, 300)
    code, took, err = _stop(proc, sig)
    assert code == 0, err
    assert took < 5.0, f"shutdown took {took:.1f}s"
    data = out.read_bytes()
    assert data.endswith(b"\n")
    records = [decode_record(line) for line in data.splitlines()]
    assert {record_type(r) for r in records} >= {"market", "book", "book_delta", "status"}


@pytest.mark.integration
def test_run_against_an_unreachable_api_retries_and_stops_cleanly() -> None:
    proc = _spawn("run", "--api-url", "http://127.0.0.1:9", "--ws-url", "ws://127.0.0.1:9",
                  "--market", "some-market")
    time.sleep(2.0)  # long enough for a few failed attempts; nothing to wait on instead
    assert proc.poll() is None, "the daemon must not exit while the API is unreachable"
    code, took, err = _stop(proc, signal.SIGTERM)
    assert code == 0, err
    assert took < 5.0
    assert "retrying" in err
    assert "Traceback" not in err


@pytest.mark.integration
def test_demo_stdout_closed_by_reader_exits_0(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    pipeline = subprocess.run(
        f"{sys.executable} -m streamer demo --rate 200 | head -n 50",
        shell=True, capture_output=True, env=env, timeout=30,
    )
    lines = pipeline.stdout.splitlines()
    assert len(lines) == 50
    for line in lines:
        decode_record(line)
    assert b"Traceback" not in pipeline.stderr


def test_simulate_auth_without_hmac_credentials_exits_2(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["simulate", "--auth"], env={"LIMITLESS_API_KEY": "lmts_k"}) == 2
    _one_line_error(capsys, "LIMITLESS_HMAC_TOKEN_ID")


@pytest.mark.integration
def test_demo_private_streams_order_events_and_allowance_readiness(tmp_path: Path) -> None:
    out = tmp_path / "events.ndjson"
    proc = _spawn("demo", "--private", "--private-rate", "50", "--sink", f"file:{out}")
    deadline = time.monotonic() + 30
    types: set[str] = set()
    ready = False
    while time.monotonic() < deadline and not (ready and "order_event" in types):
        time.sleep(0.2)
        if out.exists():
            records = [decode_record(line) for line in out.read_bytes().splitlines()]
            types = {record_type(r) for r in records}
            ready = any(record_type(r) == "allowance" and r.ready  # type: ignore[union-attr]
                        for r in records)
    code, _, err = _stop(proc, signal.SIGTERM)
    assert code == 0, err
    assert ready and {"order_event", "position", "tx", "book_delta"} <= types


@pytest.mark.parametrize("sink", ["file:{tmp}/missing/out.ndjson", "file:{tmp}"])
def test_cli_unwritable_file_sink_exits_2_at_startup(
    tmp_path: Path, sink: str, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["run", "--market", "a", "--sink", sink.format(tmp=tmp_path)]
    assert main(argv, env={}) == 2
    _one_line_error(capsys, "sinks", str(tmp_path))


def test_bind_error_names_the_address_and_the_flag() -> None:
    import errno

    from streamer.ops.addr import bind_error

    exc = bind_error("--metrics-addr", "127.0.0.1", 9464,
                     OSError(errno.EADDRINUSE, "Address already in use"), field="metrics_addr")
    assert str(exc) == ("--metrics-addr 127.0.0.1:9464: cannot listen: address already in use "
                        "(another process listens there); choose another with --metrics-addr "
                        "(config: metrics_addr)")
    assert "[::1]:80" in str(bind_error("--ws-port", "::1", 80, OSError(errno.EACCES, "x")))


def _busy_port() -> tuple[object, int]:
    import socket

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    return sock, sock.getsockname()[1]


@pytest.mark.integration
@pytest.mark.parametrize("command", ["run", "simulate"])
def test_port_in_use_exits_2_with_one_line_naming_address_and_flag(command: str) -> None:
    sock, port = _busy_port()
    try:
        if command == "run":
            args = ["run", "--market", "a", "--api-url", "http://127.0.0.1:9",
                    "--ws-url", "ws://127.0.0.1:9", "--metrics-addr", f"127.0.0.1:{port}",
                    "--log-format", "json"]
            flag = "--metrics-addr"
        else:
            args = ["simulate", "--rest-port", str(port)]
            flag = "--rest-port"
        proc = _spawn(*args)
        _, err_bytes = proc.communicate(timeout=30)
    finally:
        sock.close()  # type: ignore[attr-defined]
    err = err_bytes.decode()
    assert proc.returncode == 2, err
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("limitless-streamer: error:"), err
    assert f"127.0.0.1:{port}" in last and flag in last and "in use" in last
