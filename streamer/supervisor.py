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
from collections.abc import Awaitable, Callable, Mapping
from contextlib import AbstractAsyncContextManager
from typing import Protocol

import anyio
from anyio.abc import TaskStatus

from streamer.auth import Credentials, auth_headers
from streamer.config import FeedSettings
from streamer.errors import InvalidState, ProtocolError, TransportError
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

    async def run_session(self, transport: Transport) -> None: ...

    def on_disconnect(self, reason: str, detail: str, attempt: int, delay_s: float) -> None: ...


Connect = Callable[[str, Mapping[str, str]], AbstractAsyncContextManager[Transport]]


def default_connect(settings: FeedSettings) -> Connect:
    """``open_websocket`` with the feed's timeouts and frame limit."""

    def connect(url: str, headers: Mapping[str, str]) -> AbstractAsyncContextManager[Transport]:
        return open_websocket(
            url,
            headers,
            open_timeout_s=settings.connect_timeout_s,
            max_frame_bytes=settings.max_frame_bytes,
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

    Each attempt signs the handshake afresh (the HMAC timestamp window is 30 s).
    The backoff resets after a session that lasted ``stable_after_s``.

    Raises:
        Exception: whatever :func:`classify` calls fatal.
    """
    connect = connect or default_connect(settings)
    delays = settings.backoff.delays(rng)
    task_status.started()
    sessions = 0
    while max_sessions is None or sessions < max_sessions:
        sessions += 1
        headers = auth_headers(credentials, "GET", ENGINEIO_PATH, b"", wall_clock())
        started = clock()
        try:
            async with connect(ws_url, headers) as transport:
                await runner.run_session(transport)
            raise InvalidState("run_session returned without an error")
        except Exception as exc:
            if classify(exc) is Action.FATAL:
                raise
            leaf = unwrap(exc)
            reason, detail = type(leaf).__name__, str(leaf)
        if clock() - started >= settings.stable_after_s:
            delays = settings.backoff.delays(rng)
        delay = next(delays)
        runner.on_disconnect(reason, detail, sessions, delay)
        await sleep(delay)
