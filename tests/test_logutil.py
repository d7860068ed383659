"""streamer.ops.logutil: JSON lines, format choice, secret redaction."""

from __future__ import annotations

import ast
import io
import logging
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest

from streamer.ops.logutil import FIELDS, RedactingFilter, fields, secret_values, setup_logging

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
    log = logging.getLogger("streamer.feed.feed")
    log.info("feed connected: %s joined", "/markets", extra={"market": "btc", "n": 3})
    log.debug("not shown")
    try:
        raise ValueError("boom\nsecond line")
    except ValueError:
        log.exception("fatal")
    first, second = lines(out)
    assert first["level"] == "info" and first["logger"] == "streamer.feed.feed"
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


@pytest.mark.usefixtures("restore_root")
def test_json_lines_carry_context_fields_and_the_run_id() -> None:
    out = io.StringIO()
    setup_logging("info", "json", env={}, stream=out, run="run-1")
    log = logging.getLogger("sinks.delivery")
    log.warning("sink %s: broker unavailable; reconnecting in %.1fs", "nats", 1.5,
                extra=fields(sink="nats", delay_s=1.5, attempt=2, reason="LinkDown",
                             market=None))
    log.info("starting", extra=fields(url="redis://user:s3cretpw@h:6379/0?stream=x&token=abc"))
    first, second = lines(out)
    assert first["sink"] == "nats" and first["delay_s"] == 1.5 and first["attempt"] == 2
    assert first["reason"] == "LinkDown" and "market" not in first
    assert first["run"] == second["run"] == "run-1"
    assert second["url"] == "redis://user:***@h:6379/0?stream=x&token=***"


@pytest.mark.usefixtures("restore_root")
def test_text_lines_stay_readable_and_append_only_missing_fields() -> None:
    out = Tty()
    setup_logging("info", "auto", env={}, stream=out, run="run-1")
    log = logging.getLogger("sinks.delivery")
    log.warning("sink %s: retrying in %.1fs", "nats", 1.5,
                extra=fields(sink="nats", delay_s=1.5, reason="LinkDown"))
    line = out.getvalue().strip()
    assert line.endswith("WARNING sinks.delivery: sink nats: retrying in 1.5s [reason=LinkDown]")
    assert "run-1" not in line


def test_fields_refuses_names_outside_the_convention() -> None:
    with pytest.raises(ValueError, match="slug"):
        fields(slug="btc")


def _extra_keys(tree: ast.AST) -> Iterator[tuple[int, str]]:
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        for keyword in node.keywords:
            if keyword.arg != "extra":
                continue
            value = keyword.value
            if isinstance(value, ast.Dict):
                for key in value.keys:
                    assert isinstance(key, ast.Constant), f"line {node.lineno}: computed key"
                    yield node.lineno, str(key.value)
            elif isinstance(value, ast.Call):
                assert isinstance(value.func, ast.Name) and value.func.id == "fields", (
                    f"line {node.lineno}: extra= must be a dict literal or fields(...)")
                for kw in value.keywords:
                    yield node.lineno, str(kw.arg)


def test_every_log_extra_in_the_code_uses_the_documented_field_names() -> None:
    root = Path(__file__).resolve().parent.parent
    wrong = []
    for package in ("streamer", "sinks", "orderbook"):
        for path in sorted((root / package).rglob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"))
            wrong += [f"{path.relative_to(root)}:{line}: {key}"
                      for line, key in _extra_keys(tree) if key not in FIELDS]
    assert not wrong, "log fields outside streamer.ops.logutil.FIELDS: " + ", ".join(wrong)
