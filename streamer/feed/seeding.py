"""Which markets need a REST book next: the seed queue of the feed (pure, time passed in).

Every REST call counts against the venue's documented limits (2 in flight, 300 ms apart),
so the queue decides what is worth a call:

- a market waits here until a seeder takes it; a full WebSocket book that arrives first
  makes its REST call unnecessary (:meth:`SeedQueue.cancel`);
- among the markets that are due, the least recently verified goes first (a market whose
  book was confirmed a second ago can wait for one silent for an hour), except that
  ``crossed`` and ``divergence`` re-seeds go before everything else;
- a failed seed comes back after a per-market capped, jittered exponential delay, without
  holding a seeder while it waits, and is never given up;
- a book that stays crossed is re-seeded with the same per-market backoff, so a venue that
  keeps sending a crossed book cannot cost a REST call per update.

The queue outlives sessions: what still needs a seed when a session ends still needs it in
the next one.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final

from streamer.feed.retry import Backoff

URGENT_REASONS: Final = frozenset({"crossed", "divergence"})
"""Seed reasons served before the least-recently-verified order."""


@dataclass(slots=True)
class _Want:
    reason: str
    verified_at: float
    not_before: float


class SeedQueue:
    """Markets owed a REST book, with per-market backoff; pure.

    Args:
        backoff: per-market delays after a failed seed.
        crossed_backoff: per-market delays between re-seeds of a book that stays crossed
            (``backoff`` if omitted).
        rng: randomness of the jitter (tests pass a seeded one).

    Attributes:
        pending: slug -> what is wanted (reason, last verification, earliest start).
    """

    def __init__(self, backoff: Backoff, crossed_backoff: Backoff | None = None,
                 rng: random.Random | None = None) -> None:
        self._backoff = backoff
        self._crossed_backoff = crossed_backoff or backoff
        self._rng = rng or random.Random()
        self.pending: dict[str, _Want] = {}
        self._failures: dict[str, Iterator[float]] = {}
        self._crossed: dict[str, Iterator[float]] = {}

    def __len__(self) -> int:
        return len(self.pending)

    def __contains__(self, slug: object) -> bool:
        return slug in self.pending

    def want(self, slug: str, reason: str, verified_at: float, now: float) -> None:
        """Ask for a seed of ``slug``; a pending request keeps its place and backoff.

        An urgent reason replaces a routine one (the market is re-ordered, not delayed).
        """
        held = self.pending.get(slug)
        if held is None:
            self.pending[slug] = _Want(reason, verified_at, now)
        elif reason in URGENT_REASONS and held.reason not in URGENT_REASONS:
            held.reason = reason

    def want_crossed(self, slug: str, verified_at: float, now: float) -> None:
        """A crossed book: seed at once the first time, then back off per market.

        The backoff is cleared by :meth:`uncrossed` (a book that is no longer crossed).
        """
        if slug in self.pending:
            self.want(slug, "crossed", verified_at, now)
            return
        delays = self._crossed.get(slug)
        if delays is None:
            self._crossed[slug] = self._crossed_backoff.delays(self._rng)
            not_before = now
        else:
            not_before = now + next(delays)
        self.pending[slug] = _Want("crossed", verified_at, not_before)

    def uncrossed(self, slug: str) -> None:
        """``slug``'s book is not crossed (any more): the next crossed book seeds at once."""
        self._crossed.pop(slug, None)

    @property
    def has_crossed(self) -> bool:
        """Some market is backing off a crossed book (a cheap check for the hot path)."""
        return bool(self._crossed)

    def cancel(self, slug: str) -> str | None:
        """Withdraw ``slug``'s pending seed; returns its reason, or None if none was pending."""
        held = self.pending.pop(slug, None)
        return None if held is None else held.reason

    def reason(self, slug: str) -> str | None:
        """The reason of ``slug``'s pending seed, or None."""
        held = self.pending.get(slug)
        return None if held is None else held.reason

    def pop(self, now: float) -> tuple[str, str] | None:
        """The next due market and its reason (removed from the queue), or None.

        Urgent reasons first, then the least recently verified; ties by slug, so the order
        is deterministic.
        """
        best: tuple[int, float, str] | None = None
        for slug, want in self.pending.items():
            if want.not_before > now:
                continue
            key = (0 if want.reason in URGENT_REASONS else 1, want.verified_at, slug)
            if best is None or key < best:
                best = key
        if best is None:
            return None
        slug = best[2]
        return slug, self.pending.pop(slug).reason

    def next_due_in(self, now: float) -> float | None:
        """Seconds until some pending market is due (0 if one is); None when empty."""
        if not self.pending:
            return None
        return max(0.0, min(w.not_before for w in self.pending.values()) - now)

    def failed(self, slug: str, reason: str, verified_at: float, now: float) -> float:
        """A seed of ``slug`` failed: queue it again after its backoff; returns the delay."""
        delays = self._failures.get(slug)
        if delays is None:
            delays = self._failures[slug] = self._backoff.delays(self._rng)
        delay = next(delays)
        held = self.pending.get(slug)
        if held is None:
            self.pending[slug] = _Want(reason, verified_at, now + delay)
        else:
            held.not_before = max(held.not_before, now + delay)
        return delay

    def succeeded(self, slug: str) -> None:
        """A seed of ``slug`` succeeded: its failure backoff starts over."""
        self._failures.pop(slug, None)

    def forget(self, slug: str) -> None:
        """Drop everything about ``slug`` (the market is no longer followed)."""
        self.pending.pop(slug, None)
        self._failures.pop(slug, None)
        self._crossed.pop(slug, None)
