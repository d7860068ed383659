"""The recorder, its taps, its reader, and the replay's pure helpers (no sockets)."""

from __future__ import annotations

import gzip
import hashlib
from pathlib import Path
from typing import Any

import anyio
import httpx
import msgspec
import pytest

from streamer.cli import _overrides, build_parser, main
from streamer.config import RecordSettings, load_settings
from streamer.errors import ConfigError, ConnectError, ConnectionLost
from streamer.feed import clock
from streamer.recording import recorder as recording
from streamer.recording.recorder import (
    CLOSE,
    CONNECT_ERROR,
    GAP,
    OPEN,
    REQUEST,
    REST,
    SENT,
    WS,
    Recorder,
    RecordingTransport,
    load,
    open_recorder,
    tap_connect,
)
from streamer.recording.recorder import zstd as _zstd
from streamer.recording.replay import (
    _unanswered_requests,
    _without_retry_hint,
    parse_time,
    select,
)
from streamer.transport.memory import MemoryTransport
from tests.replay.regenerate import RECORDING

pytestmark = pytest.mark.anyio


def _settings(tmp_path: Path, **kw: Any) -> RecordSettings:
    return RecordSettings(dir=str(tmp_path / "rec"), **kw)


def _bytes(tmp_path: Path) -> bytes:
    return b"".join(_zstd.decompress(p.read_bytes())
                    for p in sorted((tmp_path / "rec").iterdir()))


async def test_recorder_writes_entries_in_order_with_a_header(tmp_path: Path) -> None:
    async with open_recorder(_settings(tmp_path), header={"settings": {"markets": ["a"]}},
                             run="r1") as rec:
        rec.add((REST, 5, "GET", "/markets/active?page=1", 200, {}, '{"data":[]}'))
        rec.add((OPEN, 6, 1, "ws://x"))
        rec.ws(1, '42/markets,["orderbookUpdate",{}]')
        rec.add((CLOSE, 8, 1, "ConnectionLost: gone"))
    header, entries = load(tmp_path / "rec")
    assert header["run"] == "r1" and header["segment"] == 0
    assert header["settings"] == {"markets": ["a"]}
    assert [e[0] for e in entries] == [REST, OPEN, WS, CLOSE]
    assert entries[2][2:] == [1, '42/markets,["orderbookUpdate",{}]']
    assert rec.stats.entries == 4 and rec.stats.dropped == 0


async def test_recorder_rotates_by_size_keeps_n_and_repeats_the_bootstrap(
        tmp_path: Path) -> None:
    settings = _settings(tmp_path, max_bytes=1024, keep=2)
    async with open_recorder(settings, run="r2") as rec:
        rec.add((REST, 1, "GET", "/markets/active?page=1", 200, {}, "first"))
        rec.add((REST, 1, "GET", "/markets/x/orderbook", 200, {}, "a book"))
        rec.add((OPEN, 2, 1, "ws://x"))
        rec.add((REST, 3, "GET", "/markets/active?page=1", 200, {}, "bootstrap"))
        for i in range(6):
            if i == 5:  # a new session, in a kept segment
                rec.add((CLOSE, 4, 1, "ConnectionLost"))
                rec.add((OPEN, 5, 2, "ws://x"))
            for j in range(50):
                rec.ws(1, f"frame {i} {j} " + hashlib.sha256(b"%d %d" % (i, j)).hexdigest())
            await rec.flush()
    files = sorted((tmp_path / "rec").iterdir())
    assert len(files) == 2 and rec.stats.segments > 2
    assert all(f.name.startswith("r2.") and f.name.endswith(recording.SUFFIX) for f in files)
    _, entries = load(tmp_path / "rec")
    assert entries[0][0] == REST and entries[0][6] == "bootstrap"  # the latest market list
    assert entries[1][0] == OPEN and entries[1][2] == 2  # then the first whole session
    assert [e[3][:8] for e in entries[2:]] == ["frame 5 "] * 50


async def test_recorder_full_buffer_drops_counts_and_marks_the_gap(tmp_path: Path) -> None:
    async with open_recorder(_settings(tmp_path, queue_max=3, flush_interval_s=60),
                             run="r3") as rec:
        for i in range(5):
            rec.ws(1, f"f{i}")
        assert rec.stats.dropped == 2
        await rec.flush()
        rec.ws(1, "after")
    _, entries = load(tmp_path / "rec")
    kinds = [e[0] for e in entries]
    assert kinds == [WS, WS, WS, GAP, WS]
    assert entries[3][2] == 2


async def test_recorder_fast_path_counts_compressed_entries_against_the_bound(
        tmp_path: Path) -> None:
    kept = recording._CHUNK + 44  # one chunk compressed, then 44 more buffered
    settings = _settings(tmp_path, queue_max=kept, flush_interval_s=60)
    frames = [f"f{i}" for i in range(kept + 50)]
    async with open_recorder(settings, run="r5") as rec:
        ws = recording.RecordingWebSocket(MemoryTransport(frames, yield_every=10**9), rec, 1)
        for _ in frames:  # no checkpoint in between: the writer never runs
            await ws.receive()
        assert rec.pending == kept and rec.stats.dropped == 50
    _, entries = load(tmp_path / "rec")
    assert [e[3] for e in entries[:-1]] == frames[:kept]
    assert entries[-1][0] == GAP and entries[-1][2] == 50  # marked even at shutdown
    assert rec.stats.entries == kept + 1


async def test_recorder_pending_counts_entries_until_they_are_written(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import threading

    from prometheus_client import CollectorRegistry

    registry = CollectorRegistry()
    gauge = "limitless_streamer_record_queue_entries"
    writing, release = threading.Event(), threading.Event()
    async with open_recorder(_settings(tmp_path, flush_interval_s=60), run="r4") as rec:
        registry.register(recording.RecorderCollector(rec))
        write = rec._write_batch

        def blocked_write(data: bytes, entries: int) -> None:
            writing.set()
            release.wait(10)
            write(data, entries)

        monkeypatch.setattr(rec, "_write_batch", blocked_write)
        n = recording._CHUNK + 6  # one chunk compressed, six entries buffered
        for i in range(n):
            rec.ws(1, f"f{i}")
        assert rec.pending == n and registry.get_sample_value(gauge) == n
        async with anyio.create_task_group() as tg:
            tg.start_soon(rec.flush)
            await anyio.to_thread.run_sync(writing.wait, 10)
            rec.ws(1, "while writing")
            assert rec.pending == n + 1 and registry.get_sample_value(gauge) == n + 1
            release.set()
        assert rec.pending == 1 and rec.stats.entries == n
        await rec.flush()
        assert rec.pending == 0 and registry.get_sample_value(gauge) == 0
    assert [e[3] for e in load(tmp_path / "rec")[1]][-2:] == [f"f{n - 1}", "while writing"]


async def test_recorder_never_writes_a_credential(tmp_path: Path) -> None:
    secret = "s3cr3t-api-key-value"
    async with open_recorder(_settings(tmp_path), secret_values=[secret]) as rec:
        rec.add((SENT, 1, 1, f'42/markets,["x",{{"k":"{secret}"}}]'))
        rec.add((REST, 2, "GET", "/p", 200, {}, f"echo {secret}"))
    assert secret.encode() not in _bytes(tmp_path)
    assert b"<redacted>" in _bytes(tmp_path)


async def test_recording_transport_keeps_the_response_never_the_request(
        tmp_path: Path) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        assert request.headers["X-API-Key"] == "key-that-must-not-leak"
        return httpx.Response(
            200, headers={"content-type": "application/json", "content-encoding": "gzip",
                          "set-cookie": "session=abc"},
            content=gzip.compress(b'{"ok":1}'))

    async with open_recorder(_settings(tmp_path)) as rec:
        transport = RecordingTransport(httpx.MockTransport(handler), rec)
        async with httpx.AsyncClient(transport=transport) as client:
            response = await client.get("http://h/markets/x?a=1",
                                        headers={"X-API-Key": "key-that-must-not-leak"})
            pinned = clock.now_ms()
        assert response.json() == {"ok": 1}
    _, entries = load(tmp_path / "rec")
    sent, entry = entries  # the request line when it went out (no headers), then the answer
    assert sent[0] == REQUEST and sent[2:] == ["GET", "/markets/x?a=1", None]
    assert sent[1] <= pinned
    assert entry[:5] == [REST, pinned, "GET", "/markets/x?a=1", 200]
    assert entry[5] == {"content-type": "application/json"}
    assert entry[6] == '{"ok":1}'
    assert b"key-that-must-not-leak" not in _bytes(tmp_path)
    assert b"session=abc" not in _bytes(tmp_path)


async def test_tap_connect_records_sessions_frames_and_failures(tmp_path: Path) -> None:
    attempts = []

    def connect(url: str, headers: Any) -> Any:
        from contextlib import asynccontextmanager

        @asynccontextmanager
        async def cm() -> Any:
            attempts.append(headers)
            if len(attempts) == 1:
                raise ConnectError("connect failed: refused")
            yield MemoryTransport(["0{}", "40/markets,"])

        return cm()

    async with open_recorder(_settings(tmp_path)) as rec:
        tapped = tap_connect(connect, rec)
        with pytest.raises(ConnectError):
            async with tapped("ws://x", {"X-API-Key": "k"}):
                pass
        with pytest.raises(ConnectionLost):
            async with tapped("ws://x", {"X-API-Key": "k"}) as ws:
                await ws.send("3")
                await ws.send('42/markets,["subscribe_market_prices",{}]')
                while True:
                    await ws.receive()
    _, entries = load(tmp_path / "rec")
    assert [e[0] for e in entries] == [CONNECT_ERROR, OPEN, SENT, WS, WS, CLOSE]
    assert entries[0][2] == 1 and entries[1][2] == 2
    assert entries[-1][3].startswith("ConnectionLost")


async def test_a_torn_last_write_is_read_up_to_the_tear(tmp_path: Path) -> None:
    async with open_recorder(_settings(tmp_path)) as rec:
        rec.ws(1, "one")
        await rec.flush()
        rec.ws(1, "two")
    (path,) = (tmp_path / "rec").iterdir()
    path.write_bytes(path.read_bytes()[:-5])
    _, entries = load(path)
    assert [e[3] for e in entries] == ["one"]


def test_committed_recording_is_small_and_has_every_fault() -> None:
    size = sum(p.stat().st_size for p in RECORDING.iterdir())
    assert size < 1_000_000
    _, entries = load(RECORDING)
    texts = [e[3] for e in entries if e[0] == WS]
    assert sum(e[0] == CLOSE for e in entries) >= 2  # drops
    assert any('"marketStats"' in t for t in texts)  # an unknown event
    assert {e[4] for e in entries if e[0] == REST} >= {200, 429, 503}  # REST faults
    rejected = 0
    from streamer.protocol.session import FrameRejected, SocketIOProtocol

    protocol = SocketIOProtocol(namespace="/markets")
    for text in texts:
        protocol.receive_text(text)
        rejected += sum(isinstance(e, FrameRejected) for e in protocol.events_received())
        protocol.data_to_send()
    assert rejected > 0  # malformed frames


# -- replay helpers ------------------------------------------------------------------------


def test_select_keeps_the_bootstrap_and_resumes_at_a_session() -> None:
    entries = [[REST, 1, "GET", "/a", 200, {}, ""], [OPEN, 2, 1, "u"], [WS, 3, 1, "f"],
               [CLOSE, 4, 1, "x"], [OPEN, 5, 2, "u"], [WS, 6, 2, "g"], [WS, 9, 2, "h"]]
    assert select(entries, start_ms=3) == [entries[0], *entries[4:]]
    repoll = [REST, 3, "GET", "/markets/active?page=1", 200, {}, "new list"]
    later = [*entries[:3], repoll, *entries[3:]]
    assert select(later, start_ms=3) == [entries[0], repoll, *entries[4:]]
    assert select(entries, end_ms=6) == entries[:6]
    assert select(entries) == entries


def test_parse_time_forms() -> None:
    assert parse_time("+2.5", 1000) == 3500
    assert parse_time("1790000000000", 0) == 1790000000000
    assert parse_time("2026-01-01T00:00:00Z", 0) == 1767225600000
    with pytest.raises(ValueError):
        parse_time("soon", 0)


def test_replay_zeroes_retry_hints() -> None:
    body = _without_retry_hint(b'{"statusCode":429,"retryAfterSeconds":7}')
    assert msgspec.json.decode(body) == {"statusCode": 429, "retryAfterSeconds": 0}
    assert _without_retry_hint(b"not json") == b"not json"


def test_record_settings_are_validated() -> None:
    with pytest.raises(ConfigError, match=r"record\.keep"):
        load_settings(None, {"markets": ["a"], "record": {"dir": "/tmp/x", "keep": 0}})


# -- tail on a recording, replay CLI errors --------------------------------------------------


def test_tail_shows_raw_and_decoded_frames(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["tail", str(RECORDING), "--limit", "40"]) == 0
    raw = capsys.readouterr().out
    assert " rest GET /markets/active" in raw and " recv 42/markets," in raw
    assert main(["tail", str(RECORDING), "--decode"]) == 0
    decoded = capsys.readouterr().out
    assert "event orderbookUpdate {" in decoded and "REJECTED" in decoded


def test_replay_cli_rejects_a_missing_recording(tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["replay", str(tmp_path / "nope"), "--max-speed"]) == 2
    assert "replay:" in capsys.readouterr().err
    assert main(["replay", str(RECORDING), "--speed", "0"]) == 2


async def test_recorder_flushes_on_cancel(tmp_path: Path) -> None:
    rec = Recorder(_settings(tmp_path, flush_interval_s=60))
    async with anyio.create_task_group() as tg:
        await tg.start(rec.run)
        rec.ws(1, "last words")
        tg.cancel_scope.cancel()
    assert [e[3] for e in load(tmp_path / "rec")[1]] == ["last words"]


def test_record_flag_sets_the_recording_directory() -> None:
    ns = build_parser().parse_args(["run", "--market", "a", "--record", "/var/rec"])
    assert load_settings(None, _overrides(ns)).record.dir == "/var/rec"


def test_a_request_without_an_answer_before_its_next_request_is_unanswered() -> None:
    target = "/markets/a/orderbook"
    cut = ["q", 1, "GET", target, "bootstrap"]  # its session ended before the answer
    asked = ["q", 2, "GET", target, "bootstrap"]
    answered = ["r", 3, "GET", target, 200, {}, "{}"]
    failed_q = ["q", 4, "GET", "/markets/b/orderbook", "crossed"]
    failure = ["f", 5, "GET", "/markets/b/orderbook", "ConnectError"]
    last = ["q", 6, "GET", "/markets/active?page=1", None]  # the recording ends first
    entries = [cut, ["w", 1, 1, "x"], asked, answered, failed_q, failure, last]
    assert _unanswered_requests(entries) == {id(cut), id(last)}
