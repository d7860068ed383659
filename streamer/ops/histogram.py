"""A fixed-bucket histogram cheap enough for the hot path (no Prometheus import).

The feed observes into it per message; :mod:`streamer.ops.metrics` exports it at scrape time.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Final

FEED_LATENCY_BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                               30.0)
"""Seconds: local receive time minus exchange time."""


_MS_INDEX_SIZE: Final = 1024
"""Milliseconds covered by :meth:`Histogram.observe_ms`'s bucket table (8 kB per histogram)."""


class Histogram:
    """A fixed-bucket histogram cheap enough for the hot path (no locks, no Prometheus).

    ``observe`` is a ``bisect`` plus two additions; :class:`StatsCollector` exports it as a
    Prometheus histogram at scrape time. Single-threaded use only (the event loop).

    Args:
        bounds: strictly increasing, finite upper bounds (``le``); ``+Inf`` is implied.

    Raises:
        ValueError: empty, unsorted or non-finite bounds.
    """

    __slots__ = ("bounds", "counts", "total", "_ms_index")

    def __init__(self, bounds: Sequence[float]) -> None:
        values = tuple(float(b) for b in bounds)
        if not values or any(not math.isfinite(b) for b in values) or any(
            a >= b for a, b in zip(values, values[1:], strict=False)
        ):
            raise ValueError("bounds must be finite and strictly increasing")
        self.bounds = values
        self.counts = [0] * (len(values) + 1)
        self.total = 0.0
        self._ms_index = [bisect_left(values, ms / 1000.0) for ms in range(_MS_INDEX_SIZE)]
        """``_ms_index[ms]``: the bucket of ``ms`` milliseconds (a ``bisect`` done up front)."""

    def observe(self, value: float) -> None:
        """Count one observation (NaN is ignored: it would poison the sum for good)."""
        if value != value:  # NaN
            return
        self.counts[bisect_left(self.bounds, value)] += 1
        self.total += value

    def observe_ms(self, value_ms: int) -> None:
        """Count one observation given in milliseconds (the records' time unit).

        Per frame on the hot path: an integer below :data:`_MS_INDEX_SIZE` finds its bucket
        in a table made once, anything else by ``bisect``.
        """
        seconds = value_ms / 1000.0
        if 0 <= value_ms < _MS_INDEX_SIZE:
            self.counts[self._ms_index[value_ms]] += 1
        else:
            self.counts[bisect_left(self.bounds, seconds)] += 1
        self.total += seconds

    def observe_ages_ms(self, now_ms: float, stamps_ms: Iterable[int]) -> None:
        """Count ``(now_ms - stamp) / 1000`` seconds for every stamp (epoch ms).

        For a whole batch at once: equal stamps (a batch spans few milliseconds) are
        counted together, one ``bisect`` per distinct stamp.
        """
        counts, bounds = self.counts, self.bounds
        total = 0.0
        for stamp, n in Counter(stamps_ms).items():
            value = (now_ms - stamp) / 1000.0
            if value != value:  # NaN
                continue
            counts[bisect_left(bounds, value)] += n
            total += value * n
        self.total += total

    @property
    def count(self) -> int:
        """Number of observations."""
        return sum(self.counts)

    def cumulative(self) -> list[tuple[str, float]]:
        """``(le, cumulative count)`` pairs, ``+Inf`` last, as Prometheus wants them."""
        out: list[tuple[str, float]] = []
        running = 0
        for bound, n in zip((*self.bounds, math.inf), self.counts, strict=True):
            running += n
            out.append(("+Inf" if bound == math.inf else repr(bound), float(running)))
        return out
