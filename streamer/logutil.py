"""Logging: JSON lines or text to stderr, secrets redacted, rate-limited per-message warnings.

stdout carries data, so every log line goes to stderr. ``--log-format auto`` (the default)
writes one JSON object per line when stderr is not a terminal (systemd's journal, a
container runtime, a file) and human-readable text on a terminal::

    {"ts":"2024-05-01T12:00:00.123Z","level":"warning","logger":"streamer.feed",
     "msg":"feed disconnected (ServerDisconnect: …); reconnecting in 1.0s (attempt 1)"}

Fields: ``ts`` (UTC, ms), ``level``, ``logger``, ``msg``, ``exc`` (traceback, when
any), ``stack`` (when asked for), plus every ``extra={...}`` key the call passed.

:class:`RedactingFilter` sits on the handler, so it sees every record from every logger:
it masks the values of the credential environment variables, the values of the
``X-API-Key``/``lmts-api-key``/``lmts-signature`` headers and URL passwords, in the
message, its arguments, tracebacks and extra fields.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import time
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import IO, Any, Final, Literal

import msgspec

from streamer.auth import ENV_API_KEY, ENV_HMAC_SECRET, ENV_HMAC_TOKEN_ID

__all__ = [
    "LogFormat",
    "JsonFormatter",
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

    def warning(self, key: str, msg: str, *args: Any) -> None:
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
        self._logger.warning(msg, *args)


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
                setattr(record, key, self.redact(value))
        return True


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
        for key, value in record.__dict__.items():
            if key not in _STANDARD_ATTRS and key not in out:
                out[key] = value
        return _JSON_ENCODER.encode(out).decode("utf-8")


def _iso_utc(created: float) -> str:
    return datetime.fromtimestamp(created, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def setup_logging(
    level: str,
    fmt: LogFormat = "auto",
    *,
    env: Mapping[str, str] | None = None,
    stream: IO[str] | None = None,
) -> logging.Handler:
    """Send every log line to stderr as JSON or text, with secrets redacted.

    Args:
        level: ``debug``, ``info``, ``warning`` or ``error``.
        fmt: ``json``, ``text``, or ``auto`` (text on a terminal, JSON otherwise).
        env: where the credential variables are read (default ``os.environ``; called at
            startup by the CLI, never at import time).
        stream: output (default ``sys.stderr``).

    Returns:
        The installed handler (tests inspect or remove it).
    """
    out = sys.stderr if stream is None else stream
    handler = logging.StreamHandler(out)
    use_json = fmt == "json" or (fmt == "auto" and not _isatty(out))
    handler.setFormatter(JsonFormatter() if use_json else logging.Formatter(TEXT_FORMAT))
    handler.addFilter(RedactingFilter(secret_values(os.environ if env is None else env)))
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
