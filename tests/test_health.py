"""streamer.ops.health: /healthz, /readyz and /metrics over loopback."""

from __future__ import annotations

import gzip
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial

import anyio
import httpx
import msgspec
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from streamer.errors import ConfigError
from streamer.feed.feed import FeedStats
from streamer.feed.universe import Universe
from streamer.ops.addr import parse_addr
from streamer.ops.health import HttpApp, serve_http
from streamer.ops.metrics import Metrics
from tests.test_metrics import FakeFeed, add_market


class Switch:
    """A readiness function the test flips."""

    def __init__(self) -> None:
        self.state = (False, "warming up")

    def __call__(self) -> tuple[bool, str]:
        return self.state


@asynccontextmanager
async def serving(metrics: Metrics, readiness: Switch | None = None,
                  ) -> AsyncIterator[httpx.AsyncClient]:
    check = readiness if readiness is not None else metrics.readiness
    async with anyio.create_task_group() as tg:
        port = await tg.start(partial(serve_http, "127.0.0.1:0", metrics, check))
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5) as client:
            yield client
        tg.cancel_scope.cancel()


def fresh() -> Metrics:
    return Metrics(CollectorRegistry(), process_metrics=False)


# -- pure routing -----------------------------------------------------------------------------


def test_http_app_routes_and_methods() -> None:
    app = HttpApp(fresh(), Switch())
    assert app.respond("GET", "/healthz", {}).status == 200
    assert app.respond("GET", "/healthz?x=1", {}).status == 200
    assert app.respond("GET", "/nope", {}).status == 404
    assert app.respond("POST", "/metrics", {}).status == 405
    ready = app.respond("GET", "/readyz", {})
    assert ready.status == 503
    assert msgspec.json.decode(ready.body) == {"ready": False, "reason": "warming up"}


def test_http_app_metrics_failure_is_a_500_not_a_crash(caplog: pytest.LogCaptureFixture) -> None:
    class Broken(Metrics):
        def render(self, accept: str = "") -> tuple[bytes, str]:
            raise KeyError("bug in a collector")

    app = HttpApp(Broken(CollectorRegistry(), process_metrics=False), Switch())
    assert app.respond("GET", "/metrics", {}).status == 500
    assert "metrics collection failed" in caplog.text


@pytest.mark.parametrize(("addr", "expected"), [
    ("127.0.0.1:9464", ("127.0.0.1", 9464)),
    ("[::1]:0", ("::1", 0)),
    (":9464", (None, 9464)),
    ("0.0.0.0:80", ("0.0.0.0", 80)),
])
def test_parse_addr_accepts_host_port(addr: str, expected: tuple[str | None, int]) -> None:
    assert parse_addr(addr) == expected


@pytest.mark.parametrize("addr", ["9464", "host:", "host:99999", "::1:9464", "h:x"])
def test_parse_addr_rejects_malformed(addr: str) -> None:
    with pytest.raises(ValueError):
        parse_addr(addr)


# -- over loopback ----------------------------------------------------------------------------


@pytest.mark.integration
@pytest.mark.anyio
async def test_serve_http_healthz_and_readyz_flip() -> None:
    switch = Switch()
    async with serving(fresh(), switch) as client:
        assert (await client.get("/healthz")).status_code == 200
        r = await client.get("/readyz")
        assert r.status_code == 503 and r.json() == {"ready": False, "reason": "warming up"}
        switch.state = (True, "ready: 3 market(s) live")
        r = await client.get("/readyz")
        assert r.status_code == 200 and r.json()["ready"] is True
        switch.state = (False, "feed not connected")
        assert (await client.get("/readyz")).status_code == 503


@pytest.mark.integration
@pytest.mark.anyio
async def test_serve_http_readyz_follows_the_bound_feed() -> None:
    metrics, feed = fresh(), FakeFeed(FeedStats(), Universe())
    metrics.bind(feed=feed)
    async with serving(metrics) as client:
        assert (await client.get("/readyz")).json()["reason"] == "feed not connected"
        feed.stats.connected = True
        entry = add_market(feed.universe, "btc")
        assert (await client.get("/readyz")).status_code == 200
        entry.sync.request_snapshot("crossed")
        r = await client.get("/readyz")
        assert r.status_code == 503 and "divergent" in r.json()["reason"]
        feed.stats.connected = False  # an outage
        assert (await client.get("/readyz")).status_code == 503


@pytest.mark.integration
@pytest.mark.anyio
async def test_serve_http_metrics_values_move_between_scrapes() -> None:
    metrics, feed = fresh(), FakeFeed()
    metrics.bind(feed=feed)
    async with serving(metrics) as client:
        def frames(text: str) -> float:
            for family in text_string_to_metric_families(text):
                for sample in family.samples:
                    if sample.name == "limitless_streamer_feed_frames_total":
                        return sample.value
            raise AssertionError("feed_frames_total missing")

        first = await client.get("/metrics")
        assert first.status_code == 200
        assert first.headers["content-type"].startswith("text/plain; version=0.0.4")
        feed.stats.frames += 42
        second = await client.get("/metrics")  # same keep-alive connection
        assert frames(second.text) - frames(first.text) == 42


@pytest.mark.integration
@pytest.mark.anyio
async def test_serve_http_negotiates_openmetrics_gzip_and_head() -> None:
    async with serving(fresh()) as client:
        r = await client.get("/metrics", headers={
            "Accept": "application/openmetrics-text; version=1.0.0",
            "Accept-Encoding": "gzip",
        })
        assert r.headers["content-type"].startswith("application/openmetrics-text")
        assert r.headers["content-encoding"] == "gzip"
        assert r.text.rstrip().endswith("# EOF")  # httpx decoded the gzip body
        head = await client.head("/metrics", headers={"Accept-Encoding": "identity"})
        assert head.status_code == 200 and head.content == b""
        assert int(head.headers["content-length"]) > 0


@pytest.mark.integration
@pytest.mark.anyio
async def test_serve_http_answers_garbage_with_400_and_keeps_serving() -> None:
    metrics = fresh()
    async with anyio.create_task_group() as tg:
        port = await tg.start(partial(serve_http, "127.0.0.1:0", metrics, Switch()))
        with anyio.fail_after(5):
            async with await anyio.connect_tcp("127.0.0.1", port) as stream:
                await stream.send(b"NOT HTTP AT ALL\r\n\r\n")
                reply = b""
                try:
                    while True:
                        reply += await stream.receive()
                except anyio.EndOfStream:
                    pass
            assert reply.startswith(b"HTTP/1.1 400")
            async with httpx.AsyncClient() as client:
                r = await client.get(f"http://127.0.0.1:{port}/healthz")
                assert r.status_code == 200
        tg.cancel_scope.cancel()


@pytest.mark.integration
@pytest.mark.anyio
async def test_serve_http_gzip_body_is_valid() -> None:
    metrics = fresh()
    async with anyio.create_task_group() as tg:
        port = await tg.start(partial(serve_http, "127.0.0.1:0", metrics, Switch()))
        with anyio.fail_after(5):
            async with await anyio.connect_tcp("127.0.0.1", port) as stream:
                await stream.send(b"GET /metrics HTTP/1.1\r\nHost: x\r\nAccept-Encoding: gzip"
                                  b"\r\nConnection: close\r\n\r\n")
                raw = b""
                try:
                    while True:
                        raw += await stream.receive()
                except anyio.EndOfStream:
                    pass
        head, _, body = raw.partition(b"\r\n\r\n")
        assert b"content-encoding: gzip" in head.lower()
        assert gzip.decompress(body).startswith(b"# HELP limitless_streamer_")
        tg.cancel_scope.cancel()


@pytest.mark.integration
@pytest.mark.anyio
async def test_serve_http_reports_address_in_use() -> None:
    metrics = fresh()
    async with anyio.create_task_group() as tg:
        port = await tg.start(partial(serve_http, "127.0.0.1:0", metrics, Switch()))
        with pytest.raises(ConfigError, match=rf"--metrics-addr 127\.0\.0\.1:{port}: .*in use"):
            await serve_http(f"127.0.0.1:{port}", metrics, Switch())
        tg.cancel_scope.cancel()
