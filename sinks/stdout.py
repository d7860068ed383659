"""NDJSON to standard output (or any binary stream): one record per line, flushed per batch.

The blocking ``write``/``flush`` runs in a worker thread, so a slow reader (``| jq``, a full
pipe) never blocks the event loop; it only fills this sink's fan-out queue.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from collections.abc import Sequence
from typing import BinaryIO, Final

import anyio.to_thread

from sinks.base import SinkClosed, SinkUnavailable, os_error_detail
from sinks.records import Record, encode_lines

__all__ = ["StdoutSink"]

logger = logging.getLogger(__name__)

DEFAULT_NAME: Final = "stdout"


class StdoutSink:
    """Writes each batch as NDJSON lines to a binary stream and flushes it.

    Args:
        stream: where to write; default ``sys.stdout.buffer``, resolved at ``open()``.
        name: the sink's label.

    EPIPE (the reader went away, ``| head``) raises :class:`SinkClosed`. When writing to the
    real stdout, fd 1 is then pointed at ``/dev/null`` so the interpreter's final flush does
    not print a ``BrokenPipeError`` at exit (the recipe from the Python ``signal`` docs).

    A write blocked on a stalled reader is abandoned on cancellation (shutdown stays bounded by
    the fan-out's drain timeout); a lock keeps an abandoned write from interleaving with a
    later one.
    """

    def __init__(self, stream: BinaryIO | None = None, *, name: str = DEFAULT_NAME) -> None:
        self.name = name
        self._stream = stream
        self._is_real_stdout = stream is None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"<StdoutSink {self.name}>"

    async def open(self) -> None:
        """Resolve the stream (``sys.stdout.buffer`` by default).

        Raises:
            SinkClosed: there is no stdout (``sys.stdout`` is ``None``).
        """
        if self._stream is None:
            if sys.stdout is None:
                raise SinkClosed(self.name, "the process has no stdout")
            self._stream = sys.stdout.buffer

    async def write(self, batch: Sequence[Record]) -> None:
        """Encode ``batch`` into one buffer and write + flush it in a worker thread.

        Raises:
            SinkClosed: the reader closed the pipe (EPIPE).
            SinkUnavailable: another ``OSError`` (e.g. ENOSPC when redirected to a file).
        """
        buffer = encode_lines(batch)
        await anyio.to_thread.run_sync(self._write_sync, buffer, abandon_on_cancel=True)

    async def aclose(self) -> None:
        """Flush the stream; the stream itself is left open (we do not own stdout)."""
        if self._stream is not None:
            await anyio.to_thread.run_sync(self._flush_quietly, abandon_on_cancel=True)

    def _write_sync(self, buffer: bytes) -> None:
        stream = self._stream
        if stream is None:
            raise SinkUnavailable(self.name, "write before open()")
        with self._lock:
            try:
                stream.write(buffer)
                stream.flush()
            except BrokenPipeError as exc:
                self._silence_stdout()
                raise SinkClosed(self.name, "the reader closed the pipe (EPIPE)") from exc
            except OSError as exc:
                raise SinkUnavailable(self.name, os_error_detail("write", self.name, exc)) from exc

    def _flush_quietly(self) -> None:
        with self._lock:
            try:
                if self._stream is not None and not self._stream.closed:
                    self._stream.flush()
            except OSError as exc:
                logger.debug("%s: flush on close failed: %s", self.name, exc)

    def _silence_stdout(self) -> None:
        """Point fd 1 at /dev/null so the exit-time flush of leftover bytes cannot fail."""
        if not self._is_real_stdout:
            return
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            try:
                os.dup2(devnull, sys.stdout.fileno())
            finally:
                os.close(devnull)
        except (OSError, ValueError) as exc:
            logger.debug("%s: could not redirect stdout to %s: %s", self.name, os.devnull, exc)
