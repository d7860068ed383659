"""Spool-and-replay for queue sinks: a bounded on-disk FIFO, and the sink that uses it.

* :class:`Spool`: a bounded on-disk FIFO of whole records that survives a process restart.
* :class:`sinks.delivery.SpooledSink` (its own module): a sink that publishes through a
  broker link (:mod:`sinks.nats`, :mod:`sinks.redis`), puts records in this spool while the
  broker is down and replays them, in order, once it is back.

The spool
---------

Layout of the spool directory::

    00000000000000000001.seg     segment files, append-only, numbered in write order
    00000000000000000002.seg
    ack                          "<segment> <offset>\\n": the first unacknowledged record

A segment is a sequence of frames ``length (u32 BE) | crc32(payload) (u32 BE) | payload``;
a payload is one encoded record. A batch of frames is written with one unbuffered ``write``
(no fsync unless ``sync=True``: after a process crash the data is in the OS; a power cut may
lose the unsynced tail, which is then repaired like a torn write).

* :meth:`Spool.open` scans every segment, checks every frame's length and CRC, truncates a
  segment at its first bad frame (a torn tail after a crash; logged), deletes segments that
  are wholly acknowledged, and resumes.
* :meth:`Spool.append` writes a whole batch or nothing: when the frames would take the
  spool's files past ``max_bytes`` it returns ``False`` (the caller applies its overflow
  policy and counts it). The size bound counts bytes on disk, acknowledged ones included
  until their segment is deleted; so new segments start every ``segment_bytes``.
* :meth:`Spool.read` returns the oldest unacknowledged records *without* consuming them;
  :meth:`Spool.commit` acknowledges such a batch once it was delivered: it persists the new
  read position (written to a temporary file and renamed over ``ack``) and deletes
  segments that are fully delivered. When nothing is pending, every segment is deleted.

Delivery is at-least-once: a crash between delivering a batch and committing it replays that
batch on the next open (queue sinks make replays harmless with dedupe ids).

All file I/O runs in a worker thread (one ``to_thread`` call per method call). Methods must
not be called concurrently (a sink calls them from its single runner task).

The spool holds :class:`sinks.delivery.Message` values (msgpack): the record's NDJSON bytes
plus its route and dedupe id, so a replay sends exactly what the first attempt sent.
"""

from __future__ import annotations

import io
import logging
import os
import re
import struct
import zlib
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import anyio
import anyio.to_thread

__all__ = [
    "Spool",
    "SpoolBatch",
    "SpoolCorrupt",
    "FRAME_HEADER_BYTES",
    "framed_size",
]

logger = logging.getLogger(__name__)

FRAME_HEADER: Final = struct.Struct(">II")
FRAME_HEADER_BYTES: Final = FRAME_HEADER.size
SEGMENT_SUFFIX: Final = ".seg"
ACK_FILE: Final = "ack"
DEFAULT_SEGMENT_BYTES: Final = 16 * 2**20
MIN_SEGMENT_BYTES: Final = 4096
SEGMENTS_PER_SPOOL: Final = 8
"""Default segment size is ``max_bytes / SEGMENTS_PER_SPOOL`` (capped): bounds the acknowledged
bytes a head segment can pin to about an eighth of the spool."""
READ_BUFFER_BYTES: Final = 2**20


_SEGMENT_RE: Final = re.compile(r"(\d{20})" + re.escape(SEGMENT_SUFFIX))


class SpoolCorrupt(Exception):
    """The spool directory holds something we cannot make sense of (e.g. a bad ``ack`` file)."""


def framed_size(payloads: Sequence[bytes]) -> int:
    """Bytes ``payloads`` take on disk once framed."""
    return sum(len(payload) for payload in payloads) + FRAME_HEADER_BYTES * len(payloads)


@dataclass(frozen=True, slots=True)
class _Position:
    segment: int
    offset: int


@dataclass(frozen=True, slots=True)
class SpoolBatch:
    """The oldest unacknowledged records, as returned by :meth:`Spool.read`.

    Attributes:
        payloads: the records, oldest first.
        start: read position of the first one (internal).
        end: read position after the last one (internal).
    """

    payloads: list[bytes]
    start: _Position
    end: _Position

    def __len__(self) -> int:
        return len(self.payloads)


@dataclass(slots=True)
class _Segment:
    number: int
    path: str
    size: int
    records: int


class Spool:
    """A bounded, persistent FIFO of byte records; see the module docstring.

    Args:
        path: the spool directory (created on open).
        max_bytes: bound on the bytes of its segment files.
        segment_bytes: start a new segment once the current one reaches this size; default
            ``max_bytes / 8``, between 4 KiB and 16 MiB.
        sync: fsync segments and the ack file after each write (slower; survives power cuts).

    Attributes:
        pending: records appended and not yet committed.
        disk_bytes: bytes of the segment files now.

    Raises:
        ValueError: ``max_bytes`` or ``segment_bytes`` below one byte.
    """

    def __init__(self, path: str | os.PathLike[str], *, max_bytes: int,
                 segment_bytes: int | None = None, sync: bool = False) -> None:
        if max_bytes < 1:
            raise ValueError(f"max_bytes must be positive, got {max_bytes}")
        if segment_bytes is not None and segment_bytes < 1:
            raise ValueError(f"segment_bytes must be positive, got {segment_bytes}")
        self.path: Final = os.fspath(path)
        self.max_bytes: Final = max_bytes
        self.segment_bytes: Final = segment_bytes or max(
            MIN_SEGMENT_BYTES, min(DEFAULT_SEGMENT_BYTES, max_bytes // SEGMENTS_PER_SPOOL))
        self.sync: Final = sync
        self.pending = 0
        self.disk_bytes = 0
        self._segments: deque[_Segment] = deque()
        self._read = _Position(0, 0)
        self._writer: io.FileIO | None = None

    def __repr__(self) -> str:
        return (f"<Spool {self.path} pending={self.pending} disk_bytes={self.disk_bytes}"
                f"/{self.max_bytes}>")

    def fits(self, payloads: Sequence[bytes]) -> bool:
        """Whether ``payloads`` could ever be appended (they fit in an empty spool)."""
        return framed_size(payloads) <= self.max_bytes

    async def open(self) -> None:
        """Create or recover the spool directory (see the module docstring).

        Raises:
            OSError: the directory cannot be created or read.
            SpoolCorrupt: the ``ack`` file is unreadable.
        """
        await anyio.to_thread.run_sync(self._open_sync)

    async def append(self, payloads: Sequence[bytes]) -> bool:
        """Append every payload, in order, or none.

        Returns:
            ``False`` if they do not fit under ``max_bytes`` now (nothing written).

        Raises:
            OSError: the write failed (nothing of it is left behind).
        """
        if not payloads:
            return True
        if self.disk_bytes + framed_size(payloads) > self.max_bytes:
            return False
        await anyio.to_thread.run_sync(self._append_sync, payloads)
        return True

    async def read(self, limit: int) -> SpoolBatch:
        """Up to ``limit`` of the oldest unacknowledged records (not consumed).

        Raises:
            OSError: a segment cannot be read.
        """
        return await anyio.to_thread.run_sync(self._read_sync, limit)

    async def commit(self, batch: SpoolBatch) -> None:
        """Acknowledge ``batch``, the last :meth:`read`; deletes fully delivered segments.

        Raises:
            ValueError: ``batch`` does not start at the current read position.
            OSError: the ack file cannot be written.
        """
        if batch.start != self._read:
            raise ValueError(f"batch starts at {batch.start}, not at the read position "
                             f"{self._read}")
        await anyio.to_thread.run_sync(self._commit_sync, batch)

    async def aclose(self) -> None:
        """Close the open segment (idempotent); pending records stay on disk."""
        await anyio.to_thread.run_sync(self._close_writer)

    # -- worker-thread side ---------------------------------------------------------------

    def _open_sync(self) -> None:
        self._close_writer()
        os.makedirs(self.path, exist_ok=True)
        self._segments.clear()
        self.pending = 0
        self.disk_bytes = 0
        ack = self._load_ack()
        for number in self._segment_numbers():
            path = self._segment_path(number)
            if number < ack.segment:
                os.remove(path)  # wholly delivered before the last stop
                continue
            self._segments.append(self._scan(number, path))
        self._read = self._resume_position(ack)
        self._reset_if_drained()
        self.disk_bytes = sum(segment.size for segment in self._segments)
        if self.pending:
            logger.info("spool %s: %d records (%d bytes on disk) to replay", self.path,
                        self.pending, self.disk_bytes,
                        extra={"path": str(self.path), "records": self.pending})

    def _segment_numbers(self) -> list[int]:
        matches = (_SEGMENT_RE.fullmatch(entry) for entry in os.listdir(self.path))
        return sorted(int(match[1]) for match in matches if match is not None)

    def _segment_path(self, number: int) -> str:
        return os.path.join(self.path, f"{number:020d}{SEGMENT_SUFFIX}")

    def _load_ack(self) -> _Position:
        try:
            with open(os.path.join(self.path, ACK_FILE), "rb") as handle:
                text = handle.read().decode("ascii", "replace")
        except FileNotFoundError:
            return _Position(0, 0)
        try:
            segment, offset = (int(part) for part in text.split())
        except ValueError:
            raise SpoolCorrupt(f"{self.path}/{ACK_FILE}: not '<segment> <offset>': "
                               f"{text[:40]!r}") from None
        return _Position(segment, offset)

    def _scan(self, number: int, path: str) -> _Segment:
        """Count a segment's valid frames; truncate it at the first bad one."""
        with open(path, "r+b") as handle:
            data = handle.read()
            end, records = _valid_prefix(data)
            if end < len(data):
                handle.truncate(end)
                logger.warning("spool %s: segment %d: dropped %d bytes of a torn or corrupt "
                               "record at offset %d", self.path, number, len(data) - end, end,
                               extra={"path": str(path), "reason": "torn_record"})
        return _Segment(number, path, end, records)

    def _resume_position(self, ack: _Position) -> _Position:
        """The first unacknowledged record; also sets :attr:`pending`."""
        pending = 0
        position: _Position | None = None
        for segment in self._segments:
            if segment.number == ack.segment:
                offset = min(ack.offset, segment.size)
                pending += self._count_from(segment, offset)
                position = _Position(segment.number, offset)
            else:
                pending += segment.records
                position = position or _Position(segment.number, 0)
        self.pending = pending
        if position is None:
            position = _Position(ack.segment + 1, 0)
        return position

    def _count_from(self, segment: _Segment, offset: int) -> int:
        with open(segment.path, "rb") as handle:
            handle.seek(offset)
            return _valid_prefix(handle.read())[1]

    def _reset_if_drained(self) -> None:
        """Nothing pending: delete every segment and point the read position past them."""
        if not self.pending:
            for segment in self._segments:
                os.remove(segment.path)
            last = self._segments[-1].number if self._segments else self._read.segment - 1
            self._segments.clear()
            self._read = _Position(max(last, self._read.segment - 1) + 1, 0)
            self._write_ack(self._read)

    def _append_sync(self, payloads: Sequence[bytes]) -> None:
        data = bytearray()
        for payload in payloads:
            data += FRAME_HEADER.pack(len(payload), zlib.crc32(payload))
            data += payload
        writer, segment = self._writable()
        start = segment.size
        try:
            _write_all(writer, data)
            if self.sync:
                os.fsync(writer.fileno())
        except OSError:
            self._truncate_back(writer, start)
            raise
        segment.size += len(data)
        segment.records += len(payloads)
        self.disk_bytes += len(data)
        self.pending += len(payloads)

    def _writable(self) -> tuple[io.FileIO, _Segment]:
        """The segment to append to, starting a new one when the last is big enough."""
        segments = self._segments
        if not segments or segments[-1].size >= self.segment_bytes:
            self._close_writer()
            number = segments[-1].number + 1 if segments else self._read.segment
            segments.append(_Segment(number, self._segment_path(number), 0, 0))
        if self._writer is None:
            self._writer = open(segments[-1].path, "ab", buffering=0)
        return self._writer, segments[-1]

    def _truncate_back(self, writer: io.FileIO, size: int) -> None:
        try:
            writer.truncate(size)
        except OSError as exc:
            # Left for the next open to repair (it truncates at the first bad frame).
            logger.error("spool %s: cannot truncate a failed write back to %d bytes: %s",
                         self.path, size, exc,
                         extra={"path": str(self.path), "reason": type(exc).__name__})
            self._close_writer()

    def _read_sync(self, limit: int) -> SpoolBatch:
        payloads: list[bytes] = []
        position = self._read
        for segment in self._segments:
            if segment.number < position.segment:
                continue
            offset = position.offset if segment.number == position.segment else 0
            offset = _read_frames(segment, offset, limit, payloads)
            position = _Position(segment.number, offset)
            if len(payloads) >= limit:
                break
        return SpoolBatch(payloads, self._read, position)

    def _commit_sync(self, batch: SpoolBatch) -> None:
        self.pending -= len(batch)
        self._read = batch.end
        if not self.pending:
            self._drop_all()
            return
        self._write_ack(batch.end)
        segments = self._segments
        while len(segments) > 1 and segments[0].number < batch.end.segment:
            self._delete(segments.popleft())
        if segments and segments[0].number == batch.end.segment \
                and batch.end.offset >= segments[0].size and len(segments) > 1:
            self._delete(segments.popleft())

    def _drop_all(self) -> None:
        """Nothing pending: delete every segment; the next append starts a new one."""
        self._close_writer()
        last = self._segments[-1].number if self._segments else self._read.segment
        while self._segments:
            self._delete(self._segments.popleft())
        self._read = _Position(last + 1, 0)
        self._write_ack(self._read)

    def _delete(self, segment: _Segment) -> None:
        os.remove(segment.path)
        self.disk_bytes -= segment.size

    def _write_ack(self, position: _Position) -> None:
        final = os.path.join(self.path, ACK_FILE)
        temporary = final + ".tmp"
        with open(temporary, "wb") as handle:
            handle.write(f"{position.segment} {position.offset}\n".encode("ascii"))
            if self.sync:
                handle.flush()
                os.fsync(handle.fileno())
        os.replace(temporary, final)

    def _close_writer(self) -> None:
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.close()


def _valid_prefix(data: bytes) -> tuple[int, int]:
    """``(end, records)`` of the longest run of whole frames with good CRCs at the start."""
    view = memoryview(data)
    offset = records = 0
    size = len(data)
    unpack = FRAME_HEADER.unpack_from
    while offset + FRAME_HEADER_BYTES <= size:
        length, crc = unpack(view, offset)
        start = offset + FRAME_HEADER_BYTES
        if start + length > size or zlib.crc32(view[start:start + length]) != crc:
            break
        offset = start + length
        records += 1
    return offset, records


def _read_frames(segment: _Segment, offset: int, limit: int, out: list[bytes]) -> int:
    """Append frames of ``segment`` from ``offset`` to ``out`` up to ``limit``; new offset."""
    if offset >= segment.size or len(out) >= limit:
        return offset
    with open(segment.path, "rb", buffering=READ_BUFFER_BYTES) as handle:
        handle.seek(offset)
        while offset < segment.size and len(out) < limit:
            length, _ = FRAME_HEADER.unpack(handle.read(FRAME_HEADER_BYTES))
            out.append(handle.read(length))
            offset += FRAME_HEADER_BYTES + length
    return offset


def _write_all(file: io.FileIO, data: bytearray) -> None:
    view = memoryview(data)
    while view:
        written = file.write(view)
        if not written:
            raise OSError("spool write made no progress")
        view = view[written:]
