"""NDJSON to a file: whole lines only, rotation by size and time, ``reopen()`` for logrotate.

Guarantees:

* A batch is encoded into one buffer and appended with an unbuffered ``O_APPEND`` handle, so
  after every ``write`` the data is in the OS (no fsync: a power cut can lose the tail, and the
  next open repairs a torn last line).
* We never leave a partial line: if a write fails half-way (ENOSPC, EFBIG, EIO), the file is
  truncated back to its size before the write, and :class:`SinkUnavailable` is raised so the
  fan-out retries the same batch.
* On open, a file whose last byte is not ``\\n`` (a crash mid-line) is truncated back to its last
  newline, with a warning naming the number of bytes dropped.

Rotation renames ``x.ndjson`` to ``x.ndjson.<UTC rotation time YYYYmmddTHHMMSS>`` (``.1``, ``.2``
… on a name clash) and keeps the newest ``keep`` of them. Size rotation happens before a batch
that would push the file past ``max_bytes`` (a single batch bigger than that still goes whole
into one file). Time rotation is aligned to multiples of the interval since the epoch (``1h``
rotates on the hour, ``1d`` at UTC midnight) and, like logrotate, happens on the first write of a
new period.

Only regular files are rotated, repaired or truncated. A FIFO, a character device
(``/dev/null``, a terminal) or a pipe (``file:/dev/stderr`` when stderr is a pipe) is opened
for appending and written to, never seeked: no size tracking, no rotation, no undo of a
partial write (a failed write to a pipe is retried whole, as the reader sees a stream).
A FIFO with no reader blocks the open (in the worker thread) until one arrives.

:meth:`FileSink.preflight` checks at startup that the file can be created or appended to, so
a missing or read-only directory is a configuration error (exit 2), not an endless retry;
failures that start later keep the retry behaviour.

All blocking calls run in a worker thread; the runner calls ``write`` serially, so the thread
state needs no lock. ``reopen()`` only sets a flag and may be called from a signal handler.
"""

from __future__ import annotations

import errno
import io
import logging
import os
import re
import stat
import time
from collections.abc import Callable, Sequence
from typing import Final

import anyio.to_thread

from sinks.base import SinkConfigError, SinkUnavailable, os_error_detail
from sinks.records import Record, encode_lines

__all__ = ["FileSink"]

logger = logging.getLogger(__name__)

ROTATED_STAMP_FORMAT: Final = "%Y%m%dT%H%M%S"
TAIL_SCAN_CHUNK: Final = 64 * 1024


class FileSink:
    """Appends NDJSON lines to ``path``; see the module docstring for the guarantees.

    Args:
        path: the live file.
        max_bytes: rotate before the file would exceed this size; ``None``: never by size.
        rotate_interval_s: rotate on the first write of each new interval; ``None``: never by time.
        keep: rotated files to keep (oldest deleted first); ``None``: keep all.
        clock: wall clock in epoch seconds (injectable for tests).
        name: the sink's label; default ``file:<path>``.

    Raises:
        ValueError: a non-positive ``max_bytes``/``rotate_interval_s`` or a negative ``keep``.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        max_bytes: int | None = None,
        rotate_interval_s: float | None = None,
        keep: int | None = None,
        clock: Callable[[], float] = time.time,
        name: str | None = None,
    ) -> None:
        if max_bytes is not None and max_bytes <= 0:
            raise ValueError(f"max_bytes must be positive, got {max_bytes}")
        if rotate_interval_s is not None and rotate_interval_s <= 0:
            raise ValueError(f"rotate_interval_s must be positive, got {rotate_interval_s}")
        if keep is not None and keep < 0:
            raise ValueError(f"keep must be >= 0, got {keep}")
        self.path: Final = os.fspath(path)
        self.name = name or f"file:{self.path}"
        self.max_bytes: Final = max_bytes
        self.rotate_interval_s: Final = rotate_interval_s
        self.keep: Final = keep
        self._clock = clock
        self._file: io.FileIO | None = None
        self._size = 0
        self._period = 0
        self._regular = True
        self._reopen_requested = False

    def __repr__(self) -> str:
        return f"<FileSink {self.name}>"

    def reopen(self) -> None:
        """Close and reopen ``path`` before the next write (SIGHUP after logrotate renamed it).

        Only sets a flag, so it is safe from a signal handler or another thread.
        """
        self._reopen_requested = True

    def preflight(self) -> None:
        """Check, before the daemon starts, that ``path`` can be appended to.

        Synchronous and quick (a few ``stat``/``access`` calls); nothing is created.

        Raises:
            SinkConfigError: the directory is missing or not writable, the path is a
                directory, or an existing file is not writable.
        """
        problem = _path_problem(self.path, rotating=self._rotating)
        if problem is not None:
            raise SinkConfigError(self.name, problem)

    @property
    def _rotating(self) -> bool:
        return self.max_bytes is not None or self.rotate_interval_s is not None

    async def open(self) -> None:
        """Open (creating if needed) and repair a torn last line.

        Raises:
            SinkUnavailable: the file cannot be opened (missing directory, permission).
        """
        await anyio.to_thread.run_sync(self._open_mapped)

    async def write(self, batch: Sequence[Record]) -> None:
        """Append ``batch`` as whole lines, rotating first if due.

        Raises:
            SinkUnavailable: an ``OSError``; no partial line was left behind.
        """
        buffer = encode_lines(batch)
        await anyio.to_thread.run_sync(self._write_sync, buffer)

    async def aclose(self) -> None:
        """Close the file (idempotent)."""
        await anyio.to_thread.run_sync(self._close_sync)

    # -- worker-thread side -------------------------------------------------------------

    def _open_mapped(self) -> None:
        try:
            self._open_sync()
        except OSError as exc:
            raise SinkUnavailable(self.name, os_error_detail("open", self.path, exc)) from exc

    def _open_sync(self) -> None:
        self._close_sync()
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            self._regular = True
        else:
            self._regular = stat.S_ISREG(st.st_mode)
        if self._regular:
            self._repair_tail()
        file = open(self.path, "ab", buffering=0)
        # A FIFO, a terminal or a pipe cannot seek (ESPIPE): no size, no rotation.
        self._size = file.seek(0, os.SEEK_END) if self._regular else 0
        since = os.fstat(file.fileno()).st_mtime if self._size else self._clock()
        self._period = self._period_of(since)
        self._file = file

    def _repair_tail(self) -> None:
        """Truncate a last line without ``\\n`` (left by a crash) back to the last newline."""
        try:
            handle = open(self.path, "r+b")
        except FileNotFoundError:
            return
        with handle:
            size = handle.seek(0, os.SEEK_END)
            if size == 0:
                return
            handle.seek(size - 1)
            if handle.read(1) == b"\n":
                return
            keep = _end_of_last_line(handle, size)
            handle.truncate(keep)
        logger.warning("%s: dropped %d bytes of a torn last line at offset %d",
                       self.path, size - keep, keep,
                       extra={"sink": self.name, "path": self.path, "reason": "torn_line"})

    def _write_sync(self, data: bytes) -> None:
        file = self._prepare(len(data))
        start = self._size
        try:
            _write_all(file, data)
        except OSError as exc:
            if self._regular:
                self._undo_partial(file, start)
            else:
                self._close_sync()  # a stream cannot be truncated; reopen before the retry
            raise SinkUnavailable(self.name, os_error_detail("write", self.path, exc)) from exc
        if self._regular:
            self._size = start + len(data)

    def _prepare(self, incoming: int) -> io.FileIO:
        """Reopen if asked, open if needed, rotate if due; return the file to append to."""
        op = "open"
        try:
            if self._reopen_requested:
                self._reopen_requested = False
                self._close_sync()
            if self._file is None:
                self._open_sync()
            op = "rotate"
            self._maybe_rotate(incoming)
        except OSError as exc:
            self._close_sync()
            raise SinkUnavailable(self.name, os_error_detail(op, self.path, exc)) from exc
        assert self._file is not None  # set by _open_sync, or it raised
        return self._file

    def _undo_partial(self, file: io.FileIO, start: int) -> None:
        try:
            file.truncate(start)
        except OSError as exc:
            # The torn tail stays on disk; closing forces a reopen, which repairs it.
            logger.error("%s: cannot truncate back to %d bytes after a failed write: %s",
                         self.path, start, exc,
                         extra={"sink": self.name, "path": self.path,
                                "reason": type(exc).__name__})
            self._close_sync()

    def _maybe_rotate(self, incoming: int) -> None:
        if not self._regular:
            return
        now = self._clock()
        period = self._period_of(now)
        if self._size == 0:
            self._period = period
            return
        by_size = self.max_bytes is not None and self._size + incoming > self.max_bytes
        if by_size or period != self._period:
            self._rotate(now)

    def _rotate(self, now: float) -> None:
        self._close_sync()
        target = _free_name(f"{self.path}.{time.strftime(ROTATED_STAMP_FORMAT, time.gmtime(now))}")
        os.rename(self.path, target)
        logger.info("%s: rotated to %s", self.path, target,
                    extra={"sink": self.name, "path": target, "reason": "rotated"})
        self._open_sync()
        self._prune()

    def _prune(self) -> None:
        if self.keep is None:
            return
        directory, base = os.path.split(self.path)
        pattern = re.compile(re.escape(base) + r"\.(\d{8}T\d{6})(?:\.(\d+))?")
        matches = (pattern.fullmatch(entry) for entry in os.listdir(directory or "."))
        rotated = sorted((m[1], int(m[2] or 0), m[0]) for m in matches if m is not None)
        for _, _, entry in rotated[: max(0, len(rotated) - self.keep)]:
            try:
                os.remove(os.path.join(directory, entry))
            except OSError as exc:
                logger.warning("%s: cannot remove old rotated file %s: %s", self.path, entry, exc,
                               extra={"sink": self.name, "path": entry,
                                      "reason": type(exc).__name__})

    def _close_sync(self) -> None:
        file, self._file = self._file, None
        if file is not None:
            file.close()

    def _period_of(self, when: float) -> int:
        return int(when // self.rotate_interval_s) if self.rotate_interval_s else 0


def _path_problem(path: str, *, rotating: bool) -> str | None:
    """Why ``path`` cannot be appended to (and rotated, if ``rotating``), or ``None``."""
    directory = os.path.dirname(path) or "."
    try:
        st = os.stat(path)
    except FileNotFoundError:
        st = None
    except OSError as exc:  # e.g. ENOTDIR: a parent is a file
        return f"cannot use {path}: {exc.strerror or exc}"
    if st is not None and stat.S_ISDIR(st.st_mode):
        return f"{path} is a directory"
    if st is not None and not os.access(path, os.W_OK):
        return f"{path} is not writable by this user (uid {os.geteuid()})"
    if st is not None and not (rotating and stat.S_ISREG(st.st_mode)):
        return None  # appending to it is all that is needed
    if not os.path.isdir(directory):
        return f"directory {directory} does not exist"
    if not os.access(directory, os.W_OK | os.X_OK):
        return f"directory {directory} is not writable by this user (uid {os.geteuid()})"
    return None


def _write_all(file: io.FileIO, data: bytes) -> None:
    """Write every byte (a raw write may be short, e.g. at a file-size limit)."""
    view = memoryview(data)
    while view:
        written = file.write(view)
        if not written:
            raise OSError(errno.EIO, "write made no progress")
        view = view[written:]


def _end_of_last_line(handle: io.BufferedRandom, size: int) -> int:
    """Offset just past the last ``\\n`` before ``size`` (0 if there is none)."""
    end = size
    while end > 0:
        start = max(0, end - TAIL_SCAN_CHUNK)
        handle.seek(start)
        newline = handle.read(end - start).rfind(b"\n")
        if newline >= 0:
            return start + newline + 1
        end = start
    return 0


def _free_name(candidate: str) -> str:
    """``candidate``, or ``candidate.1``, ``.2`` … whichever does not exist yet."""
    name, counter = candidate, 0
    while os.path.exists(name):
        counter += 1
        name = f"{candidate}.{counter}"
    return name
