"""An in-memory sink: the ``MockTransport`` of sinks, for tests and debugging."""

from __future__ import annotations

from collections.abc import Sequence

import anyio
import anyio.lowlevel

from sinks.base import SinkUnavailable
from sinks.records import Record

__all__ = ["MemorySink"]


class MemorySink:
    """Keeps every written record in :attr:`records`, in order.

    Args:
        name: the sink's label.
        fail_times: the first ``fail_times`` calls to ``write`` raise :class:`SinkUnavailable`
            (nothing is stored for them), then writes succeed.
        fail_open_times: the same for ``open``.
        delay: seconds to sleep inside each ``write`` before storing (a slow output).

    Attributes:
        records: every record written, in order.
        batches: the batches as received (to check batching).
        write_calls: calls to ``write``, failed ones included.
        opened / closed: whether ``open`` succeeded / ``aclose`` was called.
    """

    def __init__(
        self,
        name: str = "memory",
        *,
        fail_times: int = 0,
        fail_open_times: int = 0,
        delay: float = 0.0,
    ) -> None:
        self.name = name
        self.records: list[Record] = []
        self.batches: list[list[Record]] = []
        self.write_calls = 0
        self.opened = False
        self.closed = False
        self._fail_times = fail_times
        self._fail_open_times = fail_open_times
        self._delay = delay
        self._changed = anyio.Event()

    async def open(self) -> None:
        """Mark the sink open, or fail while ``fail_open_times`` lasts."""
        await anyio.lowlevel.checkpoint()
        if self._fail_open_times > 0:
            self._fail_open_times -= 1
            raise SinkUnavailable(self.name, "simulated open failure")
        self.opened = True

    async def write(self, batch: Sequence[Record]) -> None:
        """Store ``batch``, after ``delay``, or fail while ``fail_times`` lasts."""
        self.write_calls += 1
        await anyio.sleep(self._delay)  # a checkpoint even without delay, like real I/O
        if self._fail_times > 0:
            self._fail_times -= 1
            raise SinkUnavailable(self.name, "simulated write failure")
        self.batches.append(list(batch))
        self.records.extend(batch)
        self._changed.set()
        self._changed = anyio.Event()

    async def aclose(self) -> None:
        """Mark the sink closed."""
        self.closed = True

    async def wait_for(self, count: int) -> None:
        """Return once at least ``count`` records were written (bound it with ``fail_after``)."""
        while len(self.records) < count:
            await self._changed.wait()
