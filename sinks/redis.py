"""Redis Streams sink: ``XADD`` with approximate ``MAXLEN``, pipelined, spooled on outage.

URL::

    redis://[user:pass@]host:port/DB?stream=KEY&per_market=false&maxlen=100000
        &timeout=5s&spool=PATH&spool_max=1GB

========== ============= =========================================================================
option     default       meaning
========== ============= =========================================================================
host:port  ``:6379``     the server (Redis or Valkey)
DB         ``0``         database number
stream     ``limitless`` stream key; with ``per_market=true`` one stream per market,
                         ``KEY:<market>`` (``KEY:_`` for records without a market)
per_market ``false``     one stream per market instead of one for everything
maxlen     ``100000``    ``XADD … MAXLEN ~ maxlen`` per stream; ``none``: never trim
timeout    ``5s``        socket timeout of every call (a batch is one pipeline round trip)
spool      none          outage spool directory (:class:`~sinks.delivery.SpooledSink`)
spool_max  ``1GB``       spool size bound
========== ============= =========================================================================

Every entry has the fields ``type``, ``market`` (empty if none), ``seq`` (empty if none),
``id`` (:func:`~sinks.delivery.record_id`, the id the NATS sink also sends) and
``data`` (the record's NDJSON bytes, which :func:`sinks.records.decode_record` reads back).
Entry ids are Redis's own (``*``), so ``XRANGE`` by time works as usual.

A batch is one non-transactional pipeline (``MULTI`` is not needed: order on one connection
is enough). redis-py's own retries are off (a retried pipeline would add entries twice).

Duplicates: Redis has no dedupe, and a pipeline that fails half-way may have added a prefix of
its entries. So the ``(stream, id)`` of every message of a failed pipeline is remembered as
*unsure*; after the reconnect, before anything is sent, the last entries of each stream
involved (as many as it has unsure messages) are read, and an unsure message whose ``id`` is
already there is skipped instead of added again. This is exact while this sink is the only
writer of those streams; with other writers interleaving, a replayed message may be added
twice (consumers drop those by ``seq``). A Redis server that restarted without persistence has
lost what it acknowledged; that is the server's configuration (``appendonly yes``).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Final

import anyio
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from sinks.delivery import LinkDown, Message, SpooledSink, to_message
from sinks.records import Record
from sinks.spool import Spool

__all__ = ["RedisConfig", "RedisStreamSink"]

logger = logging.getLogger(__name__)

DEFAULT_STREAM: Final = "limitless"
DEFAULT_MAXLEN: Final = 100_000
DEFAULT_TIMEOUT_S: Final = 5.0
DEFAULT_CONNECT_TIMEOUT_S: Final = 2.0
NO_MARKET_KEY: Final = "_"
CLIENT_NAME: Final = "limitless-streamer"
_FAILURES: Final = (OSError, RedisError)
"""What redis-py raises when the server is unreachable or misbehaves."""


@dataclass(frozen=True, slots=True)
class RedisConfig:
    """Where and how to ``XADD`` (see the module docstring for the URL form and defaults).

    Attributes:
        host / port / db / username / password: the server.
        stream: the stream key, or the prefix of per-market keys.
        per_market: one stream per market (``stream:<market>``).
        maxlen: approximate ``MAXLEN`` of each stream; ``None``: never trim.
        timeout_s: socket timeout.
        connect_timeout_s: connect timeout.
    """

    host: str = "localhost"
    port: int = 6379
    db: int = 0
    username: str | None = None
    password: str | None = None
    stream: str = DEFAULT_STREAM
    per_market: bool = False
    maxlen: int | None = DEFAULT_MAXLEN
    timeout_s: float = DEFAULT_TIMEOUT_S
    connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S

    def __post_init__(self) -> None:
        if not self.stream:
            raise ValueError("stream key must not be empty")
        if self.maxlen is not None and self.maxlen < 1:
            raise ValueError(f"maxlen must be >= 1 (or none), got {self.maxlen}")
        if self.db < 0:
            raise ValueError(f"db must be >= 0, got {self.db}")

    def key(self, market: str | None) -> str:
        """The stream key for a record of ``market``."""
        if not self.per_market:
            return self.stream
        return f"{self.stream}:{market or NO_MARKET_KEY}"


class RedisStreamSink(SpooledSink):
    """Appends records to Redis Streams (see the module docstring).

    Args:
        config: server, keys and limits.
        spool: the outage spool, or ``None`` (outages then raise SinkUnavailable at once).
        backoff: reconnect delays (default :func:`~sinks.delivery.reconnect_backoff`).
        name: the sink's label; default ``redis:<host:port>/<db>/<stream>``.
    """

    def __init__(self, config: RedisConfig, *, spool: Spool | None = None,
                 name: str | None = None,
                 backoff: Callable[[], Iterator[float]] | None = None) -> None:
        self.config: Final = config
        label = name or f"redis:{config.host}:{config.port}/{config.db}/{config.stream}"
        self._link = _RedisLink(label, config)
        super().__init__(label, self._link, spool=spool, backoff=backoff)

    @property
    def skipped(self) -> int:
        """Replayed messages found already stored after an ambiguous failure (not re-added)."""
        return self._link.skipped


class _RedisLink:
    """One redis-py client at a time (the :class:`~sinks.delivery.BrokerLink`)."""

    def __init__(self, name: str, config: RedisConfig) -> None:
        self.name = name
        self._config = config
        self._client: Redis | None = None
        self._unsure: set[tuple[str, str]] = set()
        self._stored: dict[str, set[str]] | None = None
        self._rejections = 0
        self.skipped = 0

    def message(self, record: Record) -> Message:
        """Encode ``record`` with its stream key and id."""
        return to_message(record, self._route)

    def _route(self, kind: str, market: str | None) -> str:
        return self._config.key(market)

    async def connect(self) -> None:
        """Connect and ``PING`` (redis-py retries off)."""
        await self.close()
        config = self._config
        client = Redis(
            host=config.host, port=config.port, db=config.db, username=config.username,
            password=config.password, socket_timeout=config.timeout_s,
            socket_connect_timeout=config.connect_timeout_s, retry=Retry(NoBackoff(), 0),
            client_name=CLIENT_NAME, decode_responses=False,
        )
        try:
            await client.ping()
        except _FAILURES as exc:
            await _aclose(client)
            raise LinkDown(f"connect {config.host}:{config.port}: {_describe(exc)}") from exc
        self._client = client
        self._stored = None

    async def publish(self, messages: Sequence[Message]) -> int:
        """``XADD`` all in one pipeline; the number refused for good."""
        client = self._client
        if client is None:
            raise LinkDown("not connected")
        todo = list(messages)
        try:
            if self._unsure:
                todo = await self._skip_stored(client, todo)
            results = await self._xadd(client, todo)
        except _FAILURES as exc:
            self._unsure.update((message.route, message.msg_id) for message in todo)
            self._stored = None
            raise LinkDown(f"XADD: {_describe(exc)}") from exc
        return self._count_rejected(todo, results)

    async def close(self) -> None:
        """Close the client, if any (never raises)."""
        client, self._client = self._client, None
        if client is not None:
            with anyio.move_on_after(self._config.connect_timeout_s):
                await _aclose(client)

    # -- internals ------------------------------------------------------------------------

    async def _xadd(self, client: Redis, messages: list[Message]) -> list[Any]:
        if not messages:
            return []
        maxlen = self._config.maxlen
        pipe = client.pipeline(transaction=False)
        for message in messages:
            fields: dict[str | bytes, str | bytes | int] = {
                "type": message.kind,
                "market": message.market or "",
                "seq": "" if message.seq is None else str(message.seq),
                "id": message.msg_id,
                "data": message.data,
            }
            pipe.xadd(message.route, fields,  # type: ignore[arg-type]
                      maxlen=maxlen, approximate=maxlen is not None)
        return list(await pipe.execute(raise_on_error=False))

    async def _skip_stored(self, client: Redis, messages: list[Message]) -> list[Message]:
        """Drop unsure messages that the failed pipeline did store."""
        if self._stored is None:
            self._stored = await self._tail_ids(client)
        stored, unsure = self._stored, self._unsure
        kept: list[Message] = []
        for message in messages:
            key = (message.route, message.msg_id)
            if key in unsure:
                unsure.discard(key)
                if message.msg_id in stored.get(message.route, ()):
                    self.skipped += 1
                    continue
            kept.append(message)
        if not unsure:
            self._stored = None
        if len(kept) < len(messages):
            logger.info("%s: %d replayed records were already stored, skipped", self.name,
                        len(messages) - len(kept),
                        extra={"sink": self.name, "records": len(messages) - len(kept)})
        return kept

    async def _tail_ids(self, client: Redis) -> dict[str, set[str]]:
        """Ids of the last entries of each stream with unsure messages."""
        counts = Counter(route for route, _ in self._unsure)
        routes = list(counts)
        pipe = client.pipeline(transaction=False)
        for route in routes:
            pipe.xrevrange(route, count=counts[route])
        replies = await pipe.execute()
        return {route: {fields[b"id"].decode() for _, fields in reply or () if b"id" in fields}
                for route, reply in zip(routes, replies, strict=True)}

    def _count_rejected(self, messages: list[Message], results: list[Any]) -> int:
        rejected = 0
        for message, result in zip(messages, results, strict=True):
            if isinstance(result, Exception):
                rejected += 1
                self._rejections += 1
                level = logging.WARNING if self._rejections == 1 else logging.DEBUG
                logger.log(level, "%s: XADD %s refused for good (%d so far): %s", self.name,
                           message.route, self._rejections, _describe(result))
        return rejected


async def _aclose(client: Redis) -> None:
    try:
        await client.aclose()
    except _FAILURES as exc:
        logger.debug("redis close: %s", _describe(exc))


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
