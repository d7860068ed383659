"""Apache Kafka sink: an idempotent producer (``acks=all``), keyed by market, spooled on outage.

URL::

    kafka://[user:pass@]host:port[,host:port...]/TOPIC?compression=zstd&linger=5ms
        &batch_size=1MB&create=false&partitions=1&replication=1&ack_timeout=10s
        &security=plaintext&sasl_mechanism=PLAIN&ssl_cafile=PATH&spool=PATH&spool_max=1GB

============== ============= =====================================================================
option         default       meaning
============== ============= =====================================================================
host:port,...  ``:9092``     bootstrap brokers
TOPIC          (required)    the topic every record goes to
compression    ``none``      ``none``, ``gzip``, ``snappy``, ``lz4`` or ``zstd`` (the last three
                             need ``cramjam``, part of the ``kafka`` extra)
linger         ``5ms``       how long the producer waits to fill a batch (``0`` sends at once)
batch_size     ``1MB``       most bytes per partition batch (the producer's ``max_batch_size``)
create         ``false``     create a missing topic (else a missing topic stops the daemon:
                             exit 2 with one line naming it)
partitions     ``1``         partitions of a created topic
replication    ``1``         replication factor of a created topic
ack_timeout    ``10s``       longest wait for a batch's acknowledgements (also the producer's
                             request timeout)
security       ``plaintext`` ``plaintext``, ``ssl``, ``sasl_plaintext`` or ``sasl_ssl``
sasl_mechanism ``PLAIN``     ``PLAIN``, ``SCRAM-SHA-256`` or ``SCRAM-SHA-512``; the user and
                             password are the URL's userinfo (or ``sasl_username`` /
                             ``sasl_password``)
ssl_cafile     system CAs    CA bundle that signs the brokers' certificates
ssl_certfile,  none          client certificate and key (mutual TLS); ``ssl_password``
ssl_keyfile                  unlocks the key
spool          none          outage spool directory (:class:`~sinks.delivery.SpooledSink`)
spool_max      ``1GB``       spool size bound
============== ============= =====================================================================

Every message has key = the record's market slug (none for records without a market), value =
the record's NDJSON bytes (:func:`sinks.records.decode_record` reads them back), and headers
``type``, ``seq`` (when the record has one), ``id`` (:func:`~sinks.delivery.to_message`'s id,
the one the NATS and Redis sinks send) and ``run`` (when the record carries a ``run`` field).
The partition is chosen here from the key exactly as Kafka's default partitioner does
(murmur2 of the key modulo the partition count), so each market's records stay in order in
one partition and Java consumers agree; records without a market go to partition 0.

The producer is idempotent (``enable_idempotence``, hence ``acks=all``): the broker drops the
copies of its own internal retries. A batch is sent without waiting, then all its
acknowledgements are awaited together, bounded by ``ack_timeout``. When the broker goes away
the producer is closed and :class:`~sinks.delivery.SpooledSink` spools, backs off and replays
in order with a fresh producer. Idempotence does not cover a *new* producer resending what the
old one may have written, so, as the Redis sink does, the ``(partition, id)`` of every message
of a failed batch is remembered as *unsure*; after the reconnect, before those are sent again,
the last records of each partition involved (as many as it has unsure messages) are read back,
and an unsure message whose ``id`` is already there is skipped. This is exact while this sink
is the only writer of those partitions, with one window left open: a produce request the old
producer had already written to its socket (or that waits in the broker's request queue) can
be appended by the broker *after* the new producer has read the partition ends, e.g. a broker
that was frozen (GC pause, SIGSTOP) or slow serves the new connection before the old one's
buffered request. What that request held is then stored twice: an exact copy, same value and
same ``id`` header, later in the same partition; consumers that must see each record once
skip an ``id`` they have seen (or a book ``seq`` at or below the last one). Closing the window
would take fencing the old producer (a transactional producer with a fixed
``transactional.id`` and ``read_committed`` consumers), which this sink does not do.

SASL and TLS settings are passed to aiokafka as they are; passwords never appear in the sink's
name, its logs or its errors (:func:`sinks.url.redact_url`).
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Final

import anyio
import msgspec
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.client import AIOKafkaClient
from aiokafka.errors import (
    CorruptRecordException,
    KafkaError,
    MessageSizeTooLargeError,
    RecordListTooLargeError,
    RecordTooLargeError,
    TopicAlreadyExistsError,
)
from aiokafka.partitioner import murmur2

from sinks.base import SinkClosed, SinkMisconfigured
from sinks.delivery import LinkDown, Message, SpooledSink, to_message
from sinks.records import Record
from sinks.spool import Spool

__all__ = ["KafkaConfig", "KafkaSink", "COMPRESSIONS", "SECURITY_PROTOCOLS", "SASL_MECHANISMS",
           "partition_for", "message_headers", "topic_partitions"]

logger = logging.getLogger(__name__)

DEFAULT_PORT: Final = 9092
DEFAULT_LINGER_MS: Final = 5
DEFAULT_BATCH_BYTES: Final = 2**20
DEFAULT_ACK_TIMEOUT_S: Final = 10.0
DEFAULT_CONNECT_TIMEOUT_S: Final = 5.0
CLIENT_ID: Final = "limitless-streamer"
PARTITION_CACHE_MAX: Final = 65_536
COMPRESSIONS: Final = ("none", "gzip", "snappy", "lz4", "zstd")
SECURITY_PROTOCOLS: Final = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS: Final = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
_FAILURES: Final = (OSError, KafkaError, asyncio.TimeoutError)
"""What aiokafka raises when the cluster is unreachable or misbehaves."""
_REFUSED: Final = (RecordTooLargeError, MessageSizeTooLargeError, RecordListTooLargeError,
                   CorruptRecordException)
"""Errors that refuse one record for good: counted and dropped, never retried."""


class _RunField(msgspec.Struct):
    run: str | None = None


_RUN_DECODER: Final = msgspec.json.Decoder(_RunField)


@dataclass(frozen=True, slots=True)
class KafkaConfig:
    """Where and how to produce (see the module docstring for the URL form and defaults).

    Attributes:
        bootstrap: ``host:port`` of one or more brokers.
        topic: the topic.
        compression: one of :data:`COMPRESSIONS`.
        linger_ms: producer linger.
        batch_bytes: producer ``max_batch_size``.
        create: create the topic when it is missing.
        partitions / replication: of a created topic.
        ack_timeout_s: longest wait for one batch's acknowledgements.
        connect_timeout_s: longest wait for a connection and the topic's metadata.
        security_protocol: one of :data:`SECURITY_PROTOCOLS`.
        sasl_mechanism: one of :data:`SASL_MECHANISMS`.
        username / password: SASL credentials.
        ssl_cafile / ssl_certfile / ssl_keyfile / ssl_password: TLS files.
    """

    bootstrap: tuple[str, ...]
    topic: str
    compression: str = "none"
    linger_ms: int = DEFAULT_LINGER_MS
    batch_bytes: int = DEFAULT_BATCH_BYTES
    create: bool = False
    partitions: int = 1
    replication: int = 1
    ack_timeout_s: float = DEFAULT_ACK_TIMEOUT_S
    connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str = "PLAIN"
    username: str | None = None
    password: str | None = None
    ssl_cafile: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    ssl_password: str | None = None

    def __post_init__(self) -> None:
        if not self.bootstrap or any(not _is_host_port(server) for server in self.bootstrap):
            raise ValueError(f"brokers {','.join(self.bootstrap)!r}: use host:port[,host:port]")
        if not self.topic or len(self.topic) > 249 or any(
                not (c.isascii() and (c.isalnum() or c in "._-")) for c in self.topic):
            raise ValueError(f"topic {self.topic!r}: use 1-249 characters of A-Z a-z 0-9 . _ -")
        _choice("compression", self.compression, COMPRESSIONS)
        _choice("security", self.security_protocol, SECURITY_PROTOCOLS)
        _choice("sasl_mechanism", self.sasl_mechanism, SASL_MECHANISMS)
        if self.security_protocol.startswith("SASL") and not (self.username and self.password):
            raise ValueError(f"security {self.security_protocol.lower()} needs a user and "
                             "password (kafka://user:pass@host:port/... or sasl_username/"
                             "sasl_password)")
        for field, value in (("linger", self.linger_ms), ("batch_size", self.batch_bytes - 1),
                             ("partitions", self.partitions - 1),
                             ("replication", self.replication - 1)):
            if value < 0:
                raise ValueError(f"{field} is too small")

    @property
    def uses_ssl(self) -> bool:
        return self.security_protocol in ("SSL", "SASL_SSL")

    def ssl_context(self) -> ssl.SSLContext | None:
        """The TLS context for ``ssl``/``sasl_ssl`` (certificate files are read here)."""
        if not self.uses_ssl:
            return None
        context = ssl.create_default_context(cafile=self.ssl_cafile)
        if self.ssl_certfile:
            context.load_cert_chain(self.ssl_certfile, self.ssl_keyfile, self.ssl_password)
        return context

    def client_options(self) -> dict[str, Any]:
        """Connection and security keyword arguments shared by aiokafka's clients."""
        options: dict[str, Any] = {
            "bootstrap_servers": list(self.bootstrap),
            "client_id": CLIENT_ID,
            "request_timeout_ms": int(self.ack_timeout_s * 1000),
            "security_protocol": self.security_protocol,
        }
        if self.uses_ssl:
            options["ssl_context"] = self.ssl_context()
        if self.security_protocol.startswith("SASL"):
            options["sasl_mechanism"] = self.sasl_mechanism
            options["sasl_plain_username"] = self.username
            options["sasl_plain_password"] = self.password
        return options


def _is_host_port(server: str) -> bool:
    host, sep, port = server.rpartition(":")
    return bool(sep and host and port.isdigit() and 0 < int(port) < 65536)


def _choice(field: str, value: str, choices: Sequence[str]) -> None:
    if value not in choices:
        shown = choices if field == "sasl_mechanism" else [c.lower() for c in choices]
        raise ValueError(f"{field} {value!r} is not one of {', '.join(shown)}")


def partition_for(key: bytes | None, partitions: int) -> int:
    """Kafka's default partitioner for a keyed record (murmur2, positive, modulo); 0 if no key."""
    if key is None:
        return 0
    hashed: int = murmur2(key)
    return (hashed & 0x7FFFFFFF) % partitions


def message_headers(message: Message) -> list[tuple[str, bytes]]:
    """The headers of one message: ``type``, ``run`` (if the record has one), ``seq``, ``id``."""
    headers = [("type", message.kind.encode())]
    if b'"run":' in message.data:  # cheap test first: most records carry none today
        try:
            run = _RUN_DECODER.decode(message.data).run
        except msgspec.DecodeError:  # not a string: no header rather than no record
            run = None
        if run:  # "" (a record made outside a daemon run) carries no header
            headers.append(("run", run.encode()))
    if message.seq is not None:
        headers.append(("seq", str(message.seq).encode()))
    headers.append(("id", message.msg_id.encode()))
    return headers


async def topic_partitions(config: KafkaConfig) -> list[int]:
    """The partition ids of ``config.topic`` (empty when it does not exist).

    Raises:
        KafkaError / OSError: the cluster cannot be reached.
    """
    options = config.client_options()
    client = AIOKafkaClient(**options)
    try:
        await client.bootstrap()
        metadata = await client.fetch_all_metadata()
    finally:
        await client.close()
    return sorted(metadata.partitions_for_topic(config.topic) or ())


class KafkaSink(SpooledSink):
    """Produces records to a Kafka topic (see the module docstring).

    Args:
        config: brokers, topic, producer and security settings.
        spool: the outage spool, or ``None`` (outages then raise SinkUnavailable at once).
        backoff: reconnect delays (default :func:`~sinks.delivery.reconnect_backoff`).
        name: the sink's label; default ``kafka:<first broker>/<topic>``.
    """

    def __init__(self, config: KafkaConfig, *, spool: Spool | None = None,
                 name: str | None = None,
                 backoff: Callable[[], Iterator[float]] | None = None) -> None:
        self.config: Final = config
        label = name or f"kafka:{config.bootstrap[0]}/{config.topic}"
        self._link = _KafkaLink(label, config)
        super().__init__(label, self._link, spool=spool, backoff=backoff)

    @property
    def skipped(self) -> int:
        """Replayed messages found already stored after an ambiguous failure (not re-sent)."""
        return self._link.skipped


class _KafkaLink:
    """One aiokafka producer at a time (the :class:`~sinks.delivery.BrokerLink`)."""

    def __init__(self, name: str, config: KafkaConfig) -> None:
        self.name = name
        self._config = config
        self._producer: AIOKafkaProducer | None = None
        self._pending = False
        """A publish failed with sends outstanding: the producer must be aborted, not stopped."""
        self._partitions = 0
        self._partition_of: dict[str | None, int] = {}
        self._unsure: set[tuple[int, str]] = set()
        self._stored: dict[int, set[str]] | None = None
        self._rejections = 0
        self.skipped = 0

    def message(self, record: Record) -> Message:
        """Encode ``record`` (the route is the topic; the partition follows from the key)."""
        return to_message(record, self._route)

    def _route(self, kind: str, market: str | None) -> str:
        return self._config.topic

    async def connect(self) -> None:
        """Start an idempotent producer and check (or create) the topic.

        Raises:
            LinkDown: the cluster cannot be reached. SinkMisconfigured: the topic is missing
            and ``create`` is off, or the settings are refused (authentication, TLS).
        """
        await self.close()
        config = self._config
        producer = AIOKafkaProducer(
            **config.client_options(),
            acks="all", enable_idempotence=True,
            compression_type=None if config.compression == "none" else config.compression,
            linger_ms=config.linger_ms, max_batch_size=config.batch_bytes,
            max_request_size=max(config.batch_bytes, 2**20),
        )
        try:
            with anyio.fail_after(config.connect_timeout_s):
                await producer.start()
                partitions = await self._topic_partitions(producer)
        except (ssl.SSLError, KafkaError) as exc:
            await _stop(producer, config.connect_timeout_s)
            if _is_auth_failure(exc):
                raise SinkMisconfigured(self.name, _describe(exc)) from exc
            raise LinkDown(f"connect {','.join(config.bootstrap)}: {_describe(exc)}") from exc
        except (OSError, TimeoutError) as exc:
            await _stop(producer, config.connect_timeout_s)
            raise LinkDown(f"connect {','.join(config.bootstrap)}: {_describe(exc)}") from exc
        except SinkClosed:
            await _stop(producer, config.connect_timeout_s)
            raise
        if partitions != self._partitions:
            self._partition_of.clear()
        self._producer, self._partitions = producer, partitions
        self._pending = False
        self._stored = None

    async def publish(self, messages: Sequence[Message]) -> int:
        """Send all, then await all acknowledgements; the number refused for good."""
        producer = self._producer
        if producer is None:
            raise LinkDown("not connected")
        todo = list(messages)
        placed = [(self._partition(m.market), m) for m in todo]
        futures: list[asyncio.Future[Any]] = []
        sent: list[tuple[int, Message]] = []
        rejected = 0
        try:
            if self._unsure:
                placed = await self._skip_stored(placed)
            for partition, message in placed:
                try:
                    futures.append(await producer.send(
                        self._config.topic, value=message.data,
                        key=message.market.encode() if message.market else None,
                        partition=partition, headers=message_headers(message)))
                except _REFUSED as exc:
                    rejected += self._rejected(partition, message, exc)
                else:
                    sent.append((partition, message))
            with anyio.fail_after(self._config.ack_timeout_s):
                results = await asyncio.gather(*futures, return_exceptions=True)
        except _FAILURES as exc:
            for future in futures:
                future.cancel()
            self._unsure.update((partition, m.msg_id) for partition, m in placed)
            self._stored = None
            self._pending = True
            raise LinkDown(f"produce: {_describe(exc)}") from exc
        return rejected + self._check(sent, results)

    async def close(self) -> None:
        """Stop the producer, if any (never raises)."""
        producer, self._producer = self._producer, None
        if producer is not None:
            await _stop(producer, self._config.connect_timeout_s, graceful=not self._pending)

    # -- internals ------------------------------------------------------------------------

    def _partition(self, market: str | None) -> int:
        """:func:`partition_for` the market, remembered (murmur2 is pure Python in aiokafka)."""
        cache = self._partition_of
        partition = cache.get(market)
        if partition is None:
            partition = partition_for(market.encode() if market else None, self._partitions)
            if len(cache) < PARTITION_CACHE_MAX:
                cache[market] = partition
        return partition

    async def _topic_partitions(self, producer: AIOKafkaProducer) -> int:
        config = self._config
        metadata = await producer.client.fetch_all_metadata()
        partitions = metadata.partitions_for_topic(config.topic)
        if partitions:
            return len(partitions)
        if not config.create:
            raise SinkMisconfigured(
                self.name, f"topic {config.topic!r} does not exist; create it, or add "
                           "create=true (with partitions=N&replication=N) to the sink URL")
        await self._create_topic()
        with anyio.fail_after(self._config.connect_timeout_s):
            while True:  # the new topic's leaders show up in metadata shortly
                metadata = await producer.client.fetch_all_metadata()
                partitions = metadata.partitions_for_topic(config.topic)
                if partitions and all(metadata.leader_for_partition(
                        TopicPartition(config.topic, p)) not in (None, -1) for p in partitions):
                    return len(partitions)
                await anyio.sleep(0.05)

    async def _create_topic(self) -> None:
        config = self._config
        admin = AIOKafkaAdminClient(**config.client_options())
        try:
            await admin.start()
            await admin.create_topics([NewTopic(config.topic, config.partitions,
                                                config.replication)])
        except TopicAlreadyExistsError:
            return  # another daemon was first
        finally:
            await admin.close()
        logger.info("%s: created topic %s (%d partitions, replication %d)", self.name,
                    config.topic, config.partitions, config.replication)

    async def _skip_stored(self, placed: list[tuple[int, Message]]) -> list[tuple[int, Message]]:
        """Drop unsure messages that the failed batch did store."""
        if self._stored is None:  # once per reconnect: later batches would hide the tail
            self._stored = await self._tail_ids()
        stored, unsure = self._stored, self._unsure
        kept: list[tuple[int, Message]] = []
        for partition, message in placed:
            key = (partition, message.msg_id)
            if key in unsure:
                unsure.discard(key)
                if message.msg_id in stored.get(partition, ()):
                    self.skipped += 1
                    continue
            kept.append((partition, message))
        if not unsure:
            self._stored = None
        if len(kept) < len(placed):
            logger.info("%s: %d replayed records were already stored, skipped", self.name,
                        len(placed) - len(kept))
        return kept

    async def _tail_ids(self) -> dict[int, set[str]]:
        """The ``id`` headers of the last records of each partition with unsure messages."""
        config = self._config
        counts = Counter(partition for partition, _ in self._unsure)
        wanted = [TopicPartition(config.topic, p) for p in sorted(counts)]
        consumer = AIOKafkaConsumer(**config.client_options(), enable_auto_commit=False,
                                    auto_offset_reset="earliest")
        try:
            await consumer.start()
            consumer.assign(wanted)
            ends = await consumer.end_offsets(wanted)
            todo: dict[TopicPartition, int] = {}
            for tp in wanted:
                first = max(0, ends[tp] - counts[tp.partition])
                if first < ends[tp]:
                    consumer.seek(tp, first)
                    todo[tp] = ends[tp]
            ids: dict[int, set[str]] = {p: set() for p in counts}
            with anyio.fail_after(config.ack_timeout_s):
                while todo:
                    batches = await consumer.getmany(*todo, timeout_ms=200)
                    for tp, records in batches.items():
                        for record in records:
                            ids[tp.partition].update(value.decode() for key, value in
                                                     record.headers or () if key == "id")
                            if record.offset + 1 >= todo.get(tp, 0):
                                todo.pop(tp, None)
            return ids
        finally:
            await consumer.stop()

    def _check(self, sent: list[tuple[int, Message]], results: list[Any]) -> int:
        """Count refusals; raise LinkDown if any send failed in a way worth retrying."""
        rejected = 0
        for (partition, message), result in zip(sent, results, strict=True):
            if not isinstance(result, BaseException):
                continue
            if not isinstance(result, _REFUSED):
                self._unsure.update((p, m.msg_id) for p, m in sent)
                self._stored = None
                self._pending = True
                raise LinkDown(f"produce ack: {_describe(result)}")
            rejected += self._rejected(partition, message, result)
        return rejected

    def _rejected(self, partition: int, message: Message, exc: BaseException) -> int:
        self._rejections += 1
        level = logging.WARNING if self._rejections == 1 else logging.DEBUG
        logger.log(level, "%s: %s record to partition %d refused for good (%d so far): %s",
                   self.name, message.kind, partition, self._rejections, _describe(exc))
        return 1


async def _stop(producer: AIOKafkaProducer, timeout_s: float, *, graceful: bool = True) -> None:
    """Stop a producer (never raises).

    ``graceful``: :meth:`AIOKafkaProducer.stop`, which first waits until every pending batch
    is delivered; used when nothing is pending (every publish awaits its acks). Otherwise, or
    if that takes longer than ``timeout_s``, the producer is aborted: an idempotent aiokafka
    producer never gives up on a batch, so a graceful stop with the broker gone would wait
    for it, and a producer left half-stopped would go on retrying and deliver the batch
    *after* its replacement checked the log for it. Aborting cancels its sender task and
    closes its connections (aiokafka has no public call for that); the records it held are
    in the spool and checked against the log after the reconnect.
    """
    if graceful:
        with anyio.move_on_after(timeout_s) as scope:
            try:
                await producer.stop()
            except _FAILURES as exc:
                logger.debug("kafka producer stop: %s", _describe(exc))
        if not scope.cancelled_caught:
            return
    sender = getattr(producer, "_sender", None)
    with anyio.move_on_after(timeout_s):
        try:
            if sender is not None:
                await sender.close()
            await producer.client.close()
        except _FAILURES as exc:
            logger.debug("kafka producer abort: %s", _describe(exc))
    producer._closed = True  # nothing left to stop; keeps aiokafka's "unclosed" warning quiet


def _is_auth_failure(exc: BaseException) -> bool:
    name = type(exc).__name__
    return "Authentication" in name or "Authorization" in name or "Sasl" in name or \
        isinstance(exc, ssl.SSLCertVerificationError)


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
