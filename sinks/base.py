"""The sink seam: one small async interface every output implements, and its errors.

::

    SinkError                       root; ``sink`` and ``detail`` fields
    ├── SinkUnavailable             transient (disk full, broker down) → retried by the runner
    ├── SinkRejected                this batch can never be written → dropped, or on_error
    ├── SinkClosed                  the output went away for good (EPIPE) → the sink stops
    │   └── SinkMisconfigured       … because it refuses the configuration → the daemon exits 2
    └── SinkConfigError(SinkError, ValueError)
                                    bad sink URL or option; the message never shows a password

A sink maps its own third-party and ``OSError`` exceptions to this tree (``raise … from exc``);
nothing above a sink catches ``OSError``.
"""

from __future__ import annotations

import errno
import random
from collections.abc import Iterator, Sequence
from typing import Protocol, runtime_checkable

from sinks.records import Record

__all__ = [
    "Sink",
    "Reopenable",
    "SinkError",
    "SinkUnavailable",
    "SinkRejected",
    "SinkClosed",
    "SinkMisconfigured",
    "SinkConfigError",
    "os_error_detail",
]


class Sink(Protocol):
    """An output for records; the fan-out calls ``open`` once, ``write`` serially, ``aclose`` once.

    Attributes:
        name: unique, stable label for logs and metrics (``stdout``, ``file:/var/x.ndjson``).
    """

    name: str

    async def open(self) -> None:
        """Acquire the output (file handle, connection).

        Raises:
            SinkUnavailable: retry later. SinkClosed: the output is gone for good.
        """
        ...

    async def write(self, batch: Sequence[Record]) -> None:
        """Write ``batch`` in order; either all of it is delivered or the call raises.

        Raises:
            SinkUnavailable: nothing (or nothing torn) was written; the same batch may be retried.
            SinkRejected: this batch can never be written.
            SinkClosed: the output went away for good.
        """
        ...

    async def aclose(self) -> None:
        """Flush and release the output. Called once at shutdown, even if ``open`` failed."""
        ...


@runtime_checkable
class Reopenable(Protocol):
    """A sink whose output can be reopened in place (``FileSink`` after logrotate)."""

    def reopen(self) -> None:
        """Reopen the output before the next write; must be safe from a signal handler."""
        ...


class SinkError(Exception):
    """Root of every error a sink raises on purpose.

    Attributes:
        sink: the sink's name (or a redacted URL for config errors).
        detail: what went wrong, one line.
    """

    def __init__(self, sink: str, detail: str) -> None:
        super().__init__(sink, detail)
        self.sink = sink
        self.detail = detail

    def __str__(self) -> str:
        return f"{self.sink}: {self.detail}"


class SinkUnavailable(SinkError):
    """A transient failure: the runner retries the same batch with backoff."""


class SinkRejected(SinkError):
    """This batch cannot be written (too big, refused by the broker); retrying will not help."""


class SinkClosed(SinkError):
    """The output went away for good, e.g. the reader of stdout closed the pipe (EPIPE)."""


class SinkMisconfigured(SinkClosed):
    """The output refuses this sink's configuration for good (e.g. a missing Kafka topic):
    the sink stops, and the daemon exits 2 with this one line."""


class SinkConfigError(SinkError, ValueError):
    """A bad sink URL or option. The message names the option and never contains a password."""


def os_error_detail(op: str, target: str, exc: OSError) -> str:
    """One-line description of an ``OSError``: ``"write /x.ndjson: ENOSPC (No space left…)"``."""
    code = errno.errorcode.get(exc.errno, str(exc.errno)) if exc.errno is not None else "OSError"
    return f"{op} {target}: {code} ({exc.strerror or exc})"


def jittered_backoff(initial_s: float, cap_s: float, *, factor: float = 2.0,
                     jitter: float = 0.2) -> Iterator[float]:
    """Endless retry delays: ``initial_s`` growing by ``factor`` up to ``cap_s``, each ±jitter.

    (``sinks`` may not import ``streamer.feed.retry``; this is its twin for the sinks' own loops.)
    """
    delay = initial_s
    while True:
        yield delay * (1.0 + jitter * (2.0 * random.random() - 1.0))
        delay = min(cap_s, delay * factor)
