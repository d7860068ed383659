"""Feed event handling without sockets: unknown names, the venue's exception events."""

from __future__ import annotations

import logging

import httpx
import msgspec
import pytest

from sinks.fanout import Fanout
from streamer.config import load_settings
from streamer.feed.feed import Feed
from streamer.feed.universe import Universe
from streamer.transport.rest import RestClient


@pytest.fixture
async def feed() -> Feed:
    settings = load_settings(None, {"all_markets": True})
    http = httpx.AsyncClient(transport=httpx.MockTransport(lambda r: httpx.Response(404)))
    return Feed(settings, RestClient(http, base_url="http://x"), Fanout([]), Universe())


@pytest.mark.anyio
async def test_many_unknown_event_names_share_one_log_key(
    feed: Feed, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="streamer.feed.feed")
    for i in range(5_000):
        feed._on_event(f"invented{i}", msgspec.Raw(b"{}"))
    assert feed.stats.unknown_events.total() == 5_000
    lines = [r for r in caplog.records if "unknown event" in r.getMessage()]
    assert len(lines) == 1  # one rate-limited line for all of them; the metric counts
    assert len(feed._log_bad._last) <= 2  # the limiter did not grow a key per name


@pytest.mark.anyio
async def test_exception_events_are_logged_with_their_message_and_counted(
    feed: Feed, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="streamer.feed.feed")
    payload = b'{"status":"error","message":"Unauthorized: subscribe_positions needs auth"}'
    feed._on_event("exception", msgspec.Raw(payload))
    assert feed.stats.exceptions == 1
    assert feed.stats.unknown_events.total() == 0
    assert any("Unauthorized: subscribe_positions needs auth" in r.getMessage()
               for r in caplog.records)
