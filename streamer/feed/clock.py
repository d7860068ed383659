"""The daemon's wall clock, with the two seams record/replay need.

:func:`now_ms` is what the feed, discovery and the records read. Two seams:

- **virtual time** (replay): :func:`use_source` swaps the source, so a replay stamps
  records with the recorded receive times instead of the wall clock;
- **pinned REST times** (record and replay): :func:`pin` makes the *next* :func:`now_ms`
  read in the current task return a given value. The recording HTTP transport pins the
  receive time it writes down, so the ``ts`` of a REST-seeded ``book`` (which is "the
  local time the REST response arrived") is exactly the recorded time, and a replay that
  serves that response reproduces it to the millisecond. A pin is a ``ContextVar``: it
  belongs to the task that awaited the response and is consumed by its first read, if
that read comes within :data:`PIN_TTL_MS`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Final


def wall_ms() -> int:
    """Local wall-clock time in epoch milliseconds."""
    return time.time_ns() // 1_000_000


_source: Callable[[], int] = wall_ms
_PINNED: Final[ContextVar[int | None]] = ContextVar("streamer_pinned_ms", default=None)


PIN_TTL_MS: Final = 50
"""A pin is honoured only this soon after its time: one left unread (a request that
failed) must not stamp a read made much later in the same task."""


def now_ms() -> int:
    """The current time in epoch ms: a fresh pin of this task (consumed), else the source."""
    pinned = _PINNED.get()
    if pinned is None:
        return _source()
    _PINNED.set(None)
    now = _source()
    return pinned if 0 <= now - pinned <= PIN_TTL_MS else now


def pin(value_ms: int) -> None:
    """Make the next :func:`now_ms` read of the current task return ``value_ms``."""
    _PINNED.set(value_ms)


@contextmanager
def use_source(source: Callable[[], int]) -> Iterator[None]:
    """Read time from ``source`` inside the block (replay's virtual clock)."""
    global _source
    previous, _source = _source, source
    try:
        yield
    finally:
        _source = previous
