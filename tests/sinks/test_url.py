from __future__ import annotations

import os
import re
from typing import Any

import pytest

from sinks.base import SinkConfigError
from sinks.fanout import OverflowPolicy, SinkSpec
from sinks.file import FileSink
from sinks.memory import MemorySink
from sinks.url import SCHEMES, SinkUrl, parse_interval, parse_sink_url, parse_size, register_scheme


def describe(spec: SinkSpec) -> dict[str, Any]:
    sink = spec.sink
    info: dict[str, Any] = {
        "type": type(sink).__name__, "name": sink.name, "policy": spec.policy,
        "queue": spec.queue_size, "batch": spec.batch_max, "on_error": spec.on_error,
    }
    if isinstance(sink, FileSink):
        info.update(path=sink.path, max_bytes=sink.max_bytes, rotate=sink.rotate_interval_s,
                    keep=sink.keep)
    return info


DEFAULTS: dict[str, Any] = {"policy": OverflowPolicy.CONFLATE, "queue": 10_000, "batch": 512,
                            "on_error": "retry"}
FILE_DEFAULTS: dict[str, Any] = {**DEFAULTS, "type": "FileSink", "max_bytes": None,
                                 "rotate": None, "keep": None}


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("-", {**DEFAULTS, "type": "StdoutSink", "name": "stdout"}),
        ("stdout:", {**DEFAULTS, "type": "StdoutSink", "name": "stdout"}),
        ("STDOUT:?policy=drop-newest&queue=100&batch=10&on_error=crash",
         {"type": "StdoutSink", "name": "stdout", "policy": OverflowPolicy.DROP_NEWEST,
          "queue": 100, "batch": 10, "on_error": "crash"}),
        ("stdout:?policy=drop_oldest&name=tty",
         {**DEFAULTS, "type": "StdoutSink", "name": "tty", "policy": OverflowPolicy.DROP_OLDEST}),
        ("file:out.ndjson", {**FILE_DEFAULTS, "path": "out.ndjson", "name": "file:out.ndjson"}),
        ("file:///var/lib/x.ndjson",
         {**FILE_DEFAULTS, "path": "/var/lib/x.ndjson", "name": "file:/var/lib/x.ndjson"}),
        ("file://localhost/var/x.ndjson",
         {**FILE_DEFAULTS, "path": "/var/x.ndjson", "name": "file:/var/x.ndjson"}),
        ("file:dir/my%20file%23.ndjson",
         {**FILE_DEFAULTS, "path": "dir/my file#.ndjson", "name": "file:dir/my file#.ndjson"}),
        ("file:out.ndjson?max_bytes=100MB&rotate=1h&keep=24&on_error=disable",
         {**FILE_DEFAULTS, "path": "out.ndjson", "name": "file:out.ndjson",
          "max_bytes": 100_000_000, "rotate": 3600.0, "keep": 24, "on_error": "disable"}),
        ("file:out.ndjson?max_bytes=1GiB&rotate=86400s&keep=0",
         {**FILE_DEFAULTS, "path": "out.ndjson", "name": "file:out.ndjson",
          "max_bytes": 2**30, "rotate": 86400.0, "keep": 0}),
    ],
)
def test_parse_sink_url_builds_spec(url: str, expected: dict[str, Any]) -> None:
    assert describe(parse_sink_url(url)) == expected


def test_parse_sink_url_expands_home() -> None:
    spec = parse_sink_url("file:~/out.ndjson")
    assert isinstance(spec.sink, FileSink)
    assert spec.sink.path == os.path.expanduser("~/out.ndjson")


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("", "no scheme"),
        ("out.ndjson", "no scheme"),
        ("amqp://broker/queue", "unknown scheme 'amqp'"),
        ("file:out.ndjson?maxbytes=1", "unknown option 'maxbytes' for file:"),
        ("stdout:?keep=3", "unknown option 'keep' for stdout:"),
        ("stdout:?on_error=ignore", "option 'on_error': 'ignore'"),
        ("stdout:?queue=0", "option 'queue': must be >= 1"),
        ("stdout:?batch=ten", "option 'batch': 'ten' is not an integer"),
        ("stdout:?queue=1&queue=2", "option 'queue' is given twice"),
        ("stdout:?queue", "malformed"),
        ("stdout:somewhere", "takes no path"),
        ("file:", "needs a path"),
        ("file://host/x.ndjson", "host 'host' is not supported"),
        ("file:x.ndjson#frag", "percent-encode it as %23"),
        ("file:x?max_bytes=lots", "option 'max_bytes': 'lots' is not a size"),
        ("file:x?max_bytes=0", "option 'max_bytes'"),
        ("file:x?rotate=1y", "option 'rotate': '1y' is not an interval"),
        ("file:x?rotate=0s", "option 'rotate'"),
        ("file:x?keep=-1", "option 'keep': must be >= 0"),
    ],
)
def test_parse_sink_url_rejects(url: str, message: str) -> None:
    with pytest.raises(SinkConfigError, match=re.escape(message)) as info:
        parse_sink_url(url)
    assert isinstance(info.value, ValueError)
    assert "\n" not in str(info.value)


def test_parse_sink_url_error_hides_password() -> None:
    with pytest.raises(SinkConfigError) as info:
        parse_sink_url("redis://user:hunter2@127.0.0.1:6379/0?password=hunter3&stream=x")
    text = str(info.value)
    assert "hunter2" not in text and "hunter3" not in text
    assert "user:***@127.0.0.1" in text and "password=***" in text


def test_register_scheme_adds_a_scheme() -> None:
    def build(url: SinkUrl) -> MemorySink:
        return MemorySink(url.name or f"mem:{url.netloc}{url.path}")

    register_scheme("mem", build, frozenset({"depth"}))
    try:
        spec = parse_sink_url("mem://box/q?depth=3&policy=drop-newest")
        assert spec.sink.name == "mem:box/q"
        assert spec.policy is OverflowPolicy.DROP_NEWEST
        with pytest.raises(SinkConfigError, match="unknown option 'width'"):
            parse_sink_url("mem://box/q?width=3")
    finally:
        del SCHEMES["mem"]


@pytest.mark.parametrize(
    ("text", "size"),
    [("4096", 4096), ("64k", 64_000), ("64KiB", 65_536), ("100MB", 100_000_000),
     ("1.5GB", 1_500_000_000), ("1GiB", 2**30), ("2 tib", 2 * 2**40), ("1b", 1)],
)
def test_parse_size(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "MB", "-1MB", "1XB", "0", "0.1"])
def test_parse_size_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_size(text)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("86400", 86400.0), ("86400s", 86400.0), ("30m", 1800.0), ("1h", 3600.0),
     ("1h30m", 5400.0), ("1d", 86400.0), ("1w", 604800.0), ("500ms", 0.5), ("0.5h", 1800.0)],
)
def test_parse_interval(text: str, seconds: float) -> None:
    assert parse_interval(text) == seconds


@pytest.mark.parametrize("text", ["", "h", "1y", "-1h", "0", "0s", "1h 30m", "NaN", "1e999999"])
def test_parse_interval_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_interval(text)
