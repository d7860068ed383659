"""Sink URLs → :class:`~sinks.fanout.SinkSpec`.

Forms::

    stdout:            (or "-")
    file:out.ndjson    file:///var/lib/streamer/out.ndjson    file:~/out.ndjson
        ?max_bytes=100MB&rotate=1h&keep=24
    nats://host:4222/PREFIX?stream=NAME&retention=limits&max_age=24h&dup_window=2m
        &storage=file&replicas=1&ack_timeout=5s&spool=PATH&spool_max=1GB
    redis://host:6379/DB?stream=KEY&per_market=false&maxlen=100000&timeout=5s
        &spool=PATH&spool_max=1GB
    kafka://[user:pass@]host:9092[,host:port...]/TOPIC?compression=zstd&linger=5ms
        &batch_size=1MB&create=false&partitions=1&replication=1&ack_timeout=10s
        &security=plaintext&spool=PATH&spool_max=1GB

``nats://``, ``redis://`` and ``kafka://`` are described in :mod:`sinks.nats`,
:mod:`sinks.redis` and :mod:`sinks.kafka` (their client libraries are optional dependencies,
imported only when such a URL is parsed).
``spool=PATH`` gives a queue sink an outage spool (:mod:`sinks.spool`) bounded by
``spool_max`` (default 1GB); without it an outage raises SinkUnavailable at once.

Options every scheme accepts: ``policy`` (conflate | block | drop-oldest | drop-newest;
default ``conflate``: a sink that falls behind gets the newest book per market, see
:mod:`sinks.fanout`), ``queue`` (queue size), ``batch`` (records per write), ``on_error``
(retry | disable | crash), ``name`` (the label in logs and metrics), and the routing options
``types`` (comma-separated record types, e.g. ``book,book_delta``) and ``markets``
(comma-separated glob patterns of market slugs, e.g. ``btc-*``) that choose which records
the sink gets (:class:`sinks.routing.Route`). Sizes take SI or IEC suffixes (``100MB``,
``1GiB``, ``64k``); intervals take ``ms s m h d w`` and combinations (``1h``, ``30m``,
``86400s``, ``1h30m``).

Schemes live in :data:`SCHEMES`; a new one is one
:func:`register_scheme` call with a factory that builds the sink without connecting (the
fan-out calls ``open()``). Errors are :class:`SinkConfigError` with a one-line message that
names the option and shows the URL with any password replaced by ``***``.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Final, TypeVar
from urllib.parse import parse_qsl, unquote, urlsplit

if TYPE_CHECKING:
    from sinks.spool import Spool

from sinks.base import Sink, SinkConfigError
from sinks.fanout import (
    DEFAULT_BATCH_MAX,
    DEFAULT_QUEUE_SIZE,
    ON_ERROR_CHOICES,
    OnError,
    OverflowPolicy,
    SinkSpec,
)
from sinks.file import FileSink
from sinks.routing import Route
from sinks.stdout import StdoutSink

__all__ = [
    "SinkUrl",
    "Scheme",
    "SCHEMES",
    "COMMON_OPTIONS",
    "register_scheme",
    "parse_sink_url",
    "parse_size",
    "parse_interval",
    "redact_url",
]

DEFAULT_POLICY: Final = OverflowPolicy.CONFLATE
"""Every ``orderbookUpdate`` is a full book, so a sink that falls behind loses nothing by
getting the newest state per market when it catches up; it never stalls the feed."""
COMMON_OPTIONS: Final = frozenset({"policy", "queue", "batch", "on_error", "name", "types",
                                   "markets"})
SPOOL_OPTIONS: Final = frozenset({"spool", "spool_max"})
DEFAULT_SPOOL_MAX: Final = "1GB"
NATS_OPTIONS: Final = frozenset({"stream", "retention", "max_age", "dup_window", "storage",
                                 "replicas", "ack_timeout"}) | SPOOL_OPTIONS
REDIS_OPTIONS: Final = frozenset({"stream", "per_market", "maxlen", "timeout"}) | SPOOL_OPTIONS
KAFKA_OPTIONS: Final = frozenset({
    "compression", "linger", "batch_size", "create", "partitions", "replication", "ack_timeout",
    "security", "sasl_mechanism", "sasl_username", "sasl_password", "ssl_cafile",
    "ssl_certfile", "ssl_keyfile", "ssl_password",
}) | SPOOL_OPTIONS
_TRUE: Final = frozenset({"1", "true", "yes", "on"})
_FALSE: Final = frozenset({"0", "false", "no", "off"})
SECRET_QUERY_KEYS: Final = frozenset({"password", "pass", "token", "secret", "key",
                                      "sasl_password", "ssl_password"})

_SIZE_RE: Final = re.compile(r"(\d+(?:\.\d+)?)\s*([a-z]*)", re.IGNORECASE)
_SIZE_UNITS: Final[Mapping[str, int]] = {
    "": 1, "b": 1,
    "k": 10**3, "kb": 10**3, "kib": 2**10,
    "m": 10**6, "mb": 10**6, "mib": 2**20,
    "g": 10**9, "gb": 10**9, "gib": 2**30,
    "t": 10**12, "tb": 10**12, "tib": 2**40,
}
_INTERVAL_PART_RE: Final = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)", re.IGNORECASE)
_INTERVAL_UNITS: Final[Mapping[str, Decimal]] = {
    "ms": Decimal("0.001"), "s": Decimal(1), "m": Decimal(60), "h": Decimal(3600),
    "d": Decimal(86400), "w": Decimal(604800),
}
_USERINFO_PASSWORD_RE: Final = re.compile(r"(//[^/?#@:]*:)[^/?#@]*@")

_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class SinkUrl:
    """A parsed sink URL, as handed to a scheme's factory.

    Attributes:
        shown: the URL with secrets redacted (for messages).
        scheme: lower-case scheme (``file``).
        netloc: ``user:pass@host:port`` part (empty for ``file:``).
        path: percent-decoded path.
        options: the scheme's own query options (common ones removed).
        name: the ``name`` option, if given.
    """

    shown: str
    scheme: str
    netloc: str
    path: str
    options: Mapping[str, str] = field(default_factory=dict)
    name: str | None = None

    def error(self, detail: str) -> SinkConfigError:
        """A :class:`SinkConfigError` about this URL."""
        return SinkConfigError(f"sink URL {self.shown!r}", detail)


@dataclass(frozen=True, slots=True)
class Scheme:
    """How to build the sink of one URL scheme.

    Attributes:
        factory: builds the sink (must not do I/O).
        options: the query options this scheme accepts besides :data:`COMMON_OPTIONS`.
    """

    factory: Callable[[SinkUrl], Sink]
    options: frozenset[str] = frozenset()


SCHEMES: Final[dict[str, Scheme]] = {}


def register_scheme(name: str, factory: Callable[[SinkUrl], Sink],
                    options: frozenset[str] = frozenset()) -> None:
    """Make ``name:`` URLs build their sink with ``factory``."""
    SCHEMES[name.lower()] = Scheme(factory, options)


def parse_sink_url(url: str) -> SinkSpec:
    """Parse one sink URL into a spec (the sink is built but not opened).

    Raises:
        SinkConfigError: unknown scheme or option, or a bad option value.
    """
    text = "stdout:" if url.strip() in ("-", "stdout") else url.strip()
    parsed = _split(text)
    common = {key: parsed.options[key] for key in COMMON_OPTIONS & parsed.options.keys()}
    own = {key: value for key, value in parsed.options.items() if key not in common}
    parsed = SinkUrl(parsed.shown, parsed.scheme, parsed.netloc, parsed.path, own,
                     common.get("name") or None)
    sink = SCHEMES[parsed.scheme].factory(parsed)
    return SinkSpec(
        sink=sink,
        policy=_policy(parsed, common.get("policy", DEFAULT_POLICY.value)),
        queue_size=_int_option(parsed, "queue", common.get("queue"), DEFAULT_QUEUE_SIZE, 1),
        batch_max=_int_option(parsed, "batch", common.get("batch"), DEFAULT_BATCH_MAX, 1),
        on_error=_on_error(parsed, common.get("on_error", "retry")),
        route=_route(parsed, common.get("types"), common.get("markets")),
    )


def _split(text: str) -> SinkUrl:
    shown = redact_url(text)
    scheme_text, sep, _ = text.partition(":")
    scheme_name = scheme_text.lower()
    if not sep or not scheme_text:
        raise SinkConfigError(f"sink URL {shown!r}", f"no scheme; expected one of {_known()}")
    scheme = SCHEMES.get(scheme_name)
    if scheme is None:
        raise SinkConfigError(f"sink URL {shown!r}",
                              f"unknown scheme {scheme_name!r}; expected one of {_known()}")
    try:
        split = urlsplit(text)
        pairs = parse_qsl(split.query, keep_blank_values=True, strict_parsing=bool(split.query))
    except ValueError as exc:
        raise SinkConfigError(f"sink URL {shown!r}", f"malformed: {exc}") from None
    base = SinkUrl(shown, scheme_name, split.netloc, unquote(split.path))
    if split.fragment:
        raise base.error("a '#' starts a fragment; percent-encode it as %23")
    options: dict[str, str] = {}
    for key, value in pairs:
        if key in options:
            raise base.error(f"option {key!r} is given twice")
        if key not in COMMON_OPTIONS and key not in scheme.options:
            known = ", ".join(sorted(COMMON_OPTIONS | scheme.options))
            raise base.error(f"unknown option {key!r} for {scheme_name}: (known: {known})")
        options[key] = value
    return SinkUrl(shown, scheme_name, split.netloc, base.path, options)


def _known() -> str:
    return ", ".join(f"{name}:" for name in sorted(SCHEMES))


def _policy(url: SinkUrl, value: str) -> OverflowPolicy:
    try:
        return OverflowPolicy(value.lower().replace("_", "-"))
    except ValueError:
        choices = ", ".join(OverflowPolicy)
        raise url.error(f"option 'policy': {value!r} is not one of {choices}") from None


def _route(url: SinkUrl, types: str | None, markets: str | None) -> Route | None:
    try:
        return Route.parse(types, markets)
    except ValueError as exc:
        raise url.error(str(exc)) from None


def _on_error(url: SinkUrl, value: str) -> OnError:
    for choice in ON_ERROR_CHOICES:
        if value.lower() == choice:
            return choice
    raise url.error(f"option 'on_error': {value!r} is not one of {', '.join(ON_ERROR_CHOICES)}")


def _int_option(url: SinkUrl, key: str, value: str | None, default: int, minimum: int) -> int:
    if value is None:
        return default
    try:
        number = int(value)
    except ValueError:
        raise url.error(f"option {key!r}: {value!r} is not an integer") from None
    if number < minimum:
        raise url.error(f"option {key!r}: must be >= {minimum}, got {number}")
    return number


def parse_size(text: str) -> int:
    """``"100MB"`` → 100_000_000, ``"1GiB"`` → 2**30, ``"4096"`` → 4096 (bytes, >= 1).

    Raises:
        ValueError: not a size, or below one byte.
    """
    match = _SIZE_RE.fullmatch(text.strip())
    unit = _SIZE_UNITS.get(match[2].lower()) if match else None
    if match is None or unit is None:
        raise ValueError(f"{text!r} is not a size like 4096, 100MB or 1GiB")
    size = int(Decimal(match[1]) * unit)
    if size < 1:
        raise ValueError(f"{text!r} is less than one byte")
    return size


def parse_interval(text: str) -> float:
    """``"1h"`` → 3600.0, ``"1h30m"`` → 5400.0, ``"86400"``/``"86400s"`` → 86400.0 (> 0).

    Raises:
        ValueError: not an interval, or not positive.
    """
    stripped = text.strip()
    try:
        total = Decimal(stripped) if stripped and stripped[-1].isdigit() else None
    except InvalidOperation:
        total = None
    if total is None:
        parts = _INTERVAL_PART_RE.findall(stripped)
        if not parts or "".join(n + u for n, u in parts) != stripped:
            raise ValueError(f"{text!r} is not an interval like 30m, 1h or 86400s")
        total = sum((Decimal(n) * _INTERVAL_UNITS[u.lower()] for n, u in parts), Decimal(0))
    seconds = float(total)
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"{text!r} is not a positive, finite interval")
    return seconds


def redact_url(url: str) -> str:
    """``url`` with the userinfo password and secret-looking query values replaced by ``***``."""
    redacted = _USERINFO_PASSWORD_RE.sub(r"\1***@", url)
    base, sep, query = redacted.partition("?")
    if not sep:
        return redacted
    return f"{base}?{'&'.join(_redact_pair(item) for item in query.split('&'))}"


def _redact_pair(item: str) -> str:
    key, eq, _ = item.partition("=")
    return f"{key}=***" if eq and key.lower() in SECRET_QUERY_KEYS else item


# -- built-in schemes -------------------------------------------------------------------------


def _stdout(url: SinkUrl) -> Sink:
    if url.netloc or url.path:
        raise url.error("stdout: takes no path or host")
    return StdoutSink(name=url.name or "stdout")


def _file(url: SinkUrl) -> Sink:
    if url.netloc not in ("", "localhost"):
        raise url.error(f"file URL host {url.netloc!r} is not supported; "
                        "use file:relative/path or file:///absolute/path")
    if not url.path:
        raise url.error("file: needs a path")
    options = url.options
    return FileSink(
        os.path.expanduser(url.path),
        max_bytes=_converted(url, "max_bytes", parse_size),
        rotate_interval_s=_converted(url, "rotate", parse_interval),
        keep=_int_option(url, "keep", options.get("keep"), -1, 0) if "keep" in options else None,
        name=url.name,
    )


def _converted(url: SinkUrl, key: str, convert: Callable[[str], _T]) -> _T | None:
    value = url.options.get(key)
    if value is None:
        return None
    try:
        return convert(value)
    except ValueError as exc:
        raise url.error(f"option {key!r}: {exc}") from None


def _spool(url: SinkUrl) -> Spool | None:
    from sinks.spool import Spool

    path = url.options.get("spool")
    if not path:
        if "spool_max" in url.options:
            raise url.error("option 'spool_max' needs 'spool' (a directory)")
        return None
    max_bytes = _converted(url, "spool_max", parse_size) or parse_size(DEFAULT_SPOOL_MAX)
    return Spool(os.path.expanduser(path), max_bytes=max_bytes)


def _optional_import_error(url: SinkUrl, package: str, extra: str) -> SinkConfigError:
    return url.error(f"{url.scheme}:// needs the {package} package "
                     f"(pip install 'limitless-streamer[{extra}]')")


def _nats(url: SinkUrl) -> Sink:
    try:
        from sinks.nats import NatsConfig, NatsJetStreamSink
    except ImportError:
        raise _optional_import_error(url, "nats-py", "nats") from None
    options = url.options
    host = url.netloc.rpartition("@")[2]
    if not host:
        raise url.error("nats:// needs a host, e.g. nats://127.0.0.1:4222/limitless")
    netloc = url.netloc if ":" in host else f"{url.netloc}:4222"
    try:
        config = NatsConfig(
            server=f"nats://{netloc}",
            prefix=url.path.strip("/"),
            stream=options.get("stream") or None,
            retention=options.get("retention", "limits").lower(),
            max_age_s=_converted(url, "max_age", parse_interval) or 24 * 3600.0,
            dup_window_s=_converted(url, "dup_window", parse_interval) or 120.0,
            storage=options.get("storage", "file").lower(),
            replicas=_int_option(url, "replicas", options.get("replicas"), 1, 1),
            ack_timeout_s=_converted(url, "ack_timeout", parse_interval) or 5.0,
        )
    except ValueError as exc:
        raise url.error(str(exc)) from None
    return NatsJetStreamSink(config, spool=_spool(url), name=url.name)


def _redis(url: SinkUrl) -> Sink:
    try:
        from sinks.redis import RedisConfig, RedisStreamSink
    except ImportError:
        raise _optional_import_error(url, "redis", "redis") from None
    options = url.options
    try:
        split = urlsplit(f"//{url.netloc}")
        port = split.port or 6379
    except ValueError as exc:
        raise url.error(f"bad host:port: {exc}") from None
    db_text = url.path.strip("/") or "0"
    if not db_text.isdigit():
        raise url.error(f"the path is the database number, got {db_text!r}")
    try:
        config = RedisConfig(
            host=split.hostname or "localhost", port=port, db=int(db_text),
            username=unquote(split.username) if split.username else None,
            password=unquote(split.password) if split.password else None,
            stream=options.get("stream", "limitless"),
            per_market=_bool_option(url, "per_market", False),
            maxlen=_maxlen(url),
            timeout_s=_converted(url, "timeout", parse_interval) or 5.0,
        )
    except ValueError as exc:
        raise url.error(str(exc)) from None
    return RedisStreamSink(config, spool=_spool(url), name=url.name)


def _kafka(url: SinkUrl) -> Sink:
    try:
        from sinks.kafka import DEFAULT_PORT, KafkaConfig, KafkaSink
    except ImportError:
        raise _optional_import_error(url, "aiokafka", "kafka") from None
    options = url.options
    userinfo, _, hosts = url.netloc.rpartition("@")
    if not hosts:
        raise url.error("kafka:// needs a broker, e.g. kafka://127.0.0.1:9092/limitless")
    username, _, password = userinfo.partition(":")
    servers = tuple(host if ":" in host.rpartition("]")[2] else f"{host}:{DEFAULT_PORT}"
                    for host in hosts.split(","))
    linger_s = 0.0 if options.get("linger", "").strip() in ("0", "0ms", "0s") \
        else _converted(url, "linger", parse_interval)
    try:
        config = KafkaConfig(
            bootstrap=servers,
            topic=url.path.strip("/"),
            compression=options.get("compression", "none").lower(),
            linger_ms=5 if linger_s is None else round(linger_s * 1000),
            batch_bytes=_converted(url, "batch_size", parse_size) or 2**20,
            create=_bool_option(url, "create", False),
            partitions=_int_option(url, "partitions", options.get("partitions"), 1, 1),
            replication=_int_option(url, "replication", options.get("replication"), 1, 1),
            ack_timeout_s=_converted(url, "ack_timeout", parse_interval) or 10.0,
            security_protocol=options.get("security", "plaintext").upper(),
            sasl_mechanism=options.get("sasl_mechanism", "PLAIN").upper(),
            username=options.get("sasl_username") or unquote(username) or None,
            password=options.get("sasl_password") or unquote(password) or None,
            ssl_cafile=options.get("ssl_cafile") or None,
            ssl_certfile=options.get("ssl_certfile") or None,
            ssl_keyfile=options.get("ssl_keyfile") or None,
            ssl_password=options.get("ssl_password") or None,
        )
    except ValueError as exc:
        raise url.error(str(exc)) from None
    return KafkaSink(config, spool=_spool(url), name=url.name)


def _bool_option(url: SinkUrl, key: str, default: bool) -> bool:
    value = url.options.get(key)
    if value is None:
        return default
    if value.lower() in _TRUE | _FALSE:
        return value.lower() in _TRUE
    raise url.error(f"option {key!r}: {value!r} is not true or false")


def _maxlen(url: SinkUrl) -> int | None:
    value = url.options.get("maxlen")
    if value is not None and value.lower() == "none":
        return None
    return _int_option(url, "maxlen", value, 100_000, 1)


register_scheme("stdout", _stdout)
register_scheme("file", _file, frozenset({"max_bytes", "rotate", "keep"}))
register_scheme("nats", _nats, NATS_OPTIONS)
register_scheme("redis", _redis, REDIS_OPTIONS)
register_scheme("kafka", _kafka, KAFKA_OPTIONS)
