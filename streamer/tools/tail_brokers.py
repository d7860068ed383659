"""``tail`` sources for the queue sinks: a JetStream stream, Redis streams, a Kafka topic.

The URL is parsed by the sink's own parser (:func:`sinks.url.parse_sink_url`), so a
``tail`` URL is exactly the ``--sink`` URL the daemon writes with. A broker that cannot be
reached, refuses the credentials, or has no such stream is reported in one line (a
:class:`ConfigError`, exit 2), not with the client library's traceback.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import anyio
import anyio.lowlevel

from sinks.base import SinkConfigError
from sinks.url import parse_sink_url, redact_url
from streamer.errors import ConfigError

logger = logging.getLogger(__name__)

FETCH_BATCH = 1000
IDLE_WAIT_S = 1.0


def open_broker_source(url: str, *, follow: bool,
                       from_book: bool = False) -> AsyncIterator[bytes]:
    """Lines (encoded records) from a ``nats://``, ``redis://`` or ``kafka://`` sink URL.

    ``from_book`` (JetStream only): start at the oldest of the markets' newest ``book``
    records instead of the start of retention (see :func:`_newest_books_start`).

    Raises:
        ConfigError: a bad URL, or ``from_book`` with a Redis URL.
    """
    try:
        sink = parse_sink_url(url).sink
    except SinkConfigError as exc:
        raise ConfigError(f"tail: {exc}") from None
    config = getattr(sink, "config", None)
    if url.startswith("nats://"):
        return _mapped(_nats_lines(config, follow=follow, from_book=from_book), url,
                       _nats_errors())
    if from_book:
        raise ConfigError("tail: --from-book needs a nats:// URL (JetStream)")
    if url.startswith("kafka://"):
        return _kafka_lines(config, follow=follow)
    return _mapped(_redis_lines(config, follow=follow), url, _redis_errors())


def _nats_errors() -> tuple[type[BaseException], ...]:
    import nats.errors
    import nats.js.errors

    return (OSError, nats.errors.Error, nats.js.errors.Error)


def _redis_errors() -> tuple[type[BaseException], ...]:
    import redis.exceptions

    return (OSError, redis.exceptions.ConnectionError, redis.exceptions.AuthenticationError,
            redis.exceptions.ResponseError, redis.exceptions.TimeoutError)


async def _mapped(
    lines: AsyncIterator[bytes], url: str, errors: tuple[type[BaseException], ...]
) -> AsyncIterator[bytes]:
    """``lines``, with the broker client's expected failures turned into one-line errors."""
    try:
        async for line in lines:
            yield line
    except errors as exc:
        detail = str(exc) or type(exc).__name__
        raise ConfigError(f"tail: cannot read {redact_url(url)}: {detail}") from None


async def _newest_books_start(js: Any, stream: str, prefix: str) -> int | None:
    """Stream sequence of the oldest among every market's newest ``book``; None if none.

    Cheap on JetStream: a consumer with ``DeliverPolicy.LAST_PER_SUBJECT`` on
    ``PREFIX.book.>`` (one subject per market) gets exactly the newest book of each market
    from the server's subject index. Reading from the oldest of them gives every market its
    newest book (records of a market before its book are skipped by the consumer rules: a
    late joiner waits for a ``book``). With ``--snapshot-interval`` that is at most one
    interval of the stream.
    """
    from nats.errors import TimeoutError as NatsTimeout
    from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

    subject = f"{prefix}.book.>"
    config = ConsumerConfig(ack_policy=AckPolicy.NONE,
                            deliver_policy=DeliverPolicy.LAST_PER_SUBJECT,
                            filter_subject=subject)
    sub = await js.pull_subscribe(subject, stream=stream, config=config)
    seqs: list[int] = []
    try:
        while True:
            try:
                batch = await sub.fetch(batch=FETCH_BATCH, timeout=IDLE_WAIT_S)
            except NatsTimeout:
                break
            seqs.extend(message.metadata.sequence.stream for message in batch)
            if not batch or batch[-1].metadata.num_pending == 0:
                break
    finally:
        await sub.unsubscribe()
    return min(seqs) if seqs else None


async def _nats_lines(config: object, *, follow: bool,
                      from_book: bool = False) -> AsyncIterator[bytes]:
    import nats
    from nats.errors import TimeoutError as NatsTimeout
    from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

    server = config.server  # type: ignore[attr-defined]
    stream = config.stream_name  # type: ignore[attr-defined]
    prefix = config.prefix  # type: ignore[attr-defined]
    async def quiet(exc: Exception) -> None:
        # nats-py logs every connect failure with a traceback by default; the failure
        # that matters reaches the caller as an exception and becomes one line.
        logger.debug("nats client error: %s", exc)

    nc = await nats.connect(server, allow_reconnect=follow, max_reconnect_attempts=1,
                            error_cb=quiet)
    try:
        js = nc.jetstream()
        last = (await js.stream_info(stream)).state.last_seq
        start = await _newest_books_start(js, stream, prefix) if from_book else None
        if start is None:
            consumer = ConsumerConfig(ack_policy=AckPolicy.NONE,
                                      deliver_policy=DeliverPolicy.ALL)
        else:
            consumer = ConsumerConfig(ack_policy=AckPolicy.NONE,
                                      deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
                                      opt_start_seq=start)
        sub = await js.pull_subscribe(f"{prefix}.>", stream=stream, config=consumer)
        if not follow and not last:
            return
        while True:
            try:
                batch = await sub.fetch(batch=FETCH_BATCH, timeout=IDLE_WAIT_S)
            except NatsTimeout:
                if not follow:
                    return
                continue
            for message in batch:
                yield message.data
                if not follow and message.metadata.sequence.stream >= last:
                    await sub.unsubscribe()
                    return
    finally:
        await nc.close()


async def _redis_lines(config: object, *, follow: bool) -> AsyncIterator[bytes]:
    import redis.asyncio as redis

    c = config
    client = redis.Redis(host=c.host, port=c.port, db=c.db,  # type: ignore[attr-defined]
                         username=c.username, password=c.password)  # type: ignore[attr-defined]
    try:
        key = c.stream  # type: ignore[attr-defined]
        if c.per_market:  # type: ignore[attr-defined]
            keys = sorted([k async for k in client.scan_iter(match=f"{key}:*", _type="STREAM")])
        else:
            keys = [key.encode()]
        cursors: dict[Any, Any] = dict.fromkeys(keys, b"0")
        while cursors:
            reply: Any = await client.xread(cursors, count=FETCH_BATCH,
                                       block=int(IDLE_WAIT_S * 1000) if follow else None)
            if not reply:
                if not follow:
                    return
                await anyio.lowlevel.checkpoint()
                continue
            for stream_key, entries in reply:
                for entry_id, fields in entries:
                    cursors[stream_key] = entry_id
                    yield fields[b"data"]
    finally:
        await client.aclose()


async def _kafka_lines(config: object, *, follow: bool) -> AsyncIterator[bytes]:
    """Every partition from its first offset; without ``follow``, up to the end offsets
    seen at the start. No consumer group: nothing is committed."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    from sinks.kafka import topic_partitions

    topic = config.topic  # type: ignore[attr-defined]
    partitions = await topic_partitions(config)  # type: ignore[arg-type]
    if not partitions:
        raise ConfigError(f"tail: topic {topic!r} does not exist")
    consumer = AIOKafkaConsumer(**config.client_options(),  # type: ignore[attr-defined]
                                enable_auto_commit=False, auto_offset_reset="earliest")
    await consumer.start()
    try:
        assigned = [TopicPartition(topic, p) for p in partitions]
        consumer.assign(assigned)
        await consumer.seek_to_beginning(*assigned)
        ends: dict[Any, int] = {} if follow else dict(await consumer.end_offsets(assigned))
        todo = {tp for tp in assigned if follow or ends[tp] > 0}
        while todo:
            batches = await consumer.getmany(*todo, timeout_ms=int(IDLE_WAIT_S * 1000),
                                             max_records=FETCH_BATCH)
            for tp, records in batches.items():
                for record in records:
                    if not follow and record.offset >= ends[tp]:
                        break
                    yield record.value
                if not follow and records and records[-1].offset + 1 >= ends[tp]:
                    todo.discard(tp)
    finally:
        await consumer.stop()
