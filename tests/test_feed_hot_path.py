"""The read loop's hot path for ``orderbookUpdate`` frames, against a scripted transport."""

from __future__ import annotations

import time

import anyio
import httpx
import msgspec
import pytest

from sinks.fanout import Fanout, SinkSpec
from sinks.memory import MemorySink
from sinks.queues import OverflowPolicy
from streamer.config import load_settings
from streamer.errors import ConnectionLost
from streamer.feed.feed import READER_PAUSE_S, YIELD_MASK, Feed
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


def _alternating_books(n: int) -> list[str]:
    """``n`` book frames of one market, each changing the best bid (so each is a record)."""
    return [book_frame(f"0.4{i % 2}", "0.46") for i in range(n)]


def _feed(fanout: Fanout) -> Feed:
    settings = load_settings(None, {"markets": ["m1"]})
    http = httpx.AsyncClient(transport=httpx.MockTransport(lambda r: httpx.Response(404)))
    universe = Universe()
    add_market(universe, "m1")
    return Feed(settings, RestClient(http, base_url="http://x"), fanout, universe)


@pytest.mark.anyio
async def test_book_frames_take_the_hot_path_and_bad_ones_are_counted_as_before() -> None:
    feed = _feed(Fanout([]))
    entry = feed.universe.markets["m1"]
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


@pytest.mark.anyio
async def test_a_reader_whose_transport_never_suspends_still_lets_other_tasks_run() -> None:
    # A fast client (picows) hands over frames already received without suspending; a
    # reader that never yields would starve the fan-out, the sinks and every timer.
    feed = _feed(Fanout([]))
    frames = 1_000
    script = Script([OPEN, '40/markets,{"sid":"n"}', *_alternating_books(frames)])
    turns = 0

    async def other_task() -> None:
        nonlocal turns
        while True:
            turns += 1
            await anyio.lowlevel.checkpoint()

    async with anyio.create_task_group() as tg:
        tg.start_soon(other_task)
        try:
            await feed.run_session(script)
        except* ConnectionLost:
            pass
        tg.cancel_scope.cancel()
    assert feed.stats.book_events == frames
    assert turns >= frames // (YIELD_MASK + 1) - 1  # about one turn per 64 frames
    assert feed.stats.reader_pauses == 0  # no sink: nothing is behind


async def _read_into(sink: MemorySink, frames: int) -> tuple[Feed, float]:
    """Run a session of ``frames`` book frames into a fan-out with ``sink`` (queue of 256,
    one record per write); returns the feed and the session's wall time."""
    fanout = Fanout([SinkSpec(sink, policy=OverflowPolicy.DROP_OLDEST, queue_size=256,
                              batch_max=1)], drain_timeout_s=0.05)
    feed = _feed(fanout)
    script = Script([OPEN, '40/markets,{"sid":"n"}', *_alternating_books(frames)])
    async with anyio.create_task_group() as tg:
        await tg.start(fanout.run)
        started = time.monotonic()
        try:
            await feed.run_session(script)
        except* ConnectionLost:
            pass
        took = time.monotonic() - started
        tg.cancel_scope.cancel()
    assert feed.stats.book_events == frames
    return feed, took


@pytest.mark.anyio
async def test_the_reader_pauses_while_an_open_sink_queue_is_more_than_half_full() -> None:
    # A slow sink (each write takes 10 s) that is open: its queue fills up, and past half
    # full every 64th frame pauses the reader instead of merely yielding.
    frames = 1_024
    feed, took = await _read_into(MemorySink(delay=10.0), frames)
    # Frames from about 130 on find the queue over half full: 1,026 frames, every 64th yields.
    pauses = feed.stats.reader_pauses
    assert (frames + 2) // (YIELD_MASK + 1) - 3 <= pauses <= (frames + 2) // (YIELD_MASK + 1)
    assert took >= pauses * READER_PAUSE_S


@pytest.mark.anyio
async def test_a_failing_sink_does_not_slow_the_reader() -> None:
    # Pausing cannot help a sink that is not writing; its overflow policy applies instead.
    sink = MemorySink(fail_times=10**9)
    feed, _ = await _read_into(sink, 1_024)
    assert sink.write_calls >= 1  # it was failing, not idle
    assert feed.stats.reader_pauses == 0


@pytest.mark.anyio
@pytest.mark.parametrize(("token", "applied", "foreign"), [
    ('"1"', 1, 0),  # the market's YES token as a string
    ("1", 1, 0),  # as a JSON number: the same token
    ('""', 1, 0),  # empty: the market's own token is assumed
    ("null", 1, 0),
    ("2", 0, 1),  # another token, as a number
    ('"01"', 0, 1),  # another spelling is another id: not normalised as a number
])
async def test_the_token_of_a_book_frame_is_compared_as_a_decimal_string(
        token: str, applied: int, foreign: int) -> None:
    feed = _feed(Fanout([]))
    entry = feed.universe.markets["m1"]
    applied_before = entry.sync.stats.applied
    ts = time.time_ns() // 1_000_000
    body = (f'{{"marketSlug":"m1","timestamp":{ts},"orderbook":{{"tokenId":{token},'
            f'"bids":[{{"price":0.41,"size":10}}],"asks":[{{"price":0.46,"size":7}}]}}}}')
    script = Script([OPEN, '40/markets,{"sid":"n"}', book_frame("", "", payload=body)])
    try:
        await feed.run_session(script)
    except* ConnectionLost:
        pass
    assert feed.stats.book_events == 1
    assert entry.sync.stats.applied - applied_before == applied
    assert feed.stats.foreign_token == foreign
    if applied:
        assert entry.sync.token == "1"
