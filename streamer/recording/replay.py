"""``limitless-streamer replay DIR``: a recording through the daemon's own code.

The replay runs :func:`streamer.app.run` unchanged (discovery, the feed, the books,
the fan-out and the sinks), with two seams swapped:

- the WebSocket connector hands out sessions whose frames come from the recording;
- the httpx transport answers each REST request with the recorded response.

One *driver* task walks the recording in its recorded order and hands each entry to
the part of the daemon that asked for it, so the interleaving of WebSocket frames
and REST responses is the live one:

- a frame is handed to the reader only when the reader waits for one, and the driver
  moves on only when the reader is back waiting (the frame is fully processed);
- a REST response is handed to the request with the same method and target (the
  earliest one waiting), then the driver lets every task run until all are blocked,
  so the seeder has applied it before anything else happens;
- a recorded session close ends the replayed session; a recorded open answers the
  supervisor's next connect.

Time: :mod:`streamer.feed.clock` reads the recorded receive time of the entry being
handed over, so records carry the live run's times (a REST-seeded ``book``'s ``ts``
included) and markets expire as they did live, whatever the wall clock says. Timers
do not replay: staleness probes, audits, discovery re-polls and the allowance watcher
are switched off, and a recorded response nobody asks for is skipped after
``claim_wait_s`` (counted). Backoffs and server retry hints are shrunk to nothing:
the recording, not the timing, decides what happens next.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import anyio
import anyio.lowlevel
import httpx
import msgspec

from sinks.fanout import SinkSpec
from streamer.config import Settings, load_settings
from streamer.errors import ConnectError, ConnectionLost, StreamerError
from streamer.feed import clock
from streamer.feed.feed import Feed
from streamer.ops.metrics import Metrics
from streamer.recording import recorder as recording
from streamer.recording.recorder import (
    CLOSE,
    CONNECT_ERROR,
    GAP,
    OPEN,
    REQUEST,
    REST,
    REST_ERROR,
    SHUTDOWN,
    WS,
)
from streamer.transport.websocket import Transport

logger = logging.getLogger(__name__)

_FAST: Final = {"initial_s": 0.0005, "factor": 1.0, "cap_s": 0.0005, "jitter": 0.0}
_NEVER_S: Final = 1e9
CLAIM_WAIT_S: Final = 0.5
REPLAY_SEEDERS: Final = 256
"""Seeders in a replay: enough that every pending seed is a request waiting for its
recorded response, whatever order the live run's pace and backoffs gave them."""
CONNECT_WAIT_S: Final = 30.0
_SETTLE_ROUNDS: Final = 10_000


class ReplayError(StreamerError):
    """The daemon stopped following the recording (it never reconnected)."""


@dataclass
class ReplayStats:
    """What a replay handed over and what it had to skip."""

    frames: int = 0
    frames_skipped: int = 0
    """Frames of a session the replayed daemon had already closed."""
    rest: int = 0
    rest_orphans: int = 0
    """Recorded responses nobody asked for (timer-driven probes, audits, re-polls)."""
    requests_unanswered: int = 0
    """Requests the live run sent but never got an answer to (cancelled with their
    session, say) that the replayed daemon did not make: there is nothing to hand over,
    so they are not orphans."""
    sessions: int = 0
    gaps: int = 0
    orphan_targets: list[str] = field(default_factory=list)


def _unanswered_requests(entries: Sequence[Sequence[Any]]) -> set[int]:
    """``id()`` of every ``q`` entry whose request got no response or failure before the
    next request for the same method and target (or the end of the recording)."""
    open_q: dict[tuple[str, str], Sequence[Any]] = {}
    unanswered: set[int] = set()
    for entry in entries:
        kind = entry[0]
        if kind == REQUEST:
            earlier = open_q.get(key := (str(entry[2]), str(entry[3])))
            if earlier is not None:
                unanswered.add(id(earlier))
            open_q[key] = entry
        elif kind in (REST, REST_ERROR):
            open_q.pop((str(entry[2]), str(entry[3])), None)
    unanswered.update(id(entry) for entry in open_q.values())
    return unanswered


class _Session:
    """One replayed WebSocket session (a :class:`Transport`)."""

    def __init__(self, number: int) -> None:
        self.number = number
        self.closed_reason: str | None = None
        self.idle = anyio.Event()
        self._arrived = anyio.Event()
        self._frame: str | None = None

    async def receive(self) -> str:
        """The next frame the driver hands over; ConnectionLost once closed."""
        while self._frame is None:
            if self.closed_reason is not None:
                raise ConnectionLost(f"recorded session ended ({self.closed_reason})")
            self.idle.set()
            await self._arrived.wait()
            self._arrived = anyio.Event()
        text, self._frame = self._frame, None
        return text

    async def send(self, text: str) -> None:
        """Frames the daemon sends go nowhere (the recording already has the answers)."""

    async def aclose(self) -> None:
        """The daemon closed the session."""
        self.close("closed by the daemon")

    def offer(self, text: str) -> None:
        self.idle = anyio.Event()
        self._frame = text
        self._arrived.set()

    def close(self, reason: str) -> None:
        if self.closed_reason is None:
            self.closed_reason = reason
            self._arrived.set()
            self.idle.set()


@dataclass
class _Connector:
    done: anyio.Event = field(default_factory=anyio.Event)
    session: _Session | None = None
    error: str | None = None


@dataclass
class _Request:
    key: tuple[str, str]
    done: anyio.Event = field(default_factory=anyio.Event)
    entry: Sequence[Any] = ()
    on_send: Callable[[str | None], None] | None = None
    sent: bool = False

    def send(self, tag: str | None = None) -> None:
        """The recording says the request went out here (for ``tag``): tell the caller."""
        if not self.sent:
            self.sent = True
            if self.on_send is not None:
                self.on_send(tag)


class ReplayDriver:
    """Walks a recording and answers the daemon's connects, frames and REST requests.

    Args:
        entries: the recording's entries (see :mod:`streamer.recording.recorder`).
        speed: replay this many times faster than recorded; ``None``: as fast as
            the daemon consumes.
        claim_wait_s: how long a recorded response waits for its request.
    """

    def __init__(self, entries: Sequence[Sequence[Any]], *, speed: float | None = None,
                 claim_wait_s: float = CLAIM_WAIT_S,
                 connect_wait_s: float = CONNECT_WAIT_S) -> None:
        self.entries = entries
        self.speed = speed
        self.claim_wait_s = claim_wait_s
        self.connect_wait_s = connect_wait_s
        self.stats = ReplayStats()
        self.clock_ms: int = int(entries[0][1]) if entries else clock.wall_ms()
        self.http = ReplayHttpTransport(self)
        self.gated = any(entry[0] == REQUEST for entry in entries)
        self._unanswered = _unanswered_requests(entries)
        """The recording says when each request went out (``q`` entries): requests wait
        for that point before they go out, not only for their response."""
        self._connectors: list[_Connector] = []
        self._requests: list[_Request] = []
        self._changed = anyio.Event()
        self._session: _Session | None = None
        self.on_orphan: Callable[[str, str], None] | None = None
        """Called with (method, target) of a response nobody asked for yet."""

    def now_ms(self) -> int:
        """The virtual clock: the recorded time of the entry being handed over."""
        return self.clock_ms

    # -- the daemon's side -------------------------------------------------------------------

    def connect(self, url: str, headers: Mapping[str, str]) -> Any:
        """The supervisor's connector: the next recorded session."""
        return self._connect()

    @asynccontextmanager
    async def _connect(self) -> AsyncIterator[Transport]:
        connector = _Connector()
        self._connectors.append(connector)
        self._changed.set()
        try:
            await connector.done.wait()
        finally:
            if connector in self._connectors:
                self._connectors.remove(connector)
        if connector.session is None:
            raise ConnectError(f"recorded connect failure ({connector.error})")
        session = connector.session
        try:
            yield session
        finally:
            session.close("closed by the daemon")

    async def request(self, request: httpx.Request) -> httpx.Response:
        """Answer one REST request with the recorded response at the driver's position."""
        on_send = request.extensions.get("on_send")
        waiter = _Request((request.method, request.url.raw_path.decode("ascii")),
                          on_send=on_send if callable(on_send) else None)
        if not self.gated:
            waiter.send()
        self._requests.append(waiter)
        self._changed.set()
        try:
            await waiter.done.wait()
        finally:
            if waiter in self._requests:
                self._requests.remove(waiter)
        entry = waiter.entry
        clock.pin(int(entry[1]))
        if entry[0] == REST_ERROR:
            raise _transport_error(str(entry[4]), request)
        return _response(entry)

    # -- the driver ----------------------------------------------------------------------------

    async def run(self, done: anyio.Event | None = None) -> None:
        """Hand every entry over in order, then set ``done``.

        Raises:
            ReplayError: a recorded session opened but the daemon never connected.
        """
        t0 = int(self.entries[0][1]) if self.entries else 0
        real0 = time.monotonic()
        for entry in self.entries:
            t = int(entry[1])
            if self.speed is not None:
                delay = (t - t0) / 1000.0 / self.speed - (time.monotonic() - real0)
                if delay > 0:
                    await anyio.sleep(delay)
            self.clock_ms = t  # as recorded, even if the wall clock stepped back
            await self._handle(entry)
        await self._settle()
        if self._session is not None:
            await self._session.idle.wait()
        if self.stats.rest_orphans:
            logger.info("replay: %d recorded REST responses were not asked for (timer-driven "
                        "probes, audits and re-polls do not replay): %s", self.stats.rest_orphans,
                        ", ".join(self.stats.orphan_targets[:5]))
        if done is not None:
            done.set()

    async def _handle(self, entry: Sequence[Any]) -> None:
        kind = entry[0]
        if kind == WS:
            await self._frame(entry)
        elif kind in (REST, REST_ERROR):
            await self._respond(entry)
        elif kind == OPEN:
            connector = await self._connector()
            self._session = connector.session = _Session(int(entry[2]))
            self.stats.sessions += 1
            connector.done.set()
            await self._settle()
        elif kind == CONNECT_ERROR:
            connector = await self._connector()
            connector.error = str(entry[3])
            connector.done.set()
            await self._settle()
        elif kind == CLOSE:
            if entry[3] == SHUTDOWN:
                return  # the live run stopped here; so does the replay
            if self._session is not None and self._session.number == entry[2]:
                await self._session.idle.wait()
                self._session.close(str(entry[3]))
                self._session = None
            await self._settle()
        elif kind == REQUEST:
            await self._sent(entry)
        elif kind == GAP:
            self.stats.gaps += 1
            logger.warning("replay: the recording lost %s entries here; output may differ "
                           "from the live run's", entry[2])

    async def _frame(self, entry: Sequence[Any]) -> None:
        session = self._session
        if session is None or session.number != entry[2]:
            self.stats.frames_skipped += 1
            return
        await session.idle.wait()  # the reader waits: the previous frame is done
        if session.closed_reason is not None:
            self.stats.frames_skipped += 1
            return
        session.offer(str(entry[3]))
        self.stats.frames += 1
        await session.idle.wait()

    async def _sent(self, entry: Sequence[Any]) -> None:
        """A request went out here in the live run: the daemon's request for it goes now."""
        unanswered = id(entry) in self._unanswered
        waiter = await self._claim((str(entry[2]), str(entry[3])), sent=False,
                                   count=not unanswered)
        if waiter is None and unanswered:
            self.stats.requests_unanswered += 1
        if waiter is not None:
            tag = entry[4] if len(entry) > 4 and isinstance(entry[4], str) else None
            waiter.send(tag)
            await self._settle()

    async def _claim(self, key: tuple[str, str], *, sent: bool | None,
                     count: bool = True) -> _Request | None:
        """The daemon's request for ``key`` (asking a timer's request again if needed);
        none is counted as an orphan when ``count``."""
        waiter = self._find(key, sent)
        if waiter is None:
            await self._settle()
            if self._find(key, sent) is None and self.on_orphan is not None:
                self.on_orphan(*key)  # a timer's request: ask for it now
            with anyio.move_on_after(self.claim_wait_s):
                while (waiter := self._find(key, sent)) is None:
                    self._changed = anyio.Event()
                    await self._changed.wait()
        if waiter is None and count:
            self.stats.rest_orphans += 1
            self.stats.orphan_targets.append(f"{key[0]} {key[1]}")
        return waiter

    async def _respond(self, entry: Sequence[Any]) -> None:
        key = (str(entry[2]), str(entry[3]))
        if self.gated:
            # A response whose request went out before the recording began (a rotated
            # segment's preamble) has no ``q`` entry: its request goes out now.
            waiter = self._find(key, True) or self._find(key, False)
            if waiter is None:
                waiter = await self._claim(key, sent=None)
            if waiter is None:
                return
            waiter.send()
            self._requests.remove(waiter)
            waiter.entry = entry
            waiter.done.set()
            self.stats.rest += 1
            await self._settle()
            return
        waiter = self._find(key)
        if waiter is None:
            await self._settle()
            if self._find(key) is None and self.on_orphan is not None:
                self.on_orphan(*key)  # a timer's request: ask for it now
            with anyio.move_on_after(self.claim_wait_s):
                while (waiter := self._find(key)) is None:
                    self._changed = anyio.Event()
                    await self._changed.wait()
        if waiter is None:
            self.stats.rest_orphans += 1
            self.stats.orphan_targets.append(f"{key[0]} {key[1]}")
            return
        self._requests.remove(waiter)
        waiter.entry = entry
        waiter.done.set()
        self.stats.rest += 1
        await self._settle()

    def _find(self, key: tuple[str, str], sent: bool | None = None) -> _Request | None:
        for waiter in self._requests:
            if waiter.key == key and (sent is None or waiter.sent == sent):
                return waiter
        return None

    async def _connector(self) -> _Connector:
        with anyio.move_on_after(self.connect_wait_s):
            while not self._connectors:
                self._changed = anyio.Event()
                await self._changed.wait()
            return self._connectors.pop(0)
        raise ReplayError(f"the daemon did not reconnect within {self.connect_wait_s:.0f}s "
                          "where the recording opens a session")

    async def _settle(self) -> None:
        """Let every other task run until all of them wait on something.

        asyncio-specific (the daemon runs on anyio's asyncio backend): a task is blocked
        when it waits on a pending future, the same test anyio's
        ``wait_all_tasks_blocked`` makes, without its 0.1 s sleeps.
        """
        me = asyncio.current_task()
        for _ in range(_SETTLE_ROUNDS):
            await anyio.lowlevel.cancel_shielded_checkpoint()
            if all(task is me or _blocked(task) for task in asyncio.all_tasks()):
                return


def _blocked(task: asyncio.Task[Any]) -> bool:
    waiter = getattr(task, "_fut_waiter", None)
    return waiter is not None and not waiter.done()


class ReplayHttpTransport(httpx.AsyncBaseTransport):
    """An httpx transport that answers from the recording (through the driver)."""

    calls_on_send: Final = True
    """The REST client leaves a request's ``on_send`` to this transport: it is called
    where the recording says the request went out."""

    def __init__(self, driver: ReplayDriver) -> None:
        self._driver = driver

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """The recorded response to this request."""
        return await self._driver.request(request)


def _response(entry: Sequence[Any]) -> httpx.Response:
    status = int(entry[4])
    headers = {k: v for k, v in dict(entry[5]).items() if k.lower() != "retry-after"}
    body = recording.decode_body(str(entry[6]))
    if status == 429:
        body = _without_retry_hint(body)
    return httpx.Response(status, headers=headers, content=body)


def _without_retry_hint(body: bytes) -> bytes:
    """A 429 body with ``retryAfterSeconds`` zeroed: the replay does not wait."""
    try:
        data = msgspec.json.decode(body)
    except msgspec.DecodeError:
        return body
    if isinstance(data, dict) and "retryAfterSeconds" in data:
        data["retryAfterSeconds"] = 0
        return msgspec.json.encode(data)
    return body


def _transport_error(name: str, request: httpx.Request) -> httpx.TransportError:
    cls = getattr(httpx, name, None)
    if not (isinstance(cls, type) and issubclass(cls, httpx.TransportError)):
        cls = httpx.TransportError
    return cls(f"recorded {name}", request=request)


def _ask_again(feeds: list[Feed], method: str, target: str) -> None:
    """Replay a timer: a recorded audit/probe book fetch, or a discovery re-poll.

    The live run asked on a timer the replay does not run (``health.*``,
    ``discovery_interval_s``); ask now, with the same effect: an audit compares the held
    book with the recorded one and re-seeds only on a difference, as a probe does.
    """
    if not feeds or method != "GET":
        return
    feed = feeds[0]
    path = target.split("?", 1)[0]
    parts = path.split("/")
    if path.endswith("/markets/active") and "page=1" in target.split("?", 1)[-1].split("&"):
        if feed.on_market_event is not None:
            feed.on_market_event("created", "")  # discovery polls now (--all-markets)
    elif len(parts) >= 3 and parts[-1] == "orderbook" and parts[-3] == "markets":
        from urllib.parse import unquote

        slug = unquote(parts[-2])
        request_seed = getattr(feed, "_request_seed", None)
        if request_seed is not None and feed.universe.get(slug) is not None:
            request_seed(slug, "audit")


# -- selection and settings ------------------------------------------------------------------


def select(entries: Sequence[Sequence[Any]], *, start_ms: int | None = None,
           end_ms: int | None = None) -> list[Sequence[Any]]:
    """The entries a ``--from``/``--to`` window replays.

    Everything before the first session (the bootstrap REST responses) is always kept;
    with ``start_ms``, the latest market-list answers before it follow, and the replay
    resumes at the first session opened at or after it (a session starts with a full
    re-seed, so the books are right from there on; ``seq`` restarts at 1). With
    ``end_ms``, entries after it are left out.
    """
    first = next((i for i, e in enumerate(entries) if e[0] in (OPEN, CONNECT_ERROR)),
                 len(entries))
    out = list(entries[:first])
    rest = entries[first:]
    if start_ms is not None:
        begin = next((i for i, e in enumerate(rest) if e[0] == OPEN and e[1] >= start_ms),
                     len(rest))
        # The market list may have changed meanwhile: its latest answers come first
        # (asked for again as a re-poll, see _ask_again).
        latest = {e[3]: e for e in rest[:begin] if recording.is_discovery(e)}
        out.extend(latest.values())
        rest = rest[begin:]
    out.extend(rest)
    if end_ms is not None:
        out = [e for e in out if e[1] <= end_ms]
    return out


def replay_run_id(header: Mapping[str, Any]) -> str:
    """The run id of a replay: derived from the recorded run's name (a UUIDv5), so two
    replays of one recording give identical bytes, and never the live run's id."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"limitless-streamer:replay:{header.get('run')}"))


def replay_settings(header: Mapping[str, Any], overrides: Mapping[str, Any]) -> Settings:
    """The recorded run's settings, with timers off, backoffs shrunk, and ``overrides``.

    Raises:
        ConfigError: the recording's settings or the overrides do not validate.
    """
    recorded = _known(dict(header.get("settings") or {}), Settings)
    for key in ("sinks", "metrics_addr", "log_level", "log_format", "record", "allowances"):
        recorded.pop(key, None)
    data: dict[str, Any] = {
        **recorded,
        "discovery_interval_s": _NEVER_S,
        "feed": {**recorded.get("feed", {}), "backoff": _FAST, "healthy_jitter_s": 0.0,
                 "min_attempt_interval_s": 0.0, "max_attempts_per_minute": 1_000_000},
        "rest": {**recorded.get("rest", {}), "backoff": _FAST, "seed_backoff": _FAST,
                 "crossed_backoff": _FAST, "min_interval_s": 0.0,
                 # Every market that wants a book asks at once: the recording, not the
                 # seed queue's timing, decides which response comes next.
                 "max_in_flight": 100_000, "seed_concurrency": REPLAY_SEEDERS},
        "health": {**recorded.get("health", {}), "stale_after_s": _NEVER_S,
                   "audit_interval_s": 0.0, "probe_check_s": _NEVER_S},
        "metrics_addr": "127.0.0.1:0",
    }
    data.update((k, v) for k, v in overrides.items() if v is not None)
    return load_settings(None, data)


def _known(data: dict[str, Any], struct: type) -> dict[str, Any]:
    """``data`` without the fields ``struct`` does not have (a recording made by an older
    version may carry settings that were renamed or removed since)."""
    fields = {f.encode_name: f.type for f in msgspec.structs.fields(struct)}
    out: dict[str, Any] = {}
    for key, value in data.items():
        if key not in fields:
            continue
        kind = fields[key]
        if isinstance(value, dict) and isinstance(kind, type) and issubclass(kind, msgspec.Struct):
            value = _known(value, kind)
        out[key] = value
    return out


def recorded_settings(settings: Settings) -> dict[str, Any]:
    """The settings a recording keeps: everything but sink URLs (broker passwords)."""
    data: dict[str, Any] = msgspec.to_builtins(settings)
    for key in ("sinks", "record"):
        data.pop(key, None)
    return data


def parse_time(text: str, start_ms: int) -> int:
    """``--from``/``--to``: epoch ms, ISO 8601 UTC, or ``+SECONDS`` after the start.

    Raises:
        ValueError: none of those.
    """
    text = text.strip()
    if text.startswith("+"):
        return start_ms + int(float(text[1:]) * 1000)
    if text.isdigit():
        return int(text)
    from datetime import UTC, datetime

    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


async def replay(
    path: str | Path,
    *,
    specs: list[SinkSpec] | None = None,
    overrides: Mapping[str, Any] | None = None,
    run: str | None = None,
    speed: float | None = None,
    start: str | None = None,
    end: str | None = None,
    handle_signals: bool = False,
    metrics: Metrics | None = None,
    on_feed: Callable[[Feed], None] | None = None,
    claim_wait_s: float = CLAIM_WAIT_S,
) -> ReplayStats:
    """Replay one recording through :func:`streamer.app.run`; returns what was handed over.

    Args:
        path: a recording directory or one segment file.
        specs: sinks (default: the ``sinks`` override, else stdout).
        overrides: settings fields to set (``sinks``, ``log_level``, ...).
        run: which run of a directory holding several (default: the newest).
        speed: times faster than recorded; ``None``: as fast as possible.
        start, end: ``--from``/``--to`` (see :func:`parse_time` and :func:`select`).

    Raises:
        ConfigError: bad settings or time bounds.
        FileNotFoundError, ValueError: not a readable recording.
    """
    from streamer import app
    from streamer.errors import ConfigError

    header, entries = await anyio.to_thread.run_sync(recording.load, path, run)
    if not entries:
        raise ConfigError(f"replay: {path} holds no entries")
    t0 = int(entries[0][1])
    try:
        start_ms = parse_time(start, t0) if start else None
        end_ms = parse_time(end, t0) if end else None
    except ValueError as exc:
        raise ConfigError(f"replay: bad --from/--to time: {exc}") from None
    settings = replay_settings(header, overrides or {})
    driver = ReplayDriver(select(entries, start_ms=start_ms, end_ms=end_ms), speed=speed,
                          claim_wait_s=claim_wait_s)
    feeds: list[Feed] = []

    def hook(feed: Feed) -> None:
        feeds.append(feed)
        if on_feed is not None:
            on_feed(feed)

    driver.on_orphan = lambda method, target: _ask_again(feeds, method, target)
    done = anyio.Event()
    with clock.use_source(driver.now_ms):
        async with anyio.create_task_group() as tg:
            tg.start_soon(driver.run, done)
            await app.run(settings, None, transport=driver.http, connect=driver.connect,
                          handle_signals=handle_signals, specs=specs, metrics=metrics,
                          stop=done, on_feed=hook, run_id=replay_run_id(header))
            tg.cancel_scope.cancel()
    return driver.stats

