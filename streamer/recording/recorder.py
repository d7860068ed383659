"""``run --record DIR``: keep everything the venue sent, for replay and bug reports.

What is kept, in the order the daemon received it (one global order across the reader,
the seeders and discovery, which is the order a replay hands things back):

- every WebSocket text frame, with its receive time and session number;
- every REST response: method, request target (path and query), status, a few
  response headers (``content-type``, ``retry-after``), the body, receive time;
  a REST transport failure (timeout, connection refused) by exception name;
- session boundaries: open (URL), close (reason), failed connects, and the event
  frames the daemon sent (``subscribe_market_prices`` ...).

Never kept: request headers (the API key and HMAC signatures live there), the
Socket.IO CONNECT packet, sink URLs (broker passwords). Any credential value that
still shows up in a recorded text is replaced by ``<redacted>`` before it is written.

Storage: ``DIR/<run>.<segment>.rec.zst``, where ``<run>`` names the daemon run (UTC
start time plus a random suffix). Each segment starts with a JSON header line (format
version, run, segment number, the run's non-secret settings) followed by the latest
market-list answers (the *preamble*: ``GET /markets/active`` pages and ``GET
/markets/{slug}``), so a segment replays after older ones were deleted: from the
preamble, then from the first session that opens in it. Then one line per entry. A
received frame is written as is, after its time and session, tab-separated
(``w<TAB>t_ms<TAB>session<TAB>text``), so ``zstdcat`` shows the venue's text and nothing
has to be escaped; a frame holding a newline, and every other entry, is a JSON array::

    ["w", t_ms, session, text]                      WebSocket frame received
    ["x", t_ms, session, text]                      event frame sent
    ["o", t_ms, session, url]                       session opened
    ["c", t_ms, session, reason]                    session closed
    ["e", t_ms, session, reason]                    connect failed
    ["q", t_ms, method, target, tag]                REST request went out (tag: why)
    ["r", t_ms, method, target, status, headers, body]   REST response
    ["f", t_ms, method, target, error_name]         REST transport failure
    ["g", t_ms, dropped]                            entries lost to a full buffer

Segments rotate by compressed size and by age; only the newest ``keep`` segments in
``DIR`` are kept. Each write is one Zstandard frame (level 1: about 2 us per 2 KB
frame, 14x smaller), so ``zstdcat`` reads a segment and a crash loses at most the
last batch (``flush_interval_s``, or 4096 entries).

Hot path: the reader appends one tuple to a list; every 64 entries, the event loop
encodes them and feeds them to the open Zstandard frame (about 0.2 ms for 64 frames
of 2 KB), with no GIL hand-off to a thread and back per chunk. A worker thread only
writes finished frames to the file. End to end this costs about 4 us per 2 KB frame
(``python -m streamer.bench --compare-set record.dir=DIR``; README, Performance).
Bounded: beyond ``queue_max`` entries not yet written (buffered, compressed, or being
written), new ones are dropped and counted, and a ``g`` entry marks the gap.
"""

from __future__ import annotations

import base64
import logging
import os
import secrets
import sys
import time
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, TextIO

import anyio
import httpx
import msgspec
from anyio.abc import TaskStatus
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

if sys.version_info >= (3, 14):
    from compression import zstd
else:
    from backports import zstd

from streamer import __version__
from streamer.config import RecordSettings
from streamer.feed import clock
from streamer.feed.clock import wall_ms
from streamer.feed.supervisor import Connect
from streamer.transport.websocket import Transport

logger = logging.getLogger(__name__)

FORMAT_VERSION: Final = 1
SUFFIX: Final = ".rec.zst"

WS: Final = "w"
SENT: Final = "x"
OPEN: Final = "o"
CLOSE: Final = "c"
CONNECT_ERROR: Final = "e"
REST: Final = "r"
REQUEST: Final = "q"
"""A REST request went out (method and path only, never headers or body)."""
REST_ERROR: Final = "f"
GAP: Final = "g"
SHUTDOWN: Final = "shutdown"
"""The close reason of a session the daemon ended by shutting down."""

KEPT_HEADERS: Final = ("content-type", "retry-after")
"""Response headers worth keeping (replay serves them back); nothing else is written."""
_DROPPED_HEADERS: Final = frozenset({"content-encoding", "content-length", "transfer-encoding"})
_REDACTED: Final = b"<redacted>"
_MIN_SECRET_CHARS: Final = 6
_COMPRESS_LEVEL: Final = 1
_CHUNK: Final = 64
"""Entries compressed at once on the event loop: about 0.2 ms for 64 frames of 2 KB, the
longest the recording holds up the reader. 256 measured 2-6 % less CPU end to end but
held the loop 0.7 ms, which showed in the receive-to-sink p99; latency wins."""
_PREAMBLE_MAX: Final = 4096

Entry = tuple[Any, ...]


def new_run_name(now_s: float | None = None) -> str:
    """``20261128T235001Z-3fa2``: UTC start time, then a random suffix."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now_s))
    return f"{stamp}-{secrets.token_hex(2)}"


@dataclass
class RecorderStats:
    """Counters of one recorder (exported as metrics)."""

    entries: int = 0
    dropped: int = 0
    bytes_written: int = 0
    segments: int = 0
    write_errors: int = 0


class Recorder:
    """Buffers entries on the event loop, compresses them there, writes from a thread.

    Every ``_CHUNK`` entries, the event loop encodes and compresses them into the open
    Zstandard frame (while their text is still in the CPU's cache, and without handing
    the GIL to a thread and back per chunk); a batch (a whole frame) goes to a worker
    thread for the file write when ``_wake_at`` entries are waiting or
    ``flush_interval_s`` passed.

    Args:
        settings: the ``[record]`` settings (``dir`` must be set).
        run: the run name (default: :func:`new_run_name`).
        header: non-secret facts about the run written in every segment header
            (the replay reads its settings from there).
        secret_values: credential strings that must never reach the disk.
    """

    def __init__(
        self,
        settings: RecordSettings,
        *,
        run: str | None = None,
        header: Mapping[str, Any] | None = None,
        secret_values: Sequence[str] = (),
    ) -> None:
        if settings.dir is None:
            raise ValueError("record.dir is not set")
        self.settings = settings
        self.dir = Path(settings.dir)
        self.name = run or new_run_name()
        self.stats = RecorderStats()
        self._header = dict(header or {})
        self._secrets = tuple(v.encode() for v in secret_values if len(v) >= _MIN_SECRET_CHARS)
        self._buf: list[Entry] = []
        """Entries not encoded yet (fewer than ``_CHUNK``)."""
        self._parts: list[bytes] = []
        """The open Zstandard frame so far (compressed), holding ``_packed`` entries."""
        self._packed = 0
        self._in_flight = 0
        self._max = settings.queue_max
        self._fast_len = min(_CHUNK - 1, self._max)
        """:class:`RecordingWebSocket` appends without checks while ``len(_buf)`` is below."""
        self._wake_at = max(1, min(4096, settings.queue_max // 4))
        self._wake = anyio.Event()
        self._writing = anyio.Lock()
        self._gap = 0
        self._sessions = 0
        self._preamble: dict[str, Entry] = {}
        self._encoder = msgspec.json.Encoder()
        self._compressor = zstd.ZstdCompressor(level=_COMPRESS_LEVEL)
        """The event loop's (batches); the writer thread has its own (segment headers)."""
        self._file: Any = None
        self._segment = -1
        self._segment_bytes = 0
        self._segment_started = 0.0

    # -- the event-loop side ---------------------------------------------------------------

    @property
    def pending(self) -> int:
        """Entries received but not written yet (buffered, compressed, or being written)."""
        return len(self._buf) + self._packed + self._in_flight

    def ws(self, session: int, text: str) -> None:
        """A WebSocket frame was received."""
        self.add((WS, wall_ms(), session, text))

    def add(self, entry: Entry) -> None:
        """Any entry (sessions, REST, sent frames, and frames past the fast path)."""
        if entry[0] == REST and is_discovery(entry) and (
                entry[3] in self._preamble or len(self._preamble) < _PREAMBLE_MAX):
            self._preamble[entry[3]] = entry
        if self._gap or self.pending >= self._max:
            self._overflow(entry)
            return
        self._buf.append(entry)
        if len(self._buf) >= _CHUNK:
            self._pack()

    def new_session(self) -> int:
        """Number the next WebSocket session (1, 2, ...)."""
        self._sessions += 1
        return self._sessions

    def _overflow(self, entry: Entry) -> None:
        if self.pending >= self._max:
            if not self._gap:
                logger.warning("recorder: write buffer full (%d entries); dropping entries",
                               self._max)
            self._gap += 1
            self.stats.dropped += 1
            self._fast_len = 0
            self._wake.set()
            return
        self._buf.append((GAP, entry[1], self._gap))
        self._gap = 0
        self._buf.append(entry)
        self._pack()

    def _pack(self) -> None:
        """Encode and compress the buffered entries into the open frame."""
        if self._buf:
            chunk, self._buf = self._buf, []
            self._parts.append(self._compressor.compress(self._encode(chunk, self._encoder)))
            self._packed += len(chunk)
            if self._packed >= self._wake_at:
                self._wake.set()
        room = self._max - self._packed - self._in_flight
        self._fast_len = 0 if self._gap else max(0, min(_CHUNK - 1, room))

    def _encode(self, entries: Sequence[Entry], encoder: msgspec.json.Encoder) -> bytes:
        """Entry lines, credentials redacted."""
        blob = encode_entries(entries, encoder)
        for value in self._secrets:
            if value in blob:
                blob = blob.replace(value, _REDACTED)
        return blob

    # -- the writer ------------------------------------------------------------------------

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Write batches until cancelled; the last batch is written on the way out."""
        await anyio.to_thread.run_sync(self._open_dir)
        task_status.started()
        try:
            while True:
                with anyio.move_on_after(self.settings.flush_interval_s):
                    await self._wake.wait()
                self._wake = anyio.Event()
                await self.flush()
        finally:
            with anyio.CancelScope(shield=True):  # the last batch survives cancellation
                await self.flush()
                await anyio.to_thread.run_sync(self._close_file)

    async def flush(self) -> None:
        """Write what is buffered now (from a worker thread; one batch at a time, in order)."""
        async with self._writing:
            if self._gap:  # the marker may go one past queue_max: it is written now
                self._buf.append((GAP, wall_ms(), self._gap))
                self._gap = 0
            self._pack()
            if not self._packed:
                return
            self._parts.append(self._compressor.flush(zstd.ZstdCompressor.FLUSH_FRAME))
            data = b"".join(self._parts)
            self._in_flight, self._parts, self._packed = self._packed, [], 0
            try:
                with anyio.CancelScope(shield=True):  # a batch taken is a batch written
                    await anyio.to_thread.run_sync(self._write_batch, data, self._in_flight)
            finally:
                self._in_flight = 0
                self._pack()  # room again for the fast path

    def _open_dir(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)

    def _write_batch(self, data: bytes, entries: int) -> None:
        """Write one compressed batch (rotating first if due); runs in a worker thread."""
        try:
            now = time.time()
            if (self._file is None or self._segment_bytes >= self.settings.max_bytes
                    or now - self._segment_started >= self.settings.max_age_s):
                self._rotate(now)
            self._file.write(data)
            self._file.flush()
        except OSError as exc:
            self.stats.write_errors += 1
            self.stats.dropped += entries
            logger.error("recorder: writing %s failed: %s; %d entries lost", self.dir, exc,
                         entries)
            self._close_file()
            return
        self._segment_bytes += len(data)
        self.stats.bytes_written += len(data)
        self.stats.entries += entries

    def _rotate(self, now: float) -> None:
        self._close_file()
        self._segment += 1
        path = self.dir / f"{self.name}.{self._segment:05d}{SUFFIX}"
        self._file = open(path, "ab")  # closed by _close_file
        self._segment_started = now
        preamble = list(self._preamble.values()) if self._segment else []  # one snapshot
        header = {"recording": FORMAT_VERSION, "run": self.name, "segment": self._segment,
                  "started_ms": int(now * 1000), "version": __version__,
                  "preamble": len(preamble), **self._header}
        # Its own compressor and encoder: the event loop's are busy with the next batch.
        compressor = zstd.ZstdCompressor(level=_COMPRESS_LEVEL)
        data = compressor.compress(msgspec.json.encode(header) + b"\n")
        data += compressor.compress(self._encode(preamble, msgspec.json.Encoder()))
        data += compressor.flush(zstd.ZstdCompressor.FLUSH_FRAME)
        self._file.write(data)
        self._segment_bytes = len(data)
        self.stats.segments += 1
        logger.info("recorder: writing %s", path)
        self._prune()

    def _prune(self) -> None:
        segments = sorted(p for p in self.dir.iterdir() if p.name.endswith(SUFFIX))
        for old in segments[:-self.settings.keep]:
            try:
                old.unlink()
            except OSError as exc:
                logger.warning("recorder: could not delete %s: %s", old, exc)

    def _close_file(self) -> None:
        if self._file is not None:
            try:
                self._file.close()
            except OSError as exc:
                logger.warning("recorder: closing a segment failed: %s", exc)
            self._file = None


# -- taps: the WebSocket connector and the HTTP transport ---------------------------------


class RecordingWebSocket:
    """A :class:`Transport` that records what it receives (and the event frames sent)."""

    def __init__(self, inner: Transport, recorder: Recorder, session: int) -> None:
        self._inner = inner
        self._recorder = recorder
        self._session = session

    async def receive(self) -> str:
        """Receive a frame and record it (the hot path: a bounds check and an append; every
        ``_CHUNK``-th frame also compresses the chunk)."""
        text = await self._inner.receive()
        rec = self._recorder
        buf = rec._buf
        if len(buf) < rec._fast_len:
            buf.append((WS, time.time_ns() // 1_000_000, self._session, text))
        else:
            rec.add((WS, time.time_ns() // 1_000_000, self._session, text))
        return text

    async def send(self, text: str) -> None:
        """Send a frame; Socket.IO events (``42…``) are recorded, control packets not."""
        if text.startswith("42"):
            self._recorder.add((SENT, wall_ms(), self._session, text))
        await self._inner.send(text)

    async def aclose(self) -> None:
        """Close the inner transport."""
        await self._inner.aclose()


def tap_connect(connect: Connect, recorder: Recorder) -> Connect:
    """Wrap a connector so each session, its frames and its end are recorded."""

    def tapped(url: str, headers: Mapping[str, str]) -> Any:
        return _tapped_session(connect, url, headers, recorder)

    return tapped


@asynccontextmanager
async def _tapped_session(connect: Connect, url: str, headers: Mapping[str, str],
                          recorder: Recorder) -> AsyncIterator[Transport]:
    session = recorder.new_session()
    opened = False
    try:
        async with connect(url, headers) as transport:  # headers carry credentials: not kept
            opened = True
            recorder.add((OPEN, wall_ms(), session, url))
            reason = "closed"
            try:
                yield RecordingWebSocket(transport, recorder, session)
            except BaseException as exc:
                reason = SHUTDOWN if isinstance(exc, anyio.get_cancelled_exc_class()) \
                    else describe(exc)
                raise
            finally:
                recorder.add((CLOSE, wall_ms(), session, reason))
    except Exception as exc:
        if not opened:
            recorder.add((CONNECT_ERROR, wall_ms(), session, describe(exc)))
        raise


def describe(exc: BaseException) -> str:
    """``Type: message`` of the innermost single exception (task groups wrap)."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class RecordingTransport(httpx.AsyncBaseTransport):
    """An httpx transport that records every response it returns (never the request).

    The receive time is also *pinned* (:func:`streamer.feed.clock.pin`) for the calling task,
    so the feed stamps a REST-seeded book with exactly the recorded time.
    """

    def __init__(self, inner: httpx.AsyncBaseTransport, recorder: Recorder) -> None:
        self._inner = inner
        self._recorder = recorder

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Record that it went out, forward, read the whole body, record, answer."""
        target = request.url.raw_path.decode("ascii")
        # When it went out, relative to the frames: a replay sends it at the same point, so
        # what the feed decides at send time (a seed withdrawn, a REST book superseded)
        # comes out the same.
        tag = request.extensions.get("tag")
        self._recorder.add((REQUEST, wall_ms(), request.method, target,
                            tag if isinstance(tag, str) else None))
        try:
            response = await self._inner.handle_async_request(request)
            body = await response.aread()
        except httpx.HTTPError as exc:
            self._recorder.add((REST_ERROR, wall_ms(), request.method, target,
                                type(exc).__name__))
            raise
        t = wall_ms()
        clock.pin(t)
        kept = {k: response.headers[k] for k in KEPT_HEADERS if k in response.headers}
        self._recorder.add((REST, t, request.method, target, response.status_code, kept,
                            encode_body(body)))
        headers = [(k, v) for k, v in response.headers.multi_items()
                   if k.lower() not in _DROPPED_HEADERS]
        return httpx.Response(response.status_code, headers=headers, content=body,
                              extensions=response.extensions)

    async def aclose(self) -> None:
        """Close the inner transport."""
        await self._inner.aclose()


def is_discovery(entry: Sequence[Any]) -> bool:
    """A successful market-list answer (``GET /markets/active``, ``GET /markets/{slug}``)."""
    if entry[0] != REST or entry[2] != "GET" or entry[4] != 200:
        return False
    path = str(entry[3]).split("?", 1)[0]
    return "/markets" in path and not path.endswith("/orderbook")


def encode_body(body: bytes) -> str:
    """A body as text: UTF-8 as is, anything else as ``base64:…``."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return "base64:" + base64.b64encode(body).decode("ascii")
    return "text:" + text if text.startswith(("base64:", "text:")) else text


def decode_body(text: str) -> bytes:
    """Inverse of :func:`encode_body`."""
    if text.startswith("base64:"):
        return base64.b64decode(text[7:])
    if text.startswith("text:"):
        return text[5:].encode("utf-8")
    return text.encode("utf-8")


@asynccontextmanager
async def open_recorder(
    settings: RecordSettings,
    *,
    header: Mapping[str, Any] | None = None,
    secret_values: Sequence[str] = (),
    run: str | None = None,
) -> AsyncIterator[Recorder]:
    """A running :class:`Recorder`; everything buffered is written when the block exits."""
    recorder = Recorder(settings, run=run, header=header, secret_values=secret_values)
    async with anyio.create_task_group() as tg:
        await tg.start(recorder.run)
        try:
            yield recorder
        finally:
            tg.cancel_scope.cancel()


# -- reading ------------------------------------------------------------------------------


@dataclass
class Segment:
    """One segment file: its header, preamble and entries."""

    path: Path
    header: dict[str, Any]
    preamble: list[list[Any]]
    entries: list[list[Any]]
    truncated: bool = False


def segment_paths(path: str | os.PathLike[str], run: str | None = None) -> list[Path]:
    """The segments of one run in order: ``path`` is a segment file or a directory.

    A directory holding several runs gives the newest run unless ``run`` names one.

    Raises:
        FileNotFoundError: no segment found.
    """
    p = Path(path)
    if p.is_file():
        return [p]
    if not p.is_dir():
        raise FileNotFoundError(f"{p}: no such recording")
    runs: dict[str, list[Path]] = {}
    for f in sorted(p.iterdir()):
        if f.name.endswith(SUFFIX):
            runs.setdefault(f.name[: -len(SUFFIX)].rsplit(".", 1)[0], []).append(f)
    if not runs:
        raise FileNotFoundError(f"{p}: a directory without recording segments (*{SUFFIX})")
    if run is not None:
        if run not in runs:
            raise FileNotFoundError(f"{p}: no run {run!r} (runs: {', '.join(sorted(runs))})")
        return runs[run]
    return runs[max(runs)]


def read_segment(path: Path) -> Segment:
    """Parse one segment (a torn last frame, from a crash, ends it early).

    Raises:
        ValueError: not a recording, or a newer format.
    """
    lines, truncated = _read_lines(path)
    if not lines:
        raise ValueError(f"{path}: empty recording segment")
    header = msgspec.json.decode(lines[0])
    if not isinstance(header, dict) or "recording" not in header:
        raise ValueError(f"{path}: not a recording (no header line)")
    if header["recording"] > FORMAT_VERSION:
        raise ValueError(f"{path}: recording format {header['recording']} is newer than "
                         f"this version reads ({FORMAT_VERSION})")
    n = int(header.get("preamble", 0))
    decoded = [decode_entry(line) for line in lines[1:]]
    return Segment(path, header, decoded[:n], decoded[n:], truncated)


def _read_lines(path: Path) -> tuple[list[bytes], bool]:
    data = path.read_bytes()
    out = []
    truncated = False
    while data:  # frame by frame, stopping at a torn or broken one
        d = zstd.ZstdDecompressor()
        try:
            chunk = d.decompress(data)
        except zstd.ZstdError:
            truncated = True
            break
        if not d.eof:  # a frame cut short: its lines may be too
            truncated = True
            break
        out.append(chunk)
        data = d.unused_data
    return [line for line in b"".join(out).split(b"\n") if line], truncated


def encode_entries(batch: Sequence[Entry], encoder: msgspec.json.Encoder) -> bytes:
    """Entries as lines: frames tab-separated and raw, the rest JSON arrays."""
    parts = []
    for entry in batch:
        if entry[0] == WS and "\n" not in entry[3]:
            parts.append(f"w\t{entry[1]}\t{entry[2]}\t{entry[3]}\n")
        else:
            parts.append(encoder.encode(entry).decode("utf-8") + "\n")
    return "".join(parts).encode("utf-8")


def decode_entry(line: bytes) -> list[Any]:
    """One entry line back (see :func:`encode_entries`)."""
    if line.startswith(b"w\t"):
        _, t, session, text = line.split(b"\t", 3)
        return [WS, int(t), int(session), text.decode("utf-8")]
    entry = msgspec.json.decode(line)
    if not isinstance(entry, list) or not entry:
        raise ValueError(f"not a recording entry: {line[:80]!r}")
    return entry


def load(path: str | os.PathLike[str], run: str | None = None) -> tuple[dict[str, Any],
                                                                        list[list[Any]]]:
    """The header of the first segment and every entry of one run, in order.

    When the run's first segment is gone (``keep`` rotated it out), the entries start
    with the first segment's preamble (the latest market list) and resume at the first
    session opened after it.
    """
    segments = [read_segment(p) for p in segment_paths(path, run)]
    first = segments[0]
    entries: list[list[Any]] = []
    for seg in segments:
        entries.extend(seg.entries)
        if seg.truncated:
            logger.warning("%s: ends in a torn write (a crash?); read up to it", seg.path)
    if first.header.get("segment", 0) != 0:
        # The run's start is gone: begin with the market list, then the first whole session.
        start = next((i for i, e in enumerate(entries) if e[0] in (OPEN, CONNECT_ERROR)),
                     len(entries))
        entries = [*first.preamble, *entries[start:]]
    return first.header, entries


def iter_entries(path: str | os.PathLike[str], run: str | None = None) -> Iterator[list[Any]]:
    """Every entry of a recording, in order (see :func:`load`)."""
    yield from load(path, run)[1]


def format_entry(entry: Sequence[Any], out: TextIO, *, decode: bool = False,
                 protocols: dict[int, Any] | None = None) -> None:
    """One human line per entry (``tail`` on a recording)."""
    kind, t = entry[0], entry[1]
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t / 1000)) + f".{t % 1000:03d}Z"
    if kind == WS and decode and protocols is not None:
        for line in _decoded_frame(entry[2], entry[3], protocols):
            out.write(f"{stamp} #{entry[2]} {line}\n")
        return
    if kind in (WS, SENT, OPEN, CLOSE, CONNECT_ERROR):
        label = {WS: "recv", SENT: "sent", OPEN: "open", CLOSE: "close",
                 CONNECT_ERROR: "connect-failed"}[kind]
        out.write(f"{stamp} #{entry[2]} {label} {entry[3]}\n")
    elif kind == REQUEST:
        out.write(f"{stamp} rest {entry[2]} {entry[3]} sent\n")
    elif kind == REST:
        out.write(f"{stamp} rest {entry[2]} {entry[3]} {entry[4]} {entry[6]}\n")
    elif kind == REST_ERROR:
        out.write(f"{stamp} rest {entry[2]} {entry[3]} failed {entry[4]}\n")
    elif kind == GAP:
        out.write(f"{stamp} GAP {entry[2]} entries dropped by the recorder\n")
    else:
        out.write(f"{stamp} ? {msgspec.json.encode(list(entry)).decode()}\n")


def _decoded_frame(session: int, text: str, protocols: dict[int, Any]) -> list[str]:
    from streamer.protocol.session import EventReceived, FrameRejected, SocketIOProtocol

    protocol = protocols.get(session)
    if protocol is None:
        protocol = protocols[session] = SocketIOProtocol(namespace="/markets")
    protocol.receive_text(text)
    protocol.data_to_send()
    lines = []
    for event in protocol.events_received():
        if isinstance(event, EventReceived):
            lines.append(f"event {event.name} {bytes(event.payload).decode('utf-8', 'replace')}")
        elif isinstance(event, FrameRejected):
            lines.append(f"REJECTED ({event.reason}) {text[:200]!r}")
        else:
            lines.append(type(event).__name__ + " " + _fields(event))
    return lines or [f"(engine.io) {text[:200]}"]


def _fields(event: object) -> str:
    slots = getattr(event, "__slots__", None) or getattr(event, "__dataclass_fields__", {})
    return " ".join(f"{name}={getattr(event, name)!r}" for name in slots)


# -- metrics ------------------------------------------------------------------------------


class RecorderCollector(Collector):
    """Prometheus series of a recorder (registered next to the daemon's own)."""

    def __init__(self, recorder: Recorder, prefix: str = "limitless_streamer_") -> None:
        self._r = recorder
        self._prefix = prefix

    def collect(self) -> Iterator[Any]:
        """Yield the recorder's counters and its buffer depth."""
        s, p = self._r.stats, self._prefix
        for name, doc, value in (
            ("record_entries", "Entries written to the recording.", s.entries),
            ("record_dropped", "Entries lost (buffer full or write error).", s.dropped),
            ("record_bytes", "Compressed bytes written to the recording.", s.bytes_written),
            ("record_segments", "Recording segments opened.", s.segments),
            ("record_write_errors", "Recording writes that failed.", s.write_errors),
        ):
            c = CounterMetricFamily(p + name, doc)
            c.add_metric([], float(value))
            yield c
        g = GaugeMetricFamily(p + "record_queue_entries",
                              "Entries not written yet (buffered or being written).")
        g.add_metric([], float(self._r.pending))
        yield g


# -- running the daemon with a recorder ---------------------------------------------------


async def run_daemon(settings: Any, credentials: Any, **kwargs: Any) -> None:
    """:func:`streamer.app.run`, recording to ``settings.record.dir`` when it is set."""
    from streamer import app
    from streamer.feed.supervisor import default_connect
    from streamer.ops.metrics import Metrics
    from streamer.recording.replay import recorded_settings
    from streamer.transport.rest import _secret_values

    if settings.record.dir is None:
        await app.run(settings, credentials, **kwargs)
        return
    inner = kwargs.pop("transport", None) or httpx.AsyncHTTPTransport()
    connect = kwargs.pop("connect", None) or default_connect(settings.feed)
    metrics = kwargs.pop("metrics", None)
    if metrics is None:
        metrics = Metrics(per_market=settings.per_market_metrics)
    async with open_recorder(settings.record, header={"settings": recorded_settings(settings)},
                             secret_values=_secret_values(credentials)) as recorder:
        metrics.registry.register(RecorderCollector(recorder))
        logger.info("recording everything received to %s (run %s)", recorder.dir, recorder.name)
        await app.run(
            settings, credentials, metrics=metrics,
            transport=RecordingTransport(inner, recorder),
            connect=tap_connect(connect, recorder),
            **kwargs,
        )
