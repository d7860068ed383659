"""One shared REST rate budget: a token bucket every REST caller draws from.

Bootstrap, re-seeds, staleness probes and audits all spend from the same bucket, so
a burst of re-seeds after a reconnect cannot push the daemon past the venue's limits,
and a 429 from any caller pauses all of them for the time the venue asked for.

:class:`TokenBucket` is the pure core (time is passed in); :class:`RateBudget` is the
async edge that sleeps.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

import anyio


class TokenBucket:
    """``rate`` tokens per second, at most ``burst`` saved up; pure.

    Args:
        rate: tokens added per second (> 0).
        burst: bucket size (>= 1).
        now: the time the bucket starts (full), in seconds on any monotonic scale.
    """

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate = rate
        self.burst = burst
        self._tokens = burst
        self._stamp = now
        self._paused_until = now

    def reserve(self, now: float) -> float:
        """Take one token; return how long to wait before using it (0 if none).

        Reservations queue up: each caller gets its own slot, in call order.
        """
        self._refill(now)
        self._tokens -= 1.0
        wait = max(0.0, -self._tokens / self.rate)
        return max(wait, self._paused_until - now)

    def pause(self, now: float, seconds: float) -> None:
        """No token is usable until ``now + seconds`` (a 429's Retry-After)."""
        self._paused_until = max(self._paused_until, now + seconds)

    def _refill(self, now: float) -> None:
        elapsed = max(0.0, now - self._stamp)
        self._stamp = now
        self._tokens = min(self.burst, self._tokens + elapsed * self.rate)


class RateBudget:
    """The async edge of a :class:`TokenBucket` (one per process)."""

    def __init__(
        self,
        rate_per_s: float,
        burst: int,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
    ) -> None:
        self._clock = clock
        self._sleep = sleep
        self._bucket = TokenBucket(rate_per_s, float(burst), clock())
        self.waited_s = 0.0
        self.acquired = 0
        self.pauses = 0

    async def acquire(self) -> None:
        """Wait for this caller's turn in the budget."""
        wait = self._bucket.reserve(self._clock())
        self.acquired += 1
        if wait > 0:
            self.waited_s += wait
            await self._sleep(wait)

    def pause(self, seconds: float) -> None:
        """Hold every caller for ``seconds`` (the venue said 429)."""
        self.pauses += 1
        self._bucket.pause(self._clock(), seconds)
