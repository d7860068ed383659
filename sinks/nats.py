"""NATS JetStream sink: every record to ``PREFIX.<type>.<market>``, acked, deduped, spooled.

URL::

    nats://[user:pass@]host:port/PREFIX?stream=NAME&retention=limits&max_age=24h
        &dup_window=2m&storage=file&replicas=1&ack_timeout=5s&spool=PATH&spool_max=1GB

========== ==================================== =============================================
option     default                              meaning
========== ==================================== =============================================
PREFIX     (required)                           subject prefix; records go to
                                                ``PREFIX.<type>.<market>`` (``_`` when a
                                                record has no market; characters outside
                                                ``[A-Za-z0-9_-]`` in a market become ``_``)
stream     PREFIX upper-cased, ``.`` → ``_``    JetStream stream; subjects ``PREFIX.>``
retention  ``limits``                           ``limits``, ``interest`` or ``workqueue``
max_age    ``24h``                              how long the stream keeps a message
dup_window ``2m``                               JetStream duplicate window (≤ ``max_age``)
storage    ``file``                             ``file`` or ``memory`` (used on create only)
replicas   ``1``                                stream replicas (used on create only)
ack_timeout ``5s``                              longest wait for a batch's publish acks
spool      none                                 outage spool directory (see below)
spool_max  ``1GB``                              spool size bound
========== ==================================== =============================================

On connect the stream is created if missing, else verified: its subjects must cover
``PREFIX.>`` and its retention, max age and duplicate window must equal the URL's (a
mismatch stops the sink with :class:`~sinks.base.SinkClosed` naming the field: we never
change a stream someone else may depend on).

Publishing is pipelined: a batch is published without waiting, then all its acks are awaited
together (bounded by ``ack_timeout``; a dropped connection fails them at once). nats-py's own
reconnect is off: outages are handled by :class:`~sinks.delivery.SpooledSink` (spool, backoff,
ordered replay). Each message carries ``Nats-Msg-Id`` = :func:`~sinks.delivery.record_id`
(for book records a hash of (run, market, type, seq), which names exactly one record): a
batch sent twice after an ambiguous failure is stored once as long as the copies arrive
within ``dup_window``; a replay after an outage longer than ``dup_window`` may store the
in-flight batch twice (consumers skip those by ``seq``). Two daemons never share ids (their
runs differ): for a standby pair use ``--lease``, not two writers.

A message the server refuses for good (e.g. larger than its max payload) is counted in
``stats.rejected``, logged, and not retried.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Final

import anyio
import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import PubAck, RetentionPolicy, StorageType, StreamConfig

from sinks.base import SinkClosed
from sinks.delivery import LinkDown, Message, SpooledSink, to_message
from sinks.records import Record
from sinks.spool import Spool

__all__ = ["NatsConfig", "NatsJetStreamSink", "default_stream_name", "subject_token"]

logger = logging.getLogger(__name__)

DEFAULT_MAX_AGE_S: Final = 24 * 3600.0
DEFAULT_DUP_WINDOW_S: Final = 120.0
DEFAULT_ACK_TIMEOUT_S: Final = 5.0
DEFAULT_CONNECT_TIMEOUT_S: Final = 2.0
MSG_ID_HEADER: Final = "Nats-Msg-Id"
NO_MARKET_TOKEN: Final = "_"
SECONDS_TOLERANCE: Final = 0.001
"""Durations come back from the server in nanoseconds: compare them to the millisecond."""
TRANSIENT_ACK_ERRORS: Final = (
    nats.js.errors.ServiceUnavailableError,
    nats.js.errors.NoStreamResponseError,
    nats.errors.TimeoutError,
)

_FAILURES: Final = (OSError, nats.errors.Error)
"""What nats-py raises when the broker is unreachable or misbehaves (TimeoutError is an
OSError)."""
_TOKEN_UNSAFE: Final = re.compile(r"[^A-Za-z0-9_-]")
_NAME_UNSAFE: Final = re.compile(r"[^A-Za-z0-9_-]")


@functools.lru_cache(maxsize=65_536)
def subject_token(text: str) -> str:
    """``text`` as one NATS subject token: characters outside ``[A-Za-z0-9_-]`` become ``_``."""
    return _TOKEN_UNSAFE.sub("_", text) or NO_MARKET_TOKEN


def default_stream_name(prefix: str) -> str:
    """``limitless.books`` → ``LIMITLESS_BOOKS``."""
    return _NAME_UNSAFE.sub("_", prefix.upper())


@dataclass(frozen=True, slots=True)
class NatsConfig:
    """Where and how to publish (see the module docstring for the URL form and defaults).

    Attributes:
        server: ``nats://[user:pass@]host:port``.
        prefix: subject prefix (``limitless``).
        stream: stream name; default from the prefix.
        retention: ``limits``, ``interest`` or ``workqueue``.
        max_age_s: stream max age.
        dup_window_s: stream duplicate window.
        storage: ``file`` or ``memory``.
        replicas: stream replicas.
        ack_timeout_s: longest wait for one batch's acks.
        connect_timeout_s: longest wait for a connection.
    """

    server: str
    prefix: str
    stream: str | None = None
    retention: str = "limits"
    max_age_s: float = DEFAULT_MAX_AGE_S
    dup_window_s: float = DEFAULT_DUP_WINDOW_S
    storage: str = "file"
    replicas: int = 1
    ack_timeout_s: float = DEFAULT_ACK_TIMEOUT_S
    connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S

    def __post_init__(self) -> None:
        tokens = self.prefix.split(".")
        if not self.prefix or any(not token or _TOKEN_UNSAFE.search(token) for token in tokens):
            raise ValueError(f"subject prefix {self.prefix!r}: use dot-separated tokens of "
                             "A-Z a-z 0-9 _ -")
        if self.stream is not None and (not self.stream or _NAME_UNSAFE.search(self.stream)):
            raise ValueError(f"stream name {self.stream!r}: use A-Z a-z 0-9 _ -")
        RetentionPolicy(self.retention)  # ValueError names the value
        StorageType(self.storage)
        if self.dup_window_s > self.max_age_s:
            raise ValueError(f"dup_window ({self.dup_window_s:g}s) must not exceed max_age "
                             f"({self.max_age_s:g}s)")
        if self.replicas < 1:
            raise ValueError(f"replicas must be >= 1, got {self.replicas}")

    @property
    def stream_name(self) -> str:
        """The stream, given or derived from the prefix."""
        return self.stream or default_stream_name(self.prefix)

    def stream_config(self) -> StreamConfig:
        """The JetStream stream this sink creates when it is missing."""
        return StreamConfig(
            name=self.stream_name,
            subjects=[f"{self.prefix}.>"],
            retention=RetentionPolicy(self.retention),
            max_age=self.max_age_s,
            duplicate_window=self.dup_window_s,
            storage=StorageType(self.storage),
            num_replicas=self.replicas,
        )


class NatsJetStreamSink(SpooledSink):
    """Publishes records to NATS JetStream (see the module docstring).

    Args:
        config: server, subjects, stream and timeouts.
        spool: the outage spool, or ``None`` (outages then raise SinkUnavailable at once).
        backoff: reconnect delays (default :func:`~sinks.delivery.reconnect_backoff`).
        name: the sink's label; default ``nats:<host:port>/<prefix>`` (no password).
    """

    def __init__(self, config: NatsConfig, *, spool: Spool | None = None,
                 name: str | None = None,
                 backoff: Callable[[], Iterator[float]] | None = None) -> None:
        self.config: Final = config
        shown = config.server.rpartition("@")[2].removeprefix("nats://")
        label = name or f"nats:{shown}/{config.prefix}"
        self._link = _NatsLink(label, config)
        super().__init__(label, self._link, spool=spool, backoff=backoff)

    @property
    def duplicates(self) -> int:
        """Publishes JetStream acknowledged as duplicates (stored once already: a replay after
        an ambiguous failure, or the other daemon of an active-active pair was first)."""
        return self._link.duplicates


class _NatsLink:
    """One nats-py connection at a time (the :class:`~sinks.delivery.BrokerLink`)."""

    def __init__(self, name: str, config: NatsConfig) -> None:
        self.name = name
        self._config = config
        self._prefix = config.prefix
        self._nc: Client | None = None
        self._js: JetStreamContext | None = None
        self._lost: asyncio.Future[None] | None = None
        self._rejections = 0
        self.duplicates = 0

    def message(self, record: Record) -> Message:
        """Encode ``record`` with its subject and Msg-Id."""
        return to_message(record, self._subject)

    def _subject(self, kind: str, market: str | None) -> str:
        return f"{self._prefix}.{kind}.{subject_token(market) if market else NO_MARKET_TOKEN}"

    async def connect(self) -> None:
        """Connect (no client-side reconnect) and create or verify the stream."""
        await self.close()
        lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        async def on_closed() -> None:
            if not lost.done():
                lost.set_result(None)

        try:
            # nats-py loops over its server pool forever unless max_reconnect_attempts > 0;
            # with 1 and no wait, a refused connect fails after two quick attempts.
            nc = await nats.connect(
                servers=[self._config.server], allow_reconnect=False,
                max_reconnect_attempts=1, reconnect_time_wait=0,
                connect_timeout=self._config.connect_timeout_s,
                error_cb=self._on_error, closed_cb=on_closed, name="limitless-streamer",
            )
        except _FAILURES as exc:
            raise LinkDown(f"connect {self._shown_server()}: {_describe(exc)}") from exc
        self._nc, self._js, self._lost = nc, nc.jetstream(), lost
        try:
            await self._ensure_stream(self._js)
        except _FAILURES as exc:
            await self.close()
            raise LinkDown(f"stream {self._config.stream_name}: {_describe(exc)}") from exc
        except SinkClosed:
            await self.close()
            raise

    async def publish(self, messages: Sequence[Message]) -> int:
        """Publish all, then await all acks; the number refused for good."""
        js, lost = self._js, self._lost
        if js is None or lost is None or lost.done():
            raise LinkDown("not connected")
        futures: list[asyncio.Future[PubAck]] = []
        sent: list[Message] = []
        rejected = 0
        try:
            for message in messages:
                try:
                    futures.append(await js.publish_async(
                        message.route, message.data, headers={MSG_ID_HEADER: message.msg_id}))
                except nats.errors.MaxPayloadError as exc:
                    rejected += self._rejected(message, exc)
                else:
                    sent.append(message)
            results = await self._acks(futures, lost)
        except _FAILURES as exc:
            for future in futures:
                future.cancel()
            raise LinkDown(f"publish: {_describe(exc)}") from exc
        return rejected + self._check(sent, results)

    async def close(self) -> None:
        """Close the connection, if any (never raises)."""
        nc, self._nc, self._js, self._lost = self._nc, None, None, None
        if nc is None or nc.is_closed:
            return
        with anyio.move_on_after(self._config.connect_timeout_s):
            try:
                await nc.close()
            except _FAILURES as exc:
                logger.debug("%s: close: %s", self.name, _describe(exc))

    # -- internals ------------------------------------------------------------------------

    async def _on_error(self, exc: Exception) -> None:
        logger.debug("%s: nats client error: %s", self.name, _describe(exc))

    def _shown_server(self) -> str:
        return self._config.server.rpartition("@")[2]

    async def _ensure_stream(self, js: JetStreamContext) -> None:
        config = self._config
        try:
            info = await js.stream_info(config.stream_name)
        except nats.js.errors.NotFoundError:
            await js.add_stream(config.stream_config())
            logger.info("%s: created stream %s (subjects %s.>, retention %s, max_age %gs, "
                        "duplicate window %gs)", self.name, config.stream_name, config.prefix,
                        config.retention, config.max_age_s, config.dup_window_s,
                        extra={"sink": self.name, "reason": "stream_created"})
            return
        self._verify(info.config)

    def _verify(self, existing: StreamConfig) -> None:
        config = self._config
        wanted = f"{config.prefix}.>"
        if not any(_covers(subject, wanted) for subject in existing.subjects or ()):
            self._mismatch("subjects", existing.subjects, [wanted])
        # nats-py leaves the server's string in place of the enum when it decodes a reply
        retention = str(getattr(existing.retention, "value", existing.retention) or "limits")
        if retention != config.retention:
            self._mismatch("retention", retention, config.retention)
        if abs((existing.max_age or 0.0) - config.max_age_s) > SECONDS_TOLERANCE:
            self._mismatch("max_age", f"{existing.max_age or 0:g}s", f"{config.max_age_s:g}s")
        if abs((existing.duplicate_window or 0.0) - config.dup_window_s) > SECONDS_TOLERANCE:
            self._mismatch("dup_window", f"{existing.duplicate_window or 0:g}s",
                           f"{config.dup_window_s:g}s")

    def _mismatch(self, field: str, existing: object, wanted: object) -> None:
        raise SinkClosed(self.name, f"stream {self._config.stream_name} exists with {field} "
                                    f"{existing}, the URL asks for {wanted}; change the URL "
                                    "or the stream")

    async def _acks(self, futures: list[asyncio.Future[PubAck]],
                    lost: asyncio.Future[None]) -> list[Any]:
        """All ack results (PubAck or exception), or raise if the connection went first."""
        if not futures:
            return []
        gathered = asyncio.gather(*futures, return_exceptions=True)
        waiters: set[asyncio.Future[Any]] = {gathered, lost}
        try:
            done, _ = await asyncio.wait(waiters, timeout=self._config.ack_timeout_s,
                                         return_when=asyncio.FIRST_COMPLETED)
            if gathered in done:
                return gathered.result()
            if lost in done:
                raise nats.errors.ConnectionClosedError()
            raise nats.errors.TimeoutError()
        finally:
            if not gathered.done():
                # Retrieve whatever it ends with (a CancelledError, or an ack error that came
                # in the meantime), or asyncio logs "_GatheringFuture exception was never
                # retrieved" at ERROR on every broker outage.
                gathered.add_done_callback(_consume)
                for future in futures:
                    future.add_done_callback(_consume)
                gathered.cancel()

    def _check(self, sent: list[Message], results: list[Any]) -> int:
        """Count refusals; raise LinkDown if any ack failed in a way worth retrying."""
        rejected = 0
        for message, result in zip(sent, results, strict=True):
            if isinstance(result, PubAck):
                if result.duplicate:
                    self.duplicates += 1
                continue
            if isinstance(result, TRANSIENT_ACK_ERRORS):
                raise LinkDown(f"publish ack: {_describe(result)}")
            rejected += self._rejected(message, result)
        return rejected

    def _rejected(self, message: Message, exc: BaseException) -> int:
        self._rejections += 1
        level = logging.WARNING if self._rejections == 1 else logging.DEBUG
        logger.log(level, "%s: %s message to %s refused for good (%d so far): %s", self.name,
                   message.kind, message.route, self._rejections, _describe(exc))
        return 1


def _covers(pattern: str, subject: str) -> bool:
    """Whether subscription ``pattern`` matches every subject under ``subject`` (``x.>``)."""
    wanted = subject.split(".")
    for index, token in enumerate(pattern.split(".")):
        if token == ">":
            return index < len(wanted)
        if index >= len(wanted) - 1 or (token != "*" and token != wanted[index]):
            return False
    return False


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _consume(future: asyncio.Future[Any]) -> None:
    """Mark a finished future's outcome as seen (nothing else to do with it)."""
    if not future.cancelled():
        future.exception()
