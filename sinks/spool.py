"""Spool-and-replay for queue sinks: a bounded on-disk FIFO, and the sink that uses it.

* :class:`Spool`: a bounded on-disk FIFO of whole records that survives a process restart.
* :class:`SpooledSink`: a sink that publishes through a :class:`BrokerLink` (one per broker:
  :mod:`sinks.nats`, :mod:`sinks.redis`), puts records in the spool while the broker is down
  and replays them, in order, once it is back. :func:`message_id` is the content-derived
  dedupe id both queue sinks send.

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

The spool holds :class:`Message` values (msgpack): the record's NDJSON bytes plus its route
and dedupe id, so a replay sends exactly what the first attempt sent.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import random
import re
import struct
import zlib
from collections import deque
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Final, Protocol, TypeVar, get_args

import anyio
import anyio.to_thread
import msgspec

from sinks.base import SinkClosed, SinkRejected, SinkUnavailable, os_error_detail
from sinks.records import Book, BookDelta, Record, encode

__all__ = [
    "Spool",
    "SpoolBatch",
    "SpoolCorrupt",
    "FRAME_HEADER_BYTES",
    "framed_size",
    "Message",
    "message_id",
    "record_kind",
    "to_message",
    "LinkDown",
    "BrokerLink",
    "DeliveryStats",
    "SpooledSink",
    "reconnect_backoff",
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
REPLAY_CHUNK: Final = 512
"""Spooled records published per round trip during a replay."""
DEFAULT_REPLAY_SLICE_S: Final = 0.5
RECONNECT_INITIAL_S: Final = 0.1
RECONNECT_CAP_S: Final = 5.0
RECONNECT_JITTER: Final = 0.2

_T = TypeVar("_T")

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
                        self.pending, self.disk_bytes)

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
                               "record at offset %d", self.path, number, len(data) - end, end)
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
                         self.path, size, exc)
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


# -- spooled delivery to a broker -------------------------------------------------------------


class Message(msgspec.Struct, frozen=True, array_like=True, gc=False):
    """One record ready for a broker; also what the spool stores (msgpack-encoded).

    Attributes:
        route: where it goes (NATS subject, Redis stream key).
        msg_id: the dedupe id, see :func:`message_id`.
        kind: the record's ``type``.
        market: the record's market, if it has one.
        seq: the record's ``seq``, if it has one.
        data: the record as one NDJSON line without the newline.
    """

    route: str
    msg_id: str
    kind: str
    market: str | None
    seq: int | None
    data: bytes


_MESSAGE_ENCODER: Final = msgspec.msgpack.Encoder()
_MESSAGE_DECODER: Final = msgspec.msgpack.Decoder(Message)
_RECORD_TAGS: Final[dict[type, str]] = {
    cls: str(cls.__struct_config__.tag) for cls in get_args(Record)
}
_RECV_TS_KEY: Final = b'"recv_ts":'
_NUMBER_RE: Final = re.compile(rb"-?[0-9]*")
MESSAGE_ID_BYTES: Final = 16
KEEPS_RECV_TS: Final = frozenset({"status"})
"""Record types whose ``recv_ts`` is part of their id: a ``status`` describes the daemon's own
connection, so two of them are two events even when they read the same."""


def record_kind(record: Record) -> str:
    """The record's ``type`` tag (``book``, ``book_delta``, ``status`` …)."""
    return _RECORD_TAGS[type(record)]


_ID_ENCODER: Final = msgspec.json.Encoder()


def message_id(kind: str, data: bytes) -> str:
    """Dedupe id of an encoded record: blake2b-128 (hex) of its bytes without ``recv_ts``.

    ``recv_ts`` is the daemon's local receive time, the one field in which two daemons fed
    the same venue events differ; everything else (``seq`` included) is content, so two
    daemons that emit the same record produce the same id and a broker that dedupes by id
    (JetStream ``Nats-Msg-Id``) keeps one copy. The digits of the first ``"recv_ts":`` key
    are cut out (records encode ``recv_ts`` before any free-form field, and a JSON string
    cannot contain that key unescaped). :data:`KEEPS_RECV_TS` types hash everything.
    """
    digest = hashlib.blake2b(digest_size=MESSAGE_ID_BYTES)
    start = data.find(_RECV_TS_KEY) if kind not in KEEPS_RECV_TS else -1
    if start < 0:
        digest.update(data)
        return digest.hexdigest()
    cut = start + len(_RECV_TS_KEY)
    match = _NUMBER_RE.match(data, cut)
    end = match.end() if match is not None else cut
    digest.update(memoryview(data)[:cut])
    digest.update(memoryview(data)[end:])
    return digest.hexdigest()


def book_message_id(record: Book | BookDelta) -> str:
    """Dedupe id of a book record from venue content only: no ``seq``, no ``recv_ts``.

    ``seq`` counts one daemon's own emissions and ``recv_ts`` is its local clock, so both
    differ between the two daemons of an active-active pair; the exchange timestamp, the
    market and the levels do not. Two daemons holding the same book emit the same delta
    for the same venue update, hence the same id, and JetStream keeps one copy.
    """
    content = (type(record).__name__, record.market, record.token, record.ts,
               record.best_bid, record.best_ask, record.bids, record.asks)
    return hashlib.blake2b(_ID_ENCODER.encode(content),
                           digest_size=MESSAGE_ID_BYTES).hexdigest()


def to_message(record: Record, route: Callable[[str, str | None], str]) -> Message:
    """Encode ``record`` once into a :class:`Message` routed by ``route(kind, market)``."""
    kind = _RECORD_TAGS[type(record)]
    data = encode(record)
    market: str | None = getattr(record, "market", None)
    seq: int | None = getattr(record, "seq", None)
    if type(record) is Book or type(record) is BookDelta:
        msg_id = book_message_id(record)
    else:
        msg_id = message_id(kind, data)
    return Message(route(kind, market), msg_id, kind, market, seq, data)


class LinkDown(Exception):
    """The broker cannot be reached or did not confirm a publish; raised by a link."""


class BrokerLink(Protocol):
    """One broker connection at a time, behind the spooled delivery (the seam for fakes).

    A link maps its client library's exceptions to :class:`LinkDown` (retry later, the
    outcome of the publish is unknown) or a :class:`~sinks.base.SinkError` (configuration
    that cannot work, e.g. a JetStream stream with other settings).
    """

    name: str

    def message(self, record: Record) -> Message:
        """Encode and route one record."""
        ...

    async def connect(self) -> None:
        """(Re)connect and prepare (create or verify the stream).

        Raises:
            LinkDown: unreachable. SinkError: misconfigured for good.
        """
        ...

    async def publish(self, messages: Sequence[Message]) -> int:
        """Publish in order and wait until the broker confirmed all of them.

        Returns:
            How many the broker refused for good (logged by the link, not retried).

        Raises:
            LinkDown: the connection failed; some messages may have been stored.
        """
        ...

    async def close(self) -> None:
        """Drop the connection; never raises."""
        ...


class DeliveryStats:
    """Counters of a spooled sink (the fan-out's :class:`~sinks.fanout.SinkStats` are separate).

    Attributes:
        published: records the broker confirmed (replays included).
        rejected: records the broker refused for good (dropped).
        spooled: records written to the spool.
        replayed: spooled records delivered.
        spool_full: batches refused because the spool was full (the fan-out's overflow
            policy then applies to them).
        outages: times the broker went from up to down.
        connected: whether the link is up now.
    """

    __slots__ = ("published", "rejected", "spooled", "replayed", "spool_full", "outages",
                 "connected")

    def __init__(self) -> None:
        self.published = 0
        self.rejected = 0
        self.spooled = 0
        self.replayed = 0
        self.spool_full = 0
        self.outages = 0
        self.connected = False

    def __repr__(self) -> str:
        fields = " ".join(f"{name}={getattr(self, name)}" for name in self.__slots__)
        return f"<DeliveryStats {fields}>"


def reconnect_backoff() -> Iterator[float]:
    """Reconnect delays: 0.1 s doubling to 5 s, each ±20 %."""
    delay = RECONNECT_INITIAL_S
    while True:
        yield delay * (1.0 + RECONNECT_JITTER * (2.0 * random.random() - 1.0))
        delay = min(RECONNECT_CAP_S, delay * 2.0)


class SpooledSink:
    """A :class:`~sinks.base.Sink` that publishes through a :class:`BrokerLink` and spools.

    With a spool: while the broker is down, batches go to the spool (whole records, in
    order) and ``write`` succeeds; each ``write`` tries to reconnect once the backoff delay
    has passed (nothing reconnects between writes); once connected, the spool is replayed in
    order (for at most ``replay_slice_s`` per ``write``, so the fan-out keeps draining)
    before any new batch is published directly. A batch whose publish failed half-way goes
    to the spool whole and is replayed with the same ids. Only when the spool is full does
    ``write`` raise :class:`~sinks.base.SinkUnavailable` (counted in
    ``stats.spool_full``, logged once per episode), so the fan-out queue fills and its
    overflow policy applies. ``open`` succeeds with the broker down (records spool), and
    what a previous process left in the spool is replayed first. While no records arrive,
    the fan-out calls :meth:`flush` (the sink is :class:`~sinks.fanout.Flushable`), and
    :meth:`aclose` replays what it can.

    Without a spool, a failed publish raises :class:`~sinks.base.SinkUnavailable` at once
    and the fan-out retries the same batch (same ids).

    Args:
        name: the sink's label.
        link: the broker connection.
        spool: the outage spool, or ``None``.
        backoff: reconnect delays (default :func:`reconnect_backoff`).
        replay_slice_s: longest a ``write`` spends replaying the spool.

    Attributes:
        stats: :class:`DeliveryStats`.
    """

    def __init__(self, name: str, link: BrokerLink, *, spool: Spool | None = None,
                 backoff: Callable[[], Iterator[float]] | None = None,
                 replay_slice_s: float = DEFAULT_REPLAY_SLICE_S) -> None:
        self.name = name
        self.link = link
        self.spool = spool
        self.stats = DeliveryStats()
        self._backoff = backoff or reconnect_backoff
        self._delays: Iterator[float] | None = None
        self._next_attempt = 0.0
        self._replay_slice_s = replay_slice_s
        self._spool_opened = False
        self._full_logged = False

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}>"

    async def open(self) -> None:
        """Open the spool, then connect; with a spool, a broker that is down is no error.

        Raises:
            SinkUnavailable: no spool and the broker is down, or the spool cannot be opened.
            SinkClosed: the spool directory is corrupt, or the broker is misconfigured.
        """
        if self.spool is not None and not self._spool_opened:
            await self._open_spool(self.spool)
        try:
            await self.link.connect()
        except LinkDown as exc:
            if self.spool is None:
                raise SinkUnavailable(self.name, str(exc)) from exc
            logger.warning("sink %s: broker unavailable at start, spooling: %s", self.name, exc)
            self._schedule_retry()
        else:
            self._connected()

    async def write(self, batch: Sequence[Record]) -> None:
        """Publish ``batch``, or spool it while the broker is down (see the class docstring).

        Raises:
            SinkUnavailable: the broker is down and there is no spool or it is full.
            SinkRejected: the batch is larger than the whole spool.
        """
        messages = [self.link.message(record) for record in batch]
        if self.spool is None:
            await self._publish_or_raise(messages)
            return
        spool = self.spool
        if await self._ensure_connected() and spool.pending:
            await self._replay(spool)
        if self.stats.connected and not spool.pending:
            try:
                await self._publish(messages)
                return
            except LinkDown as exc:
                await self._lost(exc)
        await self._append(spool, messages)

    @property
    def needs_flush(self) -> bool:
        """Spooled records wait for delivery (:class:`~sinks.fanout.Flushable`)."""
        return self.spool is not None and self._spool_opened and self.spool.pending > 0

    async def flush(self) -> None:
        """Reconnect if due and replay the spool for up to ``replay_slice_s``.

        The fan-out calls this while the sink's queue is idle, so spooled records do not wait
        for the next record to arrive.

        Raises:
            SinkUnavailable: the spool cannot be read.
        """
        spool = self.spool
        if spool is not None and spool.pending and await self._ensure_connected():
            await self._replay(spool)

    async def aclose(self) -> None:
        """Replay what it can, then close the connection and the spool.

        The replay goes on while it makes progress; the caller bounds it in time (the fan-out
        closes sinks within its drain timeout). What is left stays on disk for the next start.
        """
        try:
            await self._final_replay()
        except SinkUnavailable as exc:
            logger.warning("sink %s: final replay failed: %s", self.name, exc)
        await self.link.close()
        self.stats.connected = False
        if self.spool is not None:
            try:
                await self.spool.aclose()
            except OSError as exc:
                logger.warning("sink %s: closing the spool failed: %s", self.name, exc)

    # -- internals ------------------------------------------------------------------------

    async def _final_replay(self) -> None:
        spool = self.spool
        while spool is not None and self.needs_flush:
            before = spool.pending
            await self.flush()
            if not self.stats.connected or spool.pending >= before:
                return

    async def _open_spool(self, spool: Spool) -> None:
        try:
            await spool.open()
        except OSError as exc:
            raise SinkUnavailable(self.name, os_error_detail("open spool", spool.path,
                                                             exc)) from exc
        except SpoolCorrupt as exc:
            raise SinkClosed(self.name, str(exc)) from exc
        self._spool_opened = True

    async def _publish_or_raise(self, messages: list[Message]) -> None:
        if not self.stats.connected:
            try:
                await self.link.connect()
            except LinkDown as exc:
                raise SinkUnavailable(self.name, str(exc)) from exc
            self._connected()
        try:
            await self._publish(messages)
        except LinkDown as exc:
            await self._lost(exc)
            raise SinkUnavailable(self.name, str(exc)) from exc

    async def _publish(self, messages: Sequence[Message]) -> None:
        rejected = await self.link.publish(messages)
        self.stats.published += len(messages) - rejected
        self.stats.rejected += rejected

    async def _ensure_connected(self) -> bool:
        """Connected, or reconnected now if the backoff delay has passed."""
        if self.stats.connected:
            return True
        if anyio.current_time() < self._next_attempt:
            return False
        try:
            await self.link.connect()
        except LinkDown as exc:
            logger.debug("sink %s: reconnect failed: %s", self.name, exc)
            self._schedule_retry()
            return False
        self._connected()
        return True

    def _connected(self) -> None:
        if self._delays is not None:
            pending = self.spool.pending if self.spool is not None else 0
            logger.info("sink %s: broker is back; %d spooled records to replay", self.name,
                        pending)
        self.stats.connected = True
        self._delays = None

    async def _lost(self, exc: LinkDown) -> None:
        self.stats.outages += 1
        logger.warning("sink %s: broker unavailable, %s: %s", self.name,
                       "spooling" if self.spool is not None else "retrying", exc)
        await self.link.close()
        self.stats.connected = False
        self._schedule_retry()

    def _schedule_retry(self) -> None:
        self.stats.connected = False
        if self._delays is None:
            self._delays = self._backoff()
        self._next_attempt = anyio.current_time() + next(self._delays)

    async def _replay(self, spool: Spool) -> None:
        """Deliver spooled records in order until empty, down, or the time slice is used."""
        deadline = anyio.current_time() + self._replay_slice_s
        while spool.pending and anyio.current_time() < deadline:
            chunk = await self._spool_io("read", spool.read(REPLAY_CHUNK))
            messages = self._decode(chunk.payloads)
            try:
                await self._publish(messages)
            except LinkDown as exc:
                await self._lost(exc)
                return
            await self._spool_io("commit", spool.commit(chunk))
            self.stats.replayed += len(chunk)
            self.stats.rejected += len(chunk) - len(messages)

    def _decode(self, payloads: list[bytes]) -> list[Message]:
        messages: list[Message] = []
        for payload in payloads:
            try:
                messages.append(_MESSAGE_DECODER.decode(payload))
            except msgspec.DecodeError as exc:  # CRC-valid but unreadable: count, skip
                logger.error("sink %s: dropping an unreadable spooled record: %s",
                             self.name, exc)
        return messages

    async def _append(self, spool: Spool, messages: list[Message]) -> None:
        payloads = [_MESSAGE_ENCODER.encode(message) for message in messages]
        if not spool.fits(payloads):
            raise SinkRejected(self.name, f"a batch of {framed_size(payloads)} bytes can "
                                          f"never fit the {spool.max_bytes}-byte spool")
        if not await self._spool_io("append", spool.append(payloads)):
            self.stats.spool_full += 1
            if not self._full_logged:
                self._full_logged = True
                logger.warning("sink %s: spool %s is full (%d records, %d bytes); the "
                               "overflow policy applies", self.name, spool.path,
                               spool.pending, spool.disk_bytes)
            raise SinkUnavailable(self.name, "broker down and spool full")
        self._full_logged = False
        self.stats.spooled += len(payloads)

    async def _spool_io(self, op: str, call: Awaitable[_T]) -> _T:
        try:
            return await call
        except OSError as exc:
            raise SinkUnavailable(self.name, os_error_detail(f"spool {op}", self.name,
                                                             exc)) from exc
