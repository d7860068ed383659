"""One shared REST pace every REST caller goes through: the venue's documented limits.

The venue documents, per API token, at most 2 concurrent requests and at least 300 ms
between calls; faster calls get 429 (limitless-api.md §7). Bootstrap, discovery, seeds,
probes, audits, the portfolio snapshot and the allowance watcher all go through one
:class:`RatePacer`, so no burst of re-seeds after a reconnect can push the daemon past
those limits, and a 429 from any caller pauses all of them for the time the venue asked.

:class:`PaceCore` is the pure core (time is passed in); :class:`RatePacer` is the async
edge that sleeps and holds the in-flight slots.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Final

import anyio

DEFAULT_MAX_IN_FLIGHT: Final = 2
DEFAULT_MIN_INTERVAL_S: Final = 0.33
"""The documented minimum is 300 ms between calls; 10 % more absorbs loopback and
event-loop jitter between our send and the venue's receive."""


class PaceCore:
    """Start times at least ``min_interval_s`` apart, and a pause after a 429; pure.

    Args:
        min_interval_s: least time between two request starts (>= 0).
        now: the current time, in seconds on any monotonic scale.
    """

    def __init__(self, min_interval_s: float, now: float) -> None:
        self.min_interval_s = min_interval_s
        self._next_start = now
        self._paused_until = now

    def reserve(self, now: float) -> float:
        """Book the next start slot; return how long to wait before using it (0 if none).

        Reservations queue up: each caller gets its own slot, in call order.
        """
        start = max(now, self._next_start, self._paused_until)
        self._next_start = start + self.min_interval_s
        return start - now

    def paused_for(self, now: float) -> float:
        """Seconds until a 429 pause ends (0 when none is in force)."""
        return max(0.0, self._paused_until - now)

    def pause(self, now: float, seconds: float) -> None:
        """No request starts before ``now + seconds`` (a 429's Retry-After)."""
        self._paused_until = max(self._paused_until, now + seconds)
        self._next_start = max(self._next_start, self._paused_until)


class RatePacer:
    """The async edge of a :class:`PaceCore` plus an in-flight bound (one per process).

    Args:
        max_in_flight: requests in flight at once.
        min_interval_s: least time between two request starts.

    Attributes:
        acquired: requests admitted.
        waited_s: total seconds callers waited for their turn (slot and spacing).
        pauses: pauses of every caller after a 429.
        in_flight: requests in flight now.
    """

    def __init__(
        self,
        max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
        min_interval_s: float = DEFAULT_MIN_INTERVAL_S,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
    ) -> None:
        self._clock = clock
        self._sleep = sleep
        self._core = PaceCore(min_interval_s, clock())
        self._slots = anyio.Semaphore(max_in_flight)
        self.max_in_flight = max_in_flight
        self.acquired = 0
        self.waited_s = 0.0
        self.pauses = 0
        self.in_flight = 0

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold one in-flight slot, starting no earlier than this caller's turn."""
        started = self._clock()
        async with self._slots:
            waited = self._clock() - started  # for an in-flight slot
            while True:
                wait = self._core.reserve(self._clock())
                if wait > 0:
                    waited += wait
                    await self._sleep(wait)
                if not self._core.paused_for(self._clock()):
                    break
                # A 429 seen by another caller while we slept: take a new turn after the
                # pause, so the callers it held do not all start at its end together.
            self.acquired += 1
            self.waited_s += waited
            self.in_flight += 1
            try:
                yield
            finally:
                self.in_flight -= 1

    def pause(self, seconds: float) -> None:
        """Hold every caller for ``seconds`` (the venue said 429)."""
        self.pauses += 1
        self._core.pause(self._clock(), seconds)
