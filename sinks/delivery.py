"""Spooled delivery to a broker: records become messages, and a broker outage fills the spool.

:class:`SpooledSink` is the common half of the queue sinks (:mod:`sinks.nats`,
:mod:`sinks.redis`): it turns records into :class:`Message` objects (routed, with a dedupe
id), hands them to a :class:`BrokerLink`, and while the link is down appends them to a
:class:`~sinks.spool.Spool`, replaying the spool in order, before newer records, once the
broker is back. See :mod:`sinks.spool` for the on-disk format.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import Final, Protocol, TypeVar

import anyio
import msgspec

from sinks.base import SinkClosed, SinkRejected, SinkUnavailable, jittered_backoff, os_error_detail
from sinks.records import Book, BookDelta, Record, encode, record_type
from sinks.spool import Spool, SpoolCorrupt, framed_size

__all__ = [
    "Message",
    "message_id",
    "book_message_id",
    "record_id",
    "to_message",
    "LinkDown",
    "BrokerLink",
    "DeliveryStats",
    "SpooledSink",
    "reconnect_backoff",
]

logger = logging.getLogger(__name__)

_T = TypeVar("_T")

REPLAY_CHUNK: Final = 512
"""Spooled records published per round trip during a replay."""
DEFAULT_REPLAY_SLICE_S: Final = 0.5
RECONNECT_INITIAL_S: Final = 0.1
RECONNECT_CAP_S: Final = 5.0
RECONNECT_JITTER: Final = 0.2


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
MESSAGE_ID_BYTES: Final = 16


_ID_ENCODER: Final = msgspec.json.Encoder()


def message_id(kind: str, data: bytes) -> str:
    """Dedupe id of an encoded non-book record: blake2b-128 (hex) of its bytes.

    The bytes include ``run`` and ``recv_ts``, so records of two runs never share an id,
    while a copy of one record (a retry, a spool replay) always has the same one. ``kind``
    is part of the id only through the bytes (their ``type``); it is kept for symmetry.
    """
    del kind
    return hashlib.blake2b(data, digest_size=MESSAGE_ID_BYTES).hexdigest()


def book_message_id(record: Book | BookDelta) -> str:
    """Dedupe id of a book record: blake2b-128 (hex) of (run, market, type, seq).

    (run, market, seq) names exactly one record: ``seq`` counts per (run, market) and is
    never reused. So each record is stored once however often it is sent, and no two
    records share an id, even a conflation ``book`` that repeats an earlier book's levels.
    """
    key = (record.run, record.market, _BOOK_TAGS[type(record)], record.seq)
    return hashlib.blake2b(_ID_ENCODER.encode(key), digest_size=MESSAGE_ID_BYTES).hexdigest()


_BOOK_TAGS: Final[dict[type, str]] = {Book: "book", BookDelta: "book_delta"}


def record_id(record: Record, data: bytes) -> str:
    """The broker dedupe id of ``record`` whose encoding is ``data``: the one id scheme.

    Every queue sink (NATS ``Nats-Msg-Id``, the Redis entry field ``id``, Kafka …) uses
    this: :func:`book_message_id` for book records, :func:`message_id` for the others. The
    id is made once, with the message, and the spool stores it with the record, so a
    replay after a restart keeps the ids of the run that made the records.
    """
    if type(record) is Book or type(record) is BookDelta:
        return book_message_id(record)
    return message_id("", data)


def to_message(record: Record, route: Callable[[str, str | None], str]) -> Message:
    """Encode ``record`` once into a :class:`Message` routed by ``route(kind, market)``."""
    kind = record_type(record)
    data = encode(record)
    market: str | None = getattr(record, "market", None)
    seq: int | None = getattr(record, "seq", None)
    return Message(route(kind, market), record_id(record, data), kind, market, seq, data)


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
    return jittered_backoff(RECONNECT_INITIAL_S, RECONNECT_CAP_S, jitter=RECONNECT_JITTER)


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
        self._attempt = 0  # reconnect attempts scheduled in this outage (for the logs)
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
            delay = self._schedule_retry()
            logger.warning("sink %s: broker unavailable at start, spooling; retrying in %.1fs: %s",
                           self.name, delay, exc,
                           extra={"sink": self.name, "delay_s": round(delay, 3),
                                  "attempt": self._attempt, "reason": "broker_unavailable"})
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
            logger.warning("sink %s: final replay failed: %s", self.name, exc,
                           extra={"sink": self.name, "reason": "final_replay_failed"})
        await self.link.close()
        self.stats.connected = False
        if self.spool is not None:
            try:
                await self.spool.aclose()
            except OSError as exc:
                logger.warning("sink %s: closing the spool failed: %s", self.name, exc,
                               extra={"sink": self.name, "reason": type(exc).__name__})

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
            delay = self._schedule_retry()
            logger.debug("sink %s: reconnect failed, next try in %.1fs: %s", self.name, delay,
                         exc, extra={"sink": self.name, "delay_s": round(delay, 3),
                                     "attempt": self._attempt, "reason": "broker_unavailable"})
            return False
        self._connected()
        return True

    def _connected(self) -> None:
        if self._delays is not None:
            pending = self.spool.pending if self.spool is not None else 0
            logger.info("sink %s: broker is back; %d spooled records to replay", self.name,
                        pending, extra={"sink": self.name, "records": pending})
        self.stats.connected = True
        self._delays = None

    async def _lost(self, exc: LinkDown) -> None:
        self.stats.outages += 1
        await self.link.close()
        self.stats.connected = False
        delay = self._schedule_retry()
        logger.warning("sink %s: broker unavailable, %s; reconnecting in %.1fs: %s", self.name,
                       "spooling" if self.spool is not None else "retrying", delay, exc,
                       extra={"sink": self.name, "delay_s": round(delay, 3),
                              "attempt": self._attempt, "reason": "broker_unavailable"})

    def _schedule_retry(self) -> float:
        """Set the time of the next reconnect attempt; returns the delay until then."""
        self.stats.connected = False
        if self._delays is None:
            self._delays = self._backoff()
            self._attempt = 0
        self._attempt += 1
        delay = next(self._delays)
        self._next_attempt = anyio.current_time() + delay
        return delay

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
                             self.name, exc,
                             extra={"sink": self.name, "reason": "undecodable_spool_record"})
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
                               spool.pending, spool.disk_bytes,
                               extra={"sink": self.name, "path": str(spool.path),
                                      "records": spool.pending, "reason": "spool_full"})
            raise SinkUnavailable(self.name, "broker down and spool full")
        self._full_logged = False
        self.stats.spooled += len(payloads)

    async def _spool_io(self, op: str, call: Awaitable[_T]) -> _T:
        try:
            return await call
        except OSError as exc:
            raise SinkUnavailable(self.name, os_error_detail(f"spool {op}", self.name,
                                                             exc)) from exc
