"""The shared REST rate budget: a pure token bucket and its use by the REST client."""

from __future__ import annotations

import httpx
import pytest

from streamer.budget import TokenBucket
from streamer.errors import RestError
from streamer.retry import Backoff
from streamer.transport.rest import RestClient, RetryPolicy


def test_bucket_allows_a_burst_then_spaces_requests_at_the_rate() -> None:
    bucket = TokenBucket(rate=10.0, burst=3, now=0.0)
    waits = [bucket.reserve(0.0) for _ in range(6)]
    assert waits[:3] == [0.0, 0.0, 0.0]
    assert waits[3:] == pytest.approx([0.1, 0.2, 0.3])


def test_bucket_refills_over_time_up_to_the_burst() -> None:
    bucket = TokenBucket(rate=2.0, burst=2, now=0.0)
    bucket.reserve(0.0)
    bucket.reserve(0.0)
    assert bucket.reserve(100.0) == 0.0  # refilled, but never above the burst
    assert bucket.reserve(100.0) == 0.0
    assert bucket.reserve(100.0) == pytest.approx(0.5)


def test_bucket_pause_holds_every_caller() -> None:
    bucket = TokenBucket(rate=100.0, burst=10, now=0.0)
    bucket.pause(0.0, 5.0)
    assert bucket.reserve(1.0) == pytest.approx(4.0)
    assert bucket.reserve(6.0) == 0.0


class RecordingLimiter:
    """A fake Limiter: records the calls the REST client makes."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    async def acquire(self) -> None:
        self.calls.append("acquire")

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
    # One token per attempt; only the 429 pauses everyone, for the time the venue asked.
    assert limiter.calls == ["acquire", "acquire", "pause 7.0", "acquire"]
    assert slept == [1.0, 7.0]


@pytest.mark.anyio
async def test_rest_client_budget_is_not_drawn_when_no_limiter_is_given() -> None:
    async with httpx.AsyncClient(
        transport=httpx.MockTransport(lambda r: httpx.Response(404, json={}))
    ) as http:
        with pytest.raises(RestError):
            await RestClient(http, base_url="http://x").orderbook("m")
