"""Logging: JSON lines or text to stderr, context as fields, secrets redacted.

stdout carries data, so every log line goes to stderr. ``--log-format auto`` (the default)
writes one JSON object per line when stderr is not a terminal (systemd's journal, a
container runtime, a file) and human-readable text on a terminal.

**The structured-log convention** (stdlib ``logging`` with ``extra=``; structlog is not
used, so the hot path pays nothing and every library's records flow through one handler):

* The message is a complete sentence for a human, with lazy ``%s`` arguments (ruff ``G``).
* Context goes into ``extra=`` as well, under these names only, so Loki/Vector queries
  never parse messages::

      market    market slug                      sink      sink name (``file:/x``, ``nats``)
      attempt   1-based retry/reconnect number   delay_s   seconds until the next attempt
      reason    short cause: an exception type   url       a URL (credentials redacted)
                name or a fixed word             profile   partner profile id
      path      a local file or directory        records   a count of records
      healthy   a feed session that ended had delivered events (true/false)

  ``run`` is added to every line by the handler: one id per process start, so the lines of
  one run can be grouped. Build the dict with :func:`fields`, which drops ``None`` values::

      logger.warning("sink %s: broker unavailable, retrying in %.1fs: %s", name, delay, exc,
                     extra=fields(sink=name, delay_s=delay, reason=type(exc).__name__))

* Never log per message at INFO or above; per-message problems go through
  :class:`RateLimitedLog`.

A JSON line::

    {"ts":"2024-05-01T12:00:00.123Z","level":"warning","logger":"sinks.delivery",
     "msg":"sink nats: broker unavailable, retrying in 1.0s: …","sink":"nats",
     "delay_s":1.0,"reason":"LinkDown","run":"5f0c2a9e81d4"}

Fields: ``ts`` (UTC, ms), ``level``, ``logger``, ``msg``, ``exc`` (traceback, when any),
``stack`` (when asked for), ``run``, plus every ``extra={...}`` key the call passed.
Text mode prints ``ts LEVEL logger: message`` and appends, in brackets, the fields whose
value the message does not already show (``run`` is left out; it is logged at start).

:class:`RedactingFilter` sits on the handler, so it sees every record from every logger:
it masks the values of the credential environment variables, the values of the
``X-API-Key``/``lmts-api-key``/``lmts-signature`` headers and URL passwords, in the
message, its arguments, tracebacks and extra fields; a ``url`` field also loses
secret-looking query values.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import time
import uuid
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import IO, Any, Final, Literal

import msgspec

from sinks.url import redact_url
from streamer.partner.auth import ENV_API_KEY, ENV_HMAC_SECRET, ENV_HMAC_TOKEN_ID

__all__ = [
    "FIELDS",
    "LogFormat",
    "JsonFormatter",
    "TextFormatter",
    "fields",
    "RedactingFilter",
    "RateLimitedLog",
    "secret_values",
    "setup_logging",
    "TEXT_FORMAT",
    "REDACTED",
]

LogFormat = Literal["auto", "json", "text"]

TEXT_FORMAT: Final = "%(asctime)s %(levelname)s %(name)s: %(message)s"
REDACTED: Final = "***"
SECRET_ENV_VARS: Final = (ENV_API_KEY, ENV_HMAC_SECRET, ENV_HMAC_TOKEN_ID)
MIN_SECRET_CHARS: Final = 6
"""Shorter values are not masked: they would mangle ordinary words (real keys are longer)."""

FIELDS: Final = frozenset(
    {"market", "sink", "attempt", "delay_s", "reason", "url", "profile", "path", "records",
     "healthy"})
"""The ``extra=`` keys of the convention (see the module docstring); ``run`` is added."""

_SECRET_ENV_RE: Final = re.compile(r"^LIMITLESS_\w*(SECRET|PASSWORD|TOKEN|KEY)\w*$")
_HEADER_RE: Final = re.compile(
    r"""(?ix)
    (["']?(?:x-api-key|lmts-api-key|lmts-signature)["']?\s*[:=]\s*["']?)  # name, separator
    ([^\s"',;}&]+)                                                        # the value
    """
)
_URL_PASSWORD_RE: Final = re.compile(r"(://[^/\s:@]*:)[^/\s@]+@")

# Attributes every LogRecord has; anything else came in through ``extra=``.
_STANDARD_ATTRS: Final = frozenset(
    logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}
_JSON_ENCODER: Final = msgspec.json.Encoder(enc_hook=repr)


class RateLimitedLog:
    """Log a warning at most once per ``interval_s`` per key, with the count skipped.

    Per-message problems (malformed frames, unknown events) must be visible without
    flooding the log when a feed goes bad: the first one is logged at once, later ones
    are summarised.
    """

    def __init__(self, logger: logging.Logger, *, interval_s: float = 10.0) -> None:
        self._logger = logger
        self._interval_s = interval_s
        self._last: dict[str, float] = {}
        self._skipped: dict[str, int] = {}

    def warning(self, key: str, msg: str, *args: Any,
                extra: Mapping[str, object] | None = None) -> None:
        """Log ``msg % args`` unless ``key`` was logged less than interval_s ago."""
        now = time.monotonic()
        last = self._last.get(key)
        if last is not None and now - last < self._interval_s:
            self._skipped[key] = self._skipped.get(key, 0) + 1
            return
        skipped = self._skipped.pop(key, 0)
        self._last[key] = now
        if skipped:
            msg += " (%d similar suppressed)"
            args = (*args, skipped)
        self._logger.warning(msg, *args, extra=extra)


def fields(**context: object) -> dict[str, object]:
    """``extra=`` for a log call: the given fields, without the ``None`` ones.

    Raises:
        ValueError: a name outside :data:`FIELDS` (a typo would silently start a new
            field in every log pipeline downstream).
    """
    unknown = context.keys() - FIELDS
    if unknown:
        raise ValueError(f"not a log field: {sorted(unknown)}; see streamer.ops.logutil.FIELDS")
    return {key: value for key, value in context.items() if value is not None}


def secret_values(env: Mapping[str, str]) -> tuple[str, ...]:
    """Values to mask: the credential variables and any ``LIMITLESS_*SECRET/PASSWORD/TOKEN/KEY*``.

    Args:
        env: the process environment (the CLI passes ``os.environ``).
    """
    names = set(SECRET_ENV_VARS) | {n for n in env if _SECRET_ENV_RE.match(n)}
    values = {env[n].strip() for n in names if n in env}
    # Longest first, so a secret containing another is masked whole.
    return tuple(sorted((v for v in values if len(v) >= MIN_SECRET_CHARS), key=len,
                        reverse=True))


class RedactingFilter(logging.Filter):
    """Masks secrets in every record that passes through the handler it is attached to.

    The record is rewritten in place (message rendered, ``args`` cleared, traceback
    rendered into ``exc_text``) so every formatter downstream sees only redacted text.

    Args:
        secrets: literal values to mask (see :func:`secret_values`).
    """

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self._secrets = tuple(s for s in secrets if len(s) >= MIN_SECRET_CHARS)
        self._tb = logging.Formatter()

    def redact(self, text: str) -> str:
        """``text`` with every known secret, auth header value and URL password masked."""
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, REDACTED)
        text = _HEADER_RE.sub(lambda m: m.group(1) + REDACTED, text)
        return _URL_PASSWORD_RE.sub(lambda m: m.group(1) + REDACTED + "@", text)

    def filter(self, record: logging.LogRecord) -> bool:
        """Redact ``record`` in place; never drops it."""
        try:
            message = record.getMessage()
        except (TypeError, ValueError):  # a bad format string: keep it visible, not fatal
            message = f"{record.msg!s} {record.args!r}"
        record.msg = self.redact(message)
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = self._tb.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.redact(record.exc_text)
        if record.stack_info:
            record.stack_info = self.redact(record.stack_info)
        for key, value in list(record.__dict__.items()):
            if key not in _STANDARD_ATTRS and isinstance(value, str):
                if key == "url":
                    value = redact_url(value)
                setattr(record, key, self.redact(value))
        return True


class RunFilter(logging.Filter):
    """Adds ``run`` (one id per process start) to every record that has none."""

    def __init__(self, run: str) -> None:
        super().__init__()
        self.run = run

    def filter(self, record: logging.LogRecord) -> bool:
        """Tag ``record``; never drops it."""
        if "run" not in record.__dict__:
            record.run = self.run
        return True


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    return {key: value for key, value in record.__dict__.items()
            if key not in _STANDARD_ATTRS}


class JsonFormatter(logging.Formatter):
    """One JSON object per line (see the module docstring for the fields)."""

    def format(self, record: logging.LogRecord) -> str:
        """Render ``record`` as a single-line JSON object."""
        out: dict[str, Any] = {
            "ts": _iso_utc(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            out["exc"] = record.exc_text
        if record.stack_info:
            out["stack"] = self.formatStack(record.stack_info)
        for key, value in _extras(record).items():
            if key not in out:
                out[key] = value
        return _JSON_ENCODER.encode(out).decode("utf-8")


class TextFormatter(logging.Formatter):
    """``ts LEVEL logger: message [field=value ...]`` for a terminal.

    Only the fields whose value the message does not already show are appended, so a
    well-written message reads as before; ``run`` is left out.
    """

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        """The classic text line, with the missing fields in brackets before a traceback."""
        message = record.getMessage()
        shown = [f"{key}={value}" for key, value in _extras(record).items()
                 if key != "run" and str(value) not in message]
        if not shown:
            return super().format(record)
        saved_msg, saved_args = record.msg, record.args
        record.msg, record.args = f"{message} [{' '.join(shown)}]", None
        try:
            return super().format(record)
        finally:
            record.msg, record.args = saved_msg, saved_args


def _iso_utc(created: float) -> str:
    return datetime.fromtimestamp(created, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def setup_logging(
    level: str,
    fmt: LogFormat = "auto",
    *,
    env: Mapping[str, str] | None = None,
    stream: IO[str] | None = None,
    run: str | None = None,
) -> logging.Handler:
    """Send every log line to stderr as JSON or text, with secrets redacted.

    Args:
        level: ``debug``, ``info``, ``warning`` or ``error``.
        fmt: ``json``, ``text``, or ``auto`` (text on a terminal, JSON otherwise).
        env: where the credential variables are read (default ``os.environ``; called at
            startup by the CLI, never at import time).
        stream: output (default ``sys.stderr``).
        run: the ``run`` field of every line (default: a fresh random id).

    Returns:
        The installed handler (tests inspect or remove it).
    """
    out = sys.stderr if stream is None else stream
    handler = logging.StreamHandler(out)
    use_json = fmt == "json" or (fmt == "auto" and not _isatty(out))
    handler.setFormatter(JsonFormatter() if use_json else TextFormatter())
    handler.addFilter(RedactingFilter(secret_values(os.environ if env is None else env)))
    handler.addFilter(RunFilter(run or uuid.uuid4().hex[:12]))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("websockets", "httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(max(root.level, logging.WARNING))
    # aiokafka logs every reconnect attempt and retried batch during an outage (ERROR and
    # WARNING); the Kafka sink reports the outage itself, once, and in its metrics.
    logging.getLogger("aiokafka").setLevel(max(root.level, logging.CRITICAL))
    return handler


def _isatty(stream: IO[str]) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # no isatty, or already closed
        return False
