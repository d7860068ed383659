"""Reconnect loop: connect, run a session, classify the failure, back off, repeat.

:func:`classify` is the one place that decides retry versus crash (like websockets'
``process_exception``). Every seam is a parameter (``connect``, ``sleep``, ``clock``,
``rng``) so tests drive it without real time.
"""

from __future__ import annotations

import enum
import logging
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from contextlib import AbstractAsyncContextManager
from typing import Final, Protocol

import anyio
from anyio.abc import TaskStatus

from streamer.config import FeedSettings
from streamer.errors import InvalidState, ProtocolError, TransportError
from streamer.partner.auth import Credentials, auth_headers
from streamer.transport.websocket import ENGINEIO_PATH, Transport, open_websocket

logger = logging.getLogger(__name__)


class Action(enum.Enum):
    """What to do after a session ended with an exception."""

    RETRY = "retry"
    FATAL = "fatal"


def unwrap(exc: BaseException) -> BaseException:
    """The single leaf of nested one-member exception groups (task groups wrap)."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


def classify(exc: BaseException) -> Action:
    """Retry network and peer-protocol failures; anything else is a bug: crash.

    Misuse errors (InvalidState) are checked first because they also inherit
    StreamerError. A group is retryable only if every member is.
    """
    exc = unwrap(exc)
    if isinstance(exc, BaseExceptionGroup):
        actions = {classify(e) for e in exc.exceptions}
        return Action.RETRY if actions == {Action.RETRY} else Action.FATAL
    if isinstance(exc, InvalidState):
        return Action.FATAL
    if isinstance(exc, TransportError | ProtocolError):
        return Action.RETRY
    return Action.FATAL


class SessionRunner(Protocol):
    """What the supervisor drives (the Feed, or a fake in tests)."""

    @property
    def session_healthy(self) -> bool:
        """The last session joined the namespace and delivered at least one event."""
        ...

    async def before_connect(self) -> None:
        """Wait until a new session may start (e.g. a ``block`` sink drained)."""
        ...

    async def run_session(self, transport: Transport) -> None: ...

    def on_disconnect(self, reason: str, detail: str, attempt: int, delay_s: float) -> None: ...


class ReconnectPolicy:
    """When to try again after a session ended; pure (time is passed in).

    - A healthy session (joined ``/markets`` and delivered at least one event) is followed
      by a reconnect at once, after a random delay of at most ``healthy_jitter_s``, and
      resets the failure backoff: a venue that drops clients routinely (deploys, load
      balancers) must not leave the feed blind for longer each time.
    - A failed attempt (connect or upgrade error, refused namespace, a session that ended
      before delivering anything) waits the next capped, jittered exponential delay.
    - A floor holds either way, so a venue that accepts and drops at once cannot make the
      daemon spin: at least ``min_attempt_interval_s`` between attempt starts, and at most
      ``max_attempts_per_minute`` starts in any rolling 60 s.

    Attributes:
        attempt: failed attempts since the last healthy session, plus one (the number of
            the attempt about to be made).
    """

    WINDOW_S: Final = 60.0

    def __init__(self, settings: FeedSettings, rng: random.Random | None = None) -> None:
        self._settings = settings
        self._rng = rng or random.Random()
        self._delays = settings.backoff.delays(self._rng)
        self._starts: deque[float] = deque(maxlen=max(1, settings.max_attempts_per_minute))
        self.attempt = 1

    def started(self, now: float) -> None:
        """An attempt starts now."""
        self._starts.append(now)

    def delay(self, healthy: bool, now: float) -> float:
        """Seconds to wait before the next attempt, after one that ended ``now``."""
        s = self._settings
        if healthy:
            self._delays = s.backoff.delays(self._rng)
            self.attempt = 1
            wait = self._rng.uniform(0.0, s.healthy_jitter_s)
        else:
            self.attempt += 1
            wait = next(self._delays)
        earliest = now + wait
        starts = self._starts
        if starts:
            earliest = max(earliest, starts[-1] + s.min_attempt_interval_s)
            if len(starts) == starts.maxlen:
                earliest = max(earliest, starts[0] + self.WINDOW_S)
        return earliest - now


Connect = Callable[[str, Mapping[str, str]], AbstractAsyncContextManager[Transport]]


def default_connect(settings: FeedSettings) -> Connect:
    """``open_websocket`` with the feed's timeouts and frame limit."""

    def connect(url: str, headers: Mapping[str, str]) -> AbstractAsyncContextManager[Transport]:
        return open_websocket(
            url,
            headers,
            open_timeout_s=settings.connect_timeout_s,
            max_frame_bytes=settings.max_frame_bytes,
            client=settings.ws_client,
        )

    return connect


async def run_feed(
    runner: SessionRunner,
    ws_url: str,
    settings: FeedSettings,
    credentials: Credentials | None,
    *,
    connect: Connect | None = None,
    sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
    clock: Callable[[], float] = time.monotonic,
    wall_clock: Callable[[], float] = time.time,
    rng: random.Random | None = None,
    max_sessions: int | None = None,
    task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Keep a session running forever (or ``max_sessions`` times, for tests).

    Each attempt signs the handshake afresh (the HMAC timestamp window is 30 s). The
    delay before the next attempt comes from :class:`ReconnectPolicy`.

    Raises:
        Exception: whatever :func:`classify` calls fatal.
    """
    connect = connect or default_connect(settings)
    policy = ReconnectPolicy(settings, rng)
    task_status.started()
    sessions = 0
    while max_sessions is None or sessions < max_sessions:
        sessions += 1
        await runner.before_connect()
        policy.started(clock())
        headers = auth_headers(credentials, "GET", ENGINEIO_PATH, b"", wall_clock())
        entered = False
        try:
            async with connect(ws_url, headers) as transport:
                entered = True
                await runner.run_session(transport)
            raise InvalidState("run_session returned without an error")
        except Exception as exc:
            if classify(exc) is Action.FATAL:
                raise
            leaf = unwrap(exc)
            reason, detail = type(leaf).__name__, str(leaf)
        healthy = entered and runner.session_healthy
        delay = policy.delay(healthy, clock())
        runner.on_disconnect(reason, detail, policy.attempt, delay)
        await sleep(delay)
