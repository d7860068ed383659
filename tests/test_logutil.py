"""streamer.logutil: JSON lines, format choice, secret redaction."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import msgspec
import pytest

from streamer.logutil import RedactingFilter, secret_values, setup_logging

SECRET = "c2VjcmV0LWhtYWMta2V5LWJ5dGVz"
API_KEY = "lmts_0123456789abcdef"


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def restore_root() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [msgspec.json.decode(line) for line in stream.getvalue().splitlines()]


@pytest.mark.usefixtures("restore_root")
def test_setup_logging_auto_writes_json_lines_when_not_a_tty() -> None:
    out = io.StringIO()
    setup_logging("info", "auto", env={}, stream=out)
    log = logging.getLogger("streamer.feed")
    log.info("feed connected: %s joined", "/markets", extra={"market": "btc", "n": 3})
    log.debug("not shown")
    try:
        raise ValueError("boom\nsecond line")
    except ValueError:
        log.exception("fatal")
    first, second = lines(out)
    assert first["level"] == "info" and first["logger"] == "streamer.feed"
    assert first["msg"] == "feed connected: /markets joined"
    assert first["market"] == "btc" and first["n"] == 3
    assert str(first["ts"]).endswith("Z")
    assert "ValueError: boom" in str(second["exc"])
    assert len(out.getvalue().splitlines()) == 2  # a multi-line traceback stays one line


@pytest.mark.usefixtures("restore_root")
def test_setup_logging_auto_writes_text_on_a_terminal() -> None:
    out = Tty()
    setup_logging("info", "auto", env={}, stream=out)
    logging.getLogger("streamer").warning("hello %d", 5)
    assert out.getvalue().rstrip().endswith("WARNING streamer: hello 5")
    json_out = Tty()
    setup_logging("info", "json", env={}, stream=json_out)
    logging.getLogger("streamer").warning("x")
    assert lines(json_out)[0]["msg"] == "x"


@pytest.mark.usefixtures("restore_root")
def test_setup_logging_redacts_env_secrets_headers_and_tracebacks() -> None:
    out = io.StringIO()
    env = {"LIMITLESS_HMAC_SECRET": SECRET, "LIMITLESS_API_KEY": API_KEY,
           "LIMITLESS_NATS_PASSWORD": "hunter2hunter2", "HOME": "/root"}
    setup_logging("debug", "json", env=env, stream=out)
    log = logging.getLogger("streamer.transport.rest")
    log.warning("signing with %s", SECRET)
    log.warning("headers: %r", {"lmts-signature": "AbC+/sig=", "X-API-Key": API_KEY,
                                "lmts-timestamp": "2024-01-01T00:00:00.000Z"})
    log.info("raw header line X-API-Key: zzzzzzzzzz", extra={"url": "nats://u:pw12345@h:4222"})
    log.info("password hunter2hunter2 in text")
    try:
        raise RuntimeError(f"key {API_KEY} rejected")
    except RuntimeError:
        log.exception("request failed")
    text = out.getvalue()
    for leaked in (SECRET, API_KEY, "AbC+/sig=", "zzzzzzzzzz", "pw12345", "hunter2hunter2"):
        assert leaked not in text, leaked
    assert "2024-01-01T00:00:00.000Z" in text  # the timestamp header is not a secret
    assert text.count("***") >= 6


def test_redacting_filter_survives_a_bad_format_string() -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "%d items %s", ("x", API_KEY),
                               None)
    assert RedactingFilter([API_KEY]).filter(record) is True
    assert API_KEY not in record.getMessage()


def test_secret_values_skip_short_and_unrelated_vars() -> None:
    env = {"LIMITLESS_API_KEY": "abc", "LIMITLESS_REDIS_TOKEN": "tok-123456",
           "PATH": "/usr/bin:/bin", "LIMITLESS_API_URL": "https://api.example"}
    assert secret_values(env) == ("tok-123456",)
