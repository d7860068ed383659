"""The read loop's hot path for ``orderbookUpdate`` frames, against a scripted transport."""

from __future__ import annotations

import time

import httpx
import msgspec
import pytest

from sinks.fanout import Fanout
from streamer.config import load_settings
from streamer.errors import ConnectionLost
from streamer.feed.feed import Feed
from streamer.feed.universe import Universe
from streamer.transport.rest import RestClient
from tests.test_metrics import add_market

OPEN = '0{"sid":"s","upgrades":[],"pingInterval":25000,"pingTimeout":20000,"maxPayload":1000000}'


def book_frame(bid: str, ask: str, tail: str = "", payload: str | None = None) -> str:
    ts = time.time_ns() // 1_000_000
    body = payload if payload is not None else (
        f'{{"marketSlug":"m1","timestamp":{ts},"orderbook":{{"tokenId":"1",'
        f'"bids":[{{"price":{bid},"size":10,"side":"BUY"}}],'
        f'"asks":[{{"price":"{ask}","size":"7.50"}}]}}}}')
    return f'42/markets,["orderbookUpdate",{body}{tail}]'


class Script:
    """Hands out the given frames, then loses the connection."""

    def __init__(self, frames: list[str]) -> None:
        self.frames = frames
        self.sent: list[str] = []

    async def send(self, text: str) -> None:
        self.sent.append(text)

    async def receive(self) -> str:
        if not self.frames:
            raise ConnectionLost("script done")
        return self.frames.pop(0)

    async def aclose(self) -> None:
        pass


@pytest.mark.anyio
async def test_book_frames_take_the_hot_path_and_bad_ones_are_counted_as_before() -> None:
    settings = load_settings(None, {"markets": ["m1"]})
    http = httpx.AsyncClient(transport=httpx.MockTransport(lambda r: httpx.Response(404)))
    universe = Universe()
    entry = add_market(universe, "m1")
    feed = Feed(settings, RestClient(http, base_url="http://x"), Fanout([]), universe)
    script = Script([
        OPEN,
        '40/markets,{"sid":"n"}',
        book_frame("0.41", "0.46"),
        book_frame("0.42", "0.47", tail=',"extra",{"x":1}'),  # trailing elements: ignored
        book_frame("", "", payload='{"marketSlug":"m1"}'),  # no book: a decode error
        '42/markets,["orderbookUpdate",{',  # not JSON: a rejected frame
    ])
    generic = 0
    on_orderbook = feed._on_orderbook

    def counted(payload: msgspec.Raw) -> None:
        nonlocal generic
        generic += 1
        on_orderbook(payload)

    feed._on_orderbook = counted  # type: ignore[method-assign]
    lost = False
    try:
        await feed.run_session(script)
    except* ConnectionLost:
        lost = True
    assert lost and not script.frames
    stats = feed.stats
    assert stats.frames == 6
    assert stats.book_events == 3
    assert stats.decode_errors["orderbookUpdate"] == 1
    assert stats.frames_rejected == 1
    assert feed.session_healthy
    assert entry.sync.book.levels() == ([("0.42", "10")], [("0.47", "7.50")])
    assert entry.sync.stats.applied == 2  # both good frames
    assert generic == 1  # only the undecodable payload went the generic way
