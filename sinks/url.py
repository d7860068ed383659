"""Sink URLs → :class:`~sinks.fanout.SinkSpec`.

Forms::

    stdout:            (or "-")
    file:out.ndjson    file:///var/lib/streamer/out.ndjson    file:~/out.ndjson
        ?max_bytes=100MB&rotate=1h&keep=24

Options every scheme accepts: ``policy`` (block | drop-oldest | drop-newest), ``queue`` (queue
size), ``batch`` (records per write), ``on_error`` (retry | disable | crash) and ``name`` (the
label in logs and metrics). Sizes take SI or IEC suffixes (``100MB``, ``1GiB``, ``64k``);
intervals take ``ms s m h d w`` and combinations (``1h``, ``30m``, ``86400s``, ``1h30m``).

Schemes live in :data:`SCHEMES`; a new one (``nats://``, ``redis://``) is one
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
from typing import Final, TypeVar
from urllib.parse import parse_qsl, unquote, urlsplit

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

COMMON_OPTIONS: Final = frozenset({"policy", "queue", "batch", "on_error", "name"})
SECRET_QUERY_KEYS: Final = frozenset({"password", "pass", "token", "secret", "key"})

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
        policy=_policy(parsed, common.get("policy", OverflowPolicy.BLOCK.value)),
        queue_size=_int_option(parsed, "queue", common.get("queue"), DEFAULT_QUEUE_SIZE, 1),
        batch_max=_int_option(parsed, "batch", common.get("batch"), DEFAULT_BATCH_MAX, 1),
        on_error=_on_error(parsed, common.get("on_error", "retry")),
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


register_scheme("stdout", _stdout)
register_scheme("file", _file, frozenset({"max_bytes", "rotate", "keep"}))
