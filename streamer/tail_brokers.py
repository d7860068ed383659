"""``tail`` sources for the queue sinks: a JetStream stream, Redis streams, a Kafka topic.

The URL is parsed by the sink's own parser (:func:`sinks.url.parse_sink_url`), so a
``tail`` URL is exactly the ``--sink`` URL the daemon writes with.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import anyio
import anyio.lowlevel

from sinks.base import SinkConfigError
from sinks.url import parse_sink_url
from streamer.errors import ConfigError

FETCH_BATCH = 1000
IDLE_WAIT_S = 1.0


def open_broker_source(url: str, *, follow: bool) -> AsyncIterator[bytes]:
    """Lines (encoded records) from a ``nats://``, ``redis://`` or ``kafka://`` sink URL."""
    try:
        sink = parse_sink_url(url).sink
    except SinkConfigError as exc:
        raise ConfigError(f"tail: {exc}") from None
    config = getattr(sink, "config", None)
    if url.startswith("nats://"):
        return _nats_lines(config, follow=follow)
    if url.startswith("kafka://"):
        return _kafka_lines(config, follow=follow)
    return _redis_lines(config, follow=follow)


async def _nats_lines(config: object, *, follow: bool) -> AsyncIterator[bytes]:
    import nats
    from nats.errors import TimeoutError as NatsTimeout
    from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

    server = config.server  # type: ignore[attr-defined]
    stream = config.stream_name  # type: ignore[attr-defined]
    prefix = config.prefix  # type: ignore[attr-defined]
    nc = await nats.connect(server, allow_reconnect=follow, max_reconnect_attempts=1)
    try:
        js = nc.jetstream()
        total = (await js.stream_info(stream)).state.messages
        consumer = ConsumerConfig(ack_policy=AckPolicy.NONE, deliver_policy=DeliverPolicy.ALL)
        sub = await js.pull_subscribe(f"{prefix}.>", stream=stream, config=consumer)
        seen = 0
        while follow or seen < total:
            try:
                batch = await sub.fetch(batch=FETCH_BATCH, timeout=IDLE_WAIT_S)
            except NatsTimeout:
                if not follow:
                    return
                continue
            for message in batch:
                seen += 1
                yield message.data
        await sub.unsubscribe()
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
