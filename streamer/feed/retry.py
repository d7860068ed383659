"""Retry policy as pure functions: a capped, jittered exponential backoff.

Shared by the REST client and the feed supervisor. No clock, no I/O: the caller
sleeps. Jitter is multiplicative (±``jitter`` of the delay), the cap is applied
before jitter so the spread survives at the cap.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Final

import msgspec

DEFAULT_INITIAL_S: Final = 1.0
DEFAULT_FACTOR: Final = 2.0
DEFAULT_CAP_S: Final = 30.0
DEFAULT_JITTER: Final = 0.2


class Backoff(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Backoff parameters (a config value object)."""

    initial_s: float = DEFAULT_INITIAL_S
    factor: float = DEFAULT_FACTOR
    cap_s: float = DEFAULT_CAP_S
    jitter: float = DEFAULT_JITTER

    def delays(self, rng: random.Random | None = None) -> Iterator[float]:
        """Yield an endless sequence of delays in seconds.

        The n-th delay is ``min(cap, initial * factor**n)`` times a uniform factor in
        ``[1 - jitter, 1 + jitter]``.
        """
        rand = (rng or random.Random()).random
        base = self.initial_s
        while True:
            yield max(0.0, base * (1.0 + self.jitter * (2.0 * rand() - 1.0)))
            base = min(self.cap_s, base * self.factor)
