"""The publish gate of a hot-standby daemon: only the lease holder's current run goes out.

A daemon started with ``--lease`` runs hot (connected, subscribed, books kept) whether or
not it holds the lease; the :class:`PublishGate` decides what reaches the sinks. The lease
task (:mod:`streamer.ha.lease`) opens it for a new run when it acquires the lease, moves its
deadline on with every renewal, and closes it when a renewal fails. The deadline is on the
monotonic clock, which keeps running while the process is stopped: a holder frozen by
SIGSTOP past its deadline finds the gate shut when it resumes, before its lease task has
even run, and it stays shut until the lease is acquired again, for a new run.

The fan-out asks the gate twice: when a record is published (a standby queues nothing) and
right before every sink write (records queued while holding, or a batch being retried, are
fenced once the lease is no longer held, and records of an earlier run never go out).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Protocol


class _HasRun(Protocol):
    @property
    def run(self) -> str: ...


class PublishGate:
    """Open for one run until a monotonic deadline.

    Attributes:
        run: the run allowed out, or None when the gate was never opened.
        deadline: monotonic time at which the permission ends.
        fenced: records refused (published while standby, or fenced before a write).
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self.run: str | None = None
        self.deadline = -math.inf
        self.fenced = 0

    @property
    def holding(self) -> bool:
        """The gate is open now."""
        return self.run is not None and self._clock() < self.deadline

    def allows(self, record: _HasRun) -> bool:
        """Whether ``record`` may go out now (counted in ``fenced`` if not)."""
        if record.run == self.run and self._clock() < self.deadline:
            return True
        self.fenced += 1
        return False

    def open(self, run: str, deadline: float) -> None:
        """Let ``run`` out until ``deadline`` (monotonic)."""
        self.run, self.deadline = run, deadline

    def extend(self, deadline: float) -> None:
        """A renewal succeeded: the permission lasts until ``deadline``."""
        self.deadline = deadline

    def close(self) -> None:
        """The lease is lost (or given up): nothing goes out."""
        self.deadline = -math.inf
