"""Hot standby: a broker lease decides which of several hot daemons publishes.

Every daemon started with the same ``--lease URL`` runs hot (connected, subscribed, books
kept); only the one holding the lease publishes, through the fan-out's
:class:`~sinks.gate.PublishGate`. Backends:

- ``nats://HOST:PORT/BUCKET?ttl=3s[&key=leader]``: a JetStream key-value bucket whose
  TTL is the lease ttl. Acquire = ``create`` (only if the key is absent); renew =
  ``update`` with the revision we wrote last (fails if anyone else wrote); an unrenewed
  entry expires after ttl and the key is free again.
- ``redis://HOST:PORT/DB?key=KEY&ttl=3s``: ``SET KEY holder NX PX ttl``; renew is a Lua
  compare-and-``PEXPIRE``, release a compare-and-``DEL``.

Fencing (:class:`Lease`): each successful acquire or renewal, *sent* at monotonic time t,
lets the gate stay open until t + 2/3 ttl; a renewal is attempted at t + ttl/3. The
broker's expiry is at least t + ttl, so the gate shuts a third of a ttl before the lease
can pass to another daemon, as soon as one renewal is late or fails. The monotonic clock
runs on while the process is frozen (SIGSTOP): a resumed holder finds its deadline passed
and publishes nothing until it acquires the lease again, which starts a new run (every
market re-published as a ``book`` with ``seq`` 1 under a fresh ``run``).

Residual window, stated plainly: a sink write that had already passed the gate when the
process was frozen completes after it resumes. Consumers are safe anyway: the records
carry the old run, which they have left (see :mod:`orderbook.replay`).
"""

from __future__ import annotations

import logging
import os
import re
import socket
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final, Literal, Protocol
from urllib.parse import parse_qs, unquote, urlsplit

import anyio
from anyio.abc import TaskStatus

from sinks.gate import PublishGate
from sinks.records import new_run_id
from streamer.errors import ConfigError

logger = logging.getLogger(__name__)

RENEW_FRACTION: Final = 1 / 3
"""Renew this far into the ttl after the last successful renewal was sent."""
VALID_FRACTION: Final = 2 / 3
"""Publish until this far into the ttl after the last successful renewal was sent."""

DEFAULT_TTL_S: Final = 3.0
DEFAULT_KEY: Final = "leader"
_TTL_RE: Final = re.compile(r"^([0-9]+(?:\.[0-9]+)?)(ms|s)?$")


@dataclass(frozen=True, slots=True)
class LeaseSpec:
    """A parsed ``--lease`` URL (credentials kept out of ``repr``)."""

    kind: Literal["nats", "redis"]
    host: str
    port: int
    bucket: str
    """JetStream key-value bucket (nats) or the database number as text (redis)."""
    key: str
    ttl_s: float
    username: str | None = None
    password: str | None = None

    def __repr__(self) -> str:
        return (f"LeaseSpec({self.kind}://{self.host}:{self.port}/{self.bucket}"
                f"?key={self.key}&ttl={self.ttl_s}s)")

    @property
    def shown(self) -> str:
        """The URL without credentials, for logs."""
        return f"{self.kind}://{self.host}:{self.port}/{self.bucket}?key={self.key}"


def parse_lease_url(url: str) -> LeaseSpec:
    """Parse ``nats://HOST:PORT/BUCKET?ttl=3s[&key=K]`` or ``redis://HOST:PORT/DB?key=K&ttl=3s``.

    Raises:
        ConfigError: one line naming ``lease`` and what is wrong (never the password).
    """
    parts = urlsplit(url)
    if parts.scheme not in ("nats", "redis"):
        raise ConfigError("lease: expected nats://HOST:PORT/BUCKET?ttl=3s or "
                          "redis://HOST:PORT/DB?key=KEY&ttl=3s")
    try:
        port = parts.port
    except ValueError:
        raise ConfigError("lease: invalid port") from None
    if not parts.hostname:
        raise ConfigError("lease: a host is required")
    query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
    unknown = set(query) - {"ttl", "key"}
    if unknown:
        raise ConfigError(f"lease: unknown option(s) {sorted(unknown)} (ttl, key)")
    match = _TTL_RE.match(query.get("ttl", f"{DEFAULT_TTL_S}s"))
    if match is None:
        raise ConfigError(f"lease: ttl must look like 3s or 2500ms, got {query['ttl']!r}")
    ttl_s = float(match[1]) / (1000.0 if match[2] == "ms" else 1.0)
    if not 0.3 <= ttl_s <= 3600:
        raise ConfigError(f"lease: ttl must be between 0.3s and 3600s, got {ttl_s}s")
    path = parts.path.strip("/")
    key = query.get("key", DEFAULT_KEY)
    if not key or not re.fullmatch(r"[A-Za-z0-9_.:=-]{1,200}", key):
        raise ConfigError(f"lease: invalid key {key!r}")
    if parts.scheme == "nats":
        if not re.fullmatch(r"[A-Za-z0-9_-]{1,100}", path):
            raise ConfigError("lease: nats:// needs a key-value bucket name as its path "
                              "(letters, digits, _ and -)")
        bucket = path
    else:
        bucket = path or "0"
        if not bucket.isdigit():
            raise ConfigError(f"lease: redis:// path must be a database number, got {path!r}")
        if "key" not in query:
            raise ConfigError("lease: redis:// needs ?key=KEY")
    return LeaseSpec(parts.scheme,  # type: ignore[arg-type]
                     parts.hostname, port or (4222 if parts.scheme == "nats" else 6379),
                     bucket, key, ttl_s,
                     unquote(parts.username) if parts.username else None,
                     unquote(parts.password) if parts.password else None)


class LeaseUnavailable(Exception):
    """The lease broker could not be asked (down, timeout, refused)."""


class LeaseBackend(Protocol):
    """One broker's lease primitives; every failure is :class:`LeaseUnavailable`."""

    async def acquire(self, holder: str) -> bool:
        """Take the lease if nobody holds it; True if we hold it now."""
        ...

    async def renew(self, holder: str) -> bool:
        """Extend our lease to a full ttl; False if it is not ours any more."""
        ...

    async def release(self, holder: str) -> None:
        """Give the lease up if it is still ours."""
        ...

    async def aclose(self) -> None:
        """Close the connection (never raises)."""
        ...


class NatsLeaseBackend:
    """The lease as one key of a JetStream key-value bucket with TTL = the lease ttl."""

    def __init__(self, spec: LeaseSpec) -> None:
        self._spec = spec
        self._nc: Any = None
        self._kv: Any = None
        self._revision = 0

    async def _bucket(self) -> Any:
        import nats
        from nats.js.api import KeyValueConfig

        if self._kv is not None and self._nc is not None and self._nc.is_connected:
            return self._kv
        await self.aclose()
        spec = self._spec
        try:
            self._nc = await nats.connect(
                servers=[f"nats://{spec.host}:{spec.port}"], user=spec.username,
                password=spec.password, allow_reconnect=False, max_reconnect_attempts=1,
                connect_timeout=max(spec.ttl_s / 3, 0.2), name="limitless-streamer-lease")
            js = self._nc.jetstream()
            self._kv = await js.create_key_value(
                KeyValueConfig(bucket=spec.bucket, ttl=spec.ttl_s, history=1))
        except Exception as exc:  # nats-py raises many unrelated types; mapped here
            await self.aclose()
            raise LeaseUnavailable(f"{spec.shown}: {type(exc).__name__}: {exc}") from exc
        return self._kv

    async def acquire(self, holder: str) -> bool:
        from nats.js.errors import KeyWrongLastSequenceError

        kv = await self._bucket()
        try:
            self._revision = await kv.create(self._spec.key, holder.encode())
        except KeyWrongLastSequenceError:
            return False
        except Exception as exc:
            await self.aclose()
            raise LeaseUnavailable(f"create: {type(exc).__name__}: {exc}") from exc
        return True

    async def renew(self, holder: str) -> bool:
        from nats.js.errors import KeyWrongLastSequenceError

        kv = await self._bucket()
        try:
            self._revision = await kv.update(self._spec.key, holder.encode(),
                                             last=self._revision)
        except KeyWrongLastSequenceError:
            return False
        except Exception as exc:
            await self.aclose()
            raise LeaseUnavailable(f"update: {type(exc).__name__}: {exc}") from exc
        return True

    async def release(self, holder: str) -> None:
        del holder
        kv = await self._bucket()
        try:
            await kv.delete(self._spec.key, last=self._revision)
        except Exception as exc:
            raise LeaseUnavailable(f"delete: {type(exc).__name__}: {exc}") from exc

    async def aclose(self) -> None:
        nc, self._nc, self._kv = self._nc, None, None
        if nc is not None:
            with anyio.move_on_after(1.0):
                try:
                    await nc.close()
                except Exception:  # closing a broken connection: nothing to do
                    logger.debug("lease: closing the NATS connection failed", exc_info=True)


_RENEW_LUA: Final = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
_RELEASE_LUA: Final = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


class RedisLeaseBackend:
    """The lease as one Redis key: ``SET NX PX`` to take it, compare-and-expire to renew."""

    def __init__(self, spec: LeaseSpec) -> None:
        self._spec = spec
        self._client: Any = None
        self._ttl_ms = max(1, int(spec.ttl_s * 1000))

    def _redis(self) -> Any:
        if self._client is None:
            from redis.asyncio import Redis
            from redis.asyncio.retry import Retry
            from redis.backoff import NoBackoff

            spec = self._spec
            timeout = max(spec.ttl_s / 3, 0.2)
            self._client = Redis(host=spec.host, port=spec.port, db=int(spec.bucket),
                                 username=spec.username, password=spec.password,
                                 socket_timeout=timeout, socket_connect_timeout=timeout,
                                 retry=Retry(NoBackoff(), 0), client_name="limitless-lease")
        return self._client

    async def _call(self, what: str, *args: Any) -> Any:
        try:
            return await self._redis().execute_command(*args)
        except Exception as exc:  # redis-py's errors and OSError: mapped here
            await self.aclose()
            raise LeaseUnavailable(f"{what}: {type(exc).__name__}: {exc}") from exc

    async def acquire(self, holder: str) -> bool:
        reply = await self._call("SET NX", "SET", self._spec.key, holder, "NX", "PX",
                                 self._ttl_ms)
        return reply is not None and reply is not False

    async def renew(self, holder: str) -> bool:
        reply = await self._call("renew", "EVAL", _RENEW_LUA, 1, self._spec.key, holder,
                                 self._ttl_ms)
        return bool(reply)

    async def release(self, holder: str) -> None:
        await self._call("release", "EVAL", _RELEASE_LUA, 1, self._spec.key, holder)

    async def aclose(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            with anyio.move_on_after(1.0):
                try:
                    await client.aclose()
                except Exception:  # closing a broken connection: nothing to do
                    logger.debug("lease: closing the Redis client failed", exc_info=True)


def make_backend(spec: LeaseSpec) -> LeaseBackend:
    """The backend for a parsed lease URL."""
    return NatsLeaseBackend(spec) if spec.kind == "nats" else RedisLeaseBackend(spec)


@dataclass(slots=True)
class LeaseStats:
    """Counters of the lease task (exported as metrics)."""

    held: bool = False
    takeovers: int = 0
    """Times this daemon acquired the lease (and started a new run)."""
    lost: Counter[str] = field(default_factory=Counter)
    """Times it stopped publishing, by reason (``late``, ``taken``, ``error``)."""
    errors: int = 0
    """Broker calls that failed (unreachable, timeout)."""


class Lease:
    """The lease task: acquire, renew every ttl/3, fence the gate (module docstring).

    Args:
        spec: the parsed URL.
        backend: the broker primitives.
        gate: the fan-out's gate, opened for a new run on every acquisition.
        on_acquired: called with the new run right after the gate opened (the feed starts
            the run: a ``book`` of every market under it).
        clock: monotonic clock (tests pass a fake one).
    """

    def __init__(self, spec: LeaseSpec, backend: LeaseBackend, gate: PublishGate, *,
                 on_acquired: Callable[[str], None],
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.spec = spec
        self._backend = backend
        self._gate = gate
        self._on_acquired = on_acquired
        self._clock = clock
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{new_run_id()}"
        """This daemon's identity in the lease (unique per process)."""
        self.stats = LeaseStats()
        self._renew_at = 0.0
        self._last_error: str | None = None

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Run until cancelled; on the way out give the lease up if held (bounded)."""
        ttl = self.spec.ttl_s
        logger.info("lease %s: hot standby, ttl %.1fs, holder id %s", self.spec.shown, ttl,
                    self.holder)
        task_status.started()
        try:
            while True:
                if self.stats.held and not self._gate.holding:
                    self._lose("late", "no renewal succeeded in time")
                    await self._release()
                if not self.stats.held:
                    if not await self._acquire():
                        await anyio.sleep(ttl / 6)
                    continue
                await anyio.sleep(max(0.0, self._renew_at - self._clock()))
                await self._renew()
        finally:
            with anyio.CancelScope(shield=True), anyio.move_on_after(1.0):
                if self.stats.held:
                    self._gate.close()
                    self.stats.held = False
                    await self._release()
                await self._backend.aclose()

    async def _acquire(self) -> bool:
        sent = self._clock()
        ok = await self._call(self._backend.acquire, self.spec.ttl_s * RENEW_FRACTION)
        if not ok:
            return False
        now = self._clock()
        deadline = sent + self.spec.ttl_s * VALID_FRACTION
        if now >= deadline:  # the reply came too late to use: let it expire
            return False
        run = new_run_id()
        self._gate.open(run, deadline)
        self._renew_at = sent + self.spec.ttl_s * RENEW_FRACTION
        self.stats.held = True
        self.stats.takeovers += 1
        logger.warning("lease %s acquired: publishing as run %s", self.spec.shown, run)
        self._on_acquired(run)
        return True

    async def _renew(self) -> None:
        sent = self._clock()
        remaining = self._gate.deadline - sent
        if remaining <= 0:
            self._lose("late", "renewal due after the deadline")
            return
        ok = await self._call(self._backend.renew, remaining)
        if ok is None:  # not answered: try again soon; the deadline still fences
            self._renew_at = self._clock() + self.spec.ttl_s / 12
        elif not ok:
            self._lose("taken", "the lease is held by another daemon")
        elif self._clock() < self._gate.deadline:
            self._gate.extend(sent + self.spec.ttl_s * VALID_FRACTION)
            self._renew_at = sent + self.spec.ttl_s * RENEW_FRACTION
        else:
            self._lose("late", "the renewal succeeded after the deadline")
            await self._release()

    async def _call(self, fn: Callable[[str], Any], timeout_s: float) -> bool | None:
        """One broker call bounded by ``timeout_s``; None if it failed (logged on change)."""
        try:
            with anyio.fail_after(timeout_s):
                result: bool | None = await fn(self.holder)
        except (LeaseUnavailable, TimeoutError) as exc:
            self.stats.errors += 1
            text = str(exc) or type(exc).__name__
            if self._last_error is None:
                logger.warning("lease %s: broker call failed: %s", self.spec.shown, text)
            self._last_error = text
            return None
        if self._last_error is not None:
            logger.info("lease %s: broker reachable again", self.spec.shown)
            self._last_error = None
        return result

    def _lose(self, reason: str, detail: str) -> None:
        self._gate.close()
        self.stats.held = False
        self.stats.lost[reason] += 1
        logger.warning("lease %s lost (%s): stopped publishing", self.spec.shown, detail)

    async def _release(self) -> None:
        try:
            with anyio.fail_after(self.spec.ttl_s * RENEW_FRACTION):
                await self._backend.release(self.holder)
        except (LeaseUnavailable, TimeoutError):
            pass  # it expires by itself
