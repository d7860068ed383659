"""The shared REST pace: a pure start-spacing core, the in-flight bound, and the REST client."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import anyio.lowlevel
import httpx
import pytest

from streamer.errors import RestError
from streamer.feed.budget import PaceCore, RatePacer
from streamer.feed.retry import Backoff
from streamer.transport.rest import RestClient, RetryPolicy


def test_pace_spaces_request_starts_by_the_interval() -> None:
    core = PaceCore(0.3, now=0.0)
    waits = [core.reserve(0.0) for _ in range(4)]
    assert waits == pytest.approx([0.0, 0.3, 0.6, 0.9])


def test_pace_does_not_save_up_idle_time() -> None:
    core = PaceCore(0.3, now=0.0)
    core.reserve(0.0)
    assert core.reserve(100.0) == 0.0
    assert core.reserve(100.0) == pytest.approx(0.3)  # no burst after a quiet spell


def test_pace_pause_holds_every_caller() -> None:
    core = PaceCore(0.01, now=0.0)
    core.pause(0.0, 5.0)
    assert core.reserve(1.0) == pytest.approx(4.0)
    assert core.paused_for(1.0) == pytest.approx(4.0)
    assert core.reserve(6.0) == 0.0
    assert core.paused_for(6.0) == 0.0


@pytest.mark.anyio
async def test_pacer_bounds_requests_in_flight_and_spaces_their_starts() -> None:
    slept: list[float] = []
    starts: list[int] = []

    async def sleep(seconds: float) -> None:  # the clock stands still: waits add up
        slept.append(seconds)
        await anyio.lowlevel.checkpoint()

    pacer = RatePacer(2, 0.3, clock=lambda: 0.0, sleep=sleep)
    release = anyio.Event()
    peak = [0]

    async def call() -> None:
        async with pacer.slot():
            starts.append(len(starts))
            peak[0] = max(peak[0], pacer.in_flight)
            await release.wait()

    async with anyio.create_task_group() as tg:
        for _ in range(4):
            tg.start_soon(call)
        await anyio.wait_all_tasks_blocked()
        assert pacer.in_flight == 2 and len(starts) == 2  # two in flight, two waiting
        release.set()
    assert peak[0] == 2
    assert slept == pytest.approx([0.3, 0.6, 0.9])  # each start 0.3 s after the one before
    assert pacer.acquired == 4


class RecordingLimiter:
    """A fake Limiter: records the calls the REST client makes."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        self.calls.append("slot")
        yield

    def pause(self, seconds: float) -> None:
        self.calls.append(f"pause {seconds}")


@pytest.mark.anyio
async def test_rest_client_draws_every_attempt_from_the_budget_and_pauses_on_429() -> None:
    slept: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        slept.append(seconds)

    responses = iter([
        httpx.Response(503, json={}),
        httpx.Response(429, json={"statusCode": 429, "retryAfterSeconds": 7}),
        httpx.Response(200, json={"bids": [], "asks": []}),
    ])
    limiter = RecordingLimiter()
    async with httpx.AsyncClient(transport=httpx.MockTransport(lambda r: next(responses))) as h:
        rest = RestClient(h, base_url="http://x", limiter=limiter, sleep=fake_sleep,
                          retry=RetryPolicy(backoff=Backoff(initial_s=1, jitter=0)))
        await rest.orderbook("m")
    # One slot per attempt; only the 429 pauses everyone, for the time the venue asked.
    assert limiter.calls == ["slot", "slot", "pause 7.0", "slot"]
    assert slept == [1.0, 7.0]


@pytest.mark.anyio
async def test_rest_client_budget_is_not_drawn_when_no_limiter_is_given() -> None:
    async with httpx.AsyncClient(
        transport=httpx.MockTransport(lambda r: httpx.Response(404, json={}))
    ) as http:
        with pytest.raises(RestError):
            await RestClient(http, base_url="http://x").orderbook("m")
