"""Tests for streamer.transport.rest over httpx.MockTransport (no network, no real sleeping)."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import httpx
import msgspec
import pytest

from orderbook.types import PriceLevel
from streamer.errors import RestError, TransportError
from streamer.feed.retry import Backoff
from streamer.partner.auth import ApiKey, Credentials, HmacCredentials, iso_timestamp, sign
from streamer.protocol.messages import Market, Venue
from streamer.transport.rest import USER_AGENT, RestClient, RetryPolicy

BASE = "https://api.test"
SECRET = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
TOKEN_ID = "tok-0123456789"
API_KEY = "lmts_very_secret_api_key"
TS_EPOCH_S = datetime(2026, 1, 15, 9, 30, 0, 123000, tzinfo=UTC).timestamp()
NO_JITTER = RetryPolicy(backoff=Backoff(initial_s=1, cap_s=30, jitter=0))
HMAC = HmacCredentials(token_id=TOKEN_ID, secret=SECRET)

Handler = Callable[[httpx.Request], httpx.Response]

pytestmark = pytest.mark.anyio


class RecordingSleep:
    """A fake sleep that records delays and returns at once."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)


class StepClock:
    """Epoch seconds that advance by ``step`` on every read."""

    def __init__(self, start: float = TS_EPOCH_S, step: float = 1.0) -> None:
        self.now = start
        self.step = step

    def __call__(self) -> float:
        value = self.now
        self.now += self.step
        return value


class RecordingObserver:
    """A RestObserver that records every call."""

    def __init__(self) -> None:
        self.responses: list[tuple[str, int | None, int]] = []
        self.retries: list[tuple[str, int | None, float]] = []

    def on_response(
        self, endpoint: str, status: int | None, elapsed_s: float, attempt: int
    ) -> None:
        assert elapsed_s >= 0
        self.responses.append((endpoint, status, attempt))

    def on_retry(self, endpoint: str, status: int | None, delay_s: float) -> None:
        self.retries.append((endpoint, status, delay_s))


class Script:
    """A MockTransport handler replaying scripted responses/exceptions, recording requests."""

    def __init__(self, *steps: httpx.Response | Exception | Handler) -> None:
        self.steps = list(steps)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        assert self.steps, f"unexpected request {request.url}"
        step = self.steps.pop(0)
        if isinstance(step, Exception):
            raise step
        if isinstance(step, httpx.Response):
            return step
        return step(request)


@asynccontextmanager
async def open_rest(
    handler: Handler,
    *,
    credentials: Credentials | None = None,
    retry: RetryPolicy = NO_JITTER,
    sleep: RecordingSleep | None = None,
    clock: Callable[[], float] | None = None,
    observer: RecordingObserver | None = None,
    base_url: str = BASE,
) -> AsyncIterator[RestClient]:
    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        yield RestClient(
            client,
            base_url=base_url,
            credentials=credentials,
            retry=retry,
            sleep=sleep or RecordingSleep(),
            clock=clock or StepClock(),
            observer=observer,
        )


def ok(payload: Any) -> httpx.Response:
    return httpx.Response(200, json=payload)


def market_json(slug: str, **extra: Any) -> dict[str, Any]:
    return {"slug": slug, "tradeType": "clob", **extra}


def page_json(slugs: list[str], total: int | None) -> dict[str, Any]:
    body: dict[str, Any] = {"data": [market_json(s) for s in slugs]}
    if total is not None:
        body["totalMarketsCount"] = total
    return body


def target(request: httpx.Request) -> str:
    return request.url.raw_path.decode("ascii")


def assert_hmac_valid(request: httpx.Request) -> None:
    signature = sign(
        SECRET,
        request.headers["lmts-timestamp"],
        request.method,
        target(request),
        request.content,
    )
    assert request.headers["lmts-api-key"] == TOKEN_ID
    assert request.headers["lmts-signature"] == signature


# --- pagination -------------------------------------------------------------------------


async def test_active_markets_paginates_until_short_page() -> None:
    script = Script(
        ok(page_json(["a", "b"], 5)), ok(page_json(["c", "d"], 5)), ok(page_json(["e"], 5))
    )
    async with open_rest(script) as rest:
        markets = await rest.active_markets(limit=2)
    assert [m.slug for m in markets] == ["a", "b", "c", "d", "e"]
    assert [target(r) for r in script.requests] == [
        "/markets/active?limit=2&page=1",
        "/markets/active?limit=2&page=2",
        "/markets/active?limit=2&page=3",
    ]


async def test_active_markets_stops_when_total_reached_on_full_page() -> None:
    script = Script(ok(page_json(["a", "b"], 4)), ok(page_json(["c", "d"], 4)))
    async with open_rest(script) as rest:
        markets = await rest.active_markets(limit=2)
    assert [m.slug for m in markets] == ["a", "b", "c", "d"]
    assert len(script.requests) == 2


async def test_active_markets_stops_on_empty_page_without_total() -> None:
    script = Script(ok(page_json(["a", "b"], None)), ok(page_json([], None)))
    async with open_rest(script) as rest:
        markets = await rest.active_markets(limit=2)
    assert [m.slug for m in markets] == ["a", "b"]
    assert len(script.requests) == 2


async def test_active_markets_drops_duplicates_across_shifting_pages() -> None:
    script = Script(ok(page_json(["a", "b"], 4)), ok(page_json(["b", "c"], 4)))
    async with open_rest(script) as rest:
        markets = await rest.active_markets(limit=2)
    assert [m.slug for m in markets] == ["a", "b", "c"]


async def test_active_markets_respects_max_pages(caplog: pytest.LogCaptureFixture) -> None:
    script = Script(ok(page_json(["a"], None)), ok(page_json(["b"], None)))
    async with open_rest(script) as rest:
        markets = await rest.active_markets(limit=1, max_pages=2)
    assert [m.slug for m in markets] == ["a", "b"]
    assert "max_pages=2" in caplog.text


async def test_active_markets_page_default_query_exact() -> None:
    script = Script(ok(page_json([], 0)))
    async with open_rest(script) as rest:
        page = await rest.active_markets_page(2)
    assert page.data == []
    assert target(script.requests[0]) == "/markets/active?limit=25&page=2"


# --- retries ----------------------------------------------------------------------------


@pytest.mark.parametrize("status", [429, 500, 502, 503, 504])
async def test_request_retries_retryable_status(status: int) -> None:
    script = Script(httpx.Response(status), ok(market_json("m")))
    sleep = RecordingSleep()
    async with open_rest(script, sleep=sleep) as rest:
        market = await rest.market("m")
    assert market.slug == "m"
    assert len(script.requests) == 2
    assert sleep.delays == [1.0]


@pytest.mark.parametrize(
    "exc",
    [
        httpx.ConnectError("refused"),
        httpx.ConnectTimeout("slow"),
        httpx.ReadTimeout("slow"),
        httpx.ReadError("reset"),
        httpx.RemoteProtocolError("Server disconnected"),
    ],
)
async def test_request_retries_transport_errors(exc: Exception) -> None:
    script = Script(exc, ok(market_json("m")))
    sleep = RecordingSleep()
    async with open_rest(script, sleep=sleep) as rest:
        assert (await rest.market("m")).slug == "m"
    assert sleep.delays == [1.0]


async def test_request_gives_up_after_max_attempts_with_backoff() -> None:
    script = Script(*(httpx.Response(503) for _ in range(4)))
    sleep = RecordingSleep()
    async with open_rest(script, sleep=sleep) as rest:
        with pytest.raises(RestError) as info:
            await rest.orderbook("m")
    assert info.value.status == 503
    assert info.value.endpoint == "/markets/{slug}/orderbook"
    assert len(script.requests) == 4
    assert sleep.delays == [1.0, 2.0, 4.0]  # no sleep after the last attempt


async def test_request_transport_failure_maps_to_rest_error() -> None:
    script = Script(*(httpx.ConnectError("refused") for _ in range(2)))
    async with open_rest(script, retry=RetryPolicy(max_attempts=2)) as rest:
        with pytest.raises(RestError) as info:
            await rest.market("m")
    assert info.value.status is None
    assert isinstance(info.value, TransportError)
    assert isinstance(info.value.__cause__, httpx.ConnectError)
    assert "ConnectError" in str(info.value)


async def test_request_non_transient_transport_error_not_retried() -> None:
    script = Script(httpx.UnsupportedProtocol("ftp"))
    sleep = RecordingSleep()
    async with open_rest(script, sleep=sleep) as rest:
        with pytest.raises(RestError):
            await rest.market("m")
    assert sleep.delays == []


async def test_request_honours_retry_after_seconds_body() -> None:
    script = Script(
        httpx.Response(429, json={"statusCode": 429, "retryAfterSeconds": 7}), ok(market_json("m"))
    )
    sleep = RecordingSleep()
    async with open_rest(script, sleep=sleep) as rest:
        await rest.market("m")
    assert sleep.delays == [7.0]


async def test_request_honours_retry_after_header() -> None:
    script = Script(httpx.Response(503, headers={"Retry-After": "5"}), ok(market_json("m")))
    sleep = RecordingSleep()
    async with open_rest(script, sleep=sleep) as rest:
        await rest.market("m")
    assert sleep.delays == [5.0]


async def test_request_prefers_larger_of_body_and_header_hints() -> None:
    both = httpx.Response(429, headers={"Retry-After": "3"}, json={"retryAfterSeconds": 9})
    script = Script(both, ok(market_json("m")))
    sleep = RecordingSleep()
    async with open_rest(script, sleep=sleep) as rest:
        await rest.market("m")
    assert sleep.delays == [9.0]


async def test_request_caps_retry_after() -> None:
    script = Script(httpx.Response(429, json={"retryAfterSeconds": 1000}), ok(market_json("m")))
    sleep = RecordingSleep()
    async with open_rest(script, sleep=sleep) as rest:
        await rest.market("m")
    assert sleep.delays == [120.0]


async def test_request_unparseable_retry_after_uses_backoff() -> None:
    date = "Wed, 21 Oct 2026 07:28:00 GMT"
    script = Script(httpx.Response(503, headers={"Retry-After": date}), ok(market_json("m")))
    sleep = RecordingSleep()
    async with open_rest(script, sleep=sleep) as rest:
        await rest.market("m")
    assert sleep.delays == [1.0]


@pytest.mark.parametrize("status", [400, 401, 403, 404, 409, 422])
async def test_request_does_not_retry_client_errors(status: int) -> None:
    script = Script(httpx.Response(status, json={"statusCode": status, "message": "nope"}))
    sleep = RecordingSleep()
    async with open_rest(script, sleep=sleep) as rest:
        with pytest.raises(RestError) as info:
            await rest.market("m")
    assert info.value.status == status
    assert "nope" in info.value.detail
    assert len(script.requests) == 1
    assert sleep.delays == []


async def test_request_error_detail_from_message_array() -> None:
    body = {"statusCode": 400, "message": [{"field": "slug", "error": "bad"}], "error": "Bad"}
    script = Script(httpx.Response(400, json=body))
    async with open_rest(script) as rest:
        with pytest.raises(RestError) as info:
            await rest.market("m")
    assert info.value.detail == 'HTTP 400: [{"field":"slug","error":"bad"}]'


async def test_request_invalid_200_body_not_retried() -> None:
    script = Script(httpx.Response(200, json={"title": "no slug"}))
    sleep = RecordingSleep()
    async with open_rest(script, sleep=sleep) as rest:
        with pytest.raises(RestError) as info:
            await rest.market("m")
    assert info.value.status == 200
    assert info.value.endpoint == "/markets/{slug}"
    assert info.value.detail.startswith("invalid body: ")
    assert "slug" in info.value.detail
    assert isinstance(info.value.__cause__, msgspec.ValidationError)
    assert sleep.delays == []


async def test_request_non_json_200_body_is_rest_error() -> None:
    script = Script(httpx.Response(200, text="<html>"))
    async with open_rest(script) as rest:
        with pytest.raises(RestError, match="invalid body"):
            await rest.orderbook("m")


# --- signing ----------------------------------------------------------------------------


async def test_request_signs_fresh_timestamp_each_attempt() -> None:
    script = Script(httpx.Response(503), httpx.Response(429), ok(market_json("m")))
    async with open_rest(script, credentials=HMAC, clock=StepClock(step=2.5)) as rest:
        await rest.market("m")
    timestamps = [r.headers["lmts-timestamp"] for r in script.requests]
    assert timestamps == [
        iso_timestamp(TS_EPOCH_S),
        iso_timestamp(TS_EPOCH_S + 2.5),
        iso_timestamp(TS_EPOCH_S + 5.0),
    ]
    assert len({r.headers["lmts-signature"] for r in script.requests}) == 3
    for request in script.requests:
        assert_hmac_valid(request)


async def test_request_signs_query_exactly_as_sent() -> None:
    def check(request: httpx.Request) -> httpx.Response:
        assert target(request) == "/markets/active?limit=25&page=3"
        assert_hmac_valid(request)
        return ok(page_json([], 0))

    async with open_rest(Script(check), credentials=HMAC) as rest:
        await rest.active_markets_page(3)


async def test_request_signs_url_encoded_slug_as_sent() -> None:
    def check(request: httpx.Request) -> httpx.Response:
        assert target(request) == "/markets/a%2Fb%20c/orderbook"
        assert_hmac_valid(request)
        return ok({"bids": [], "asks": []})

    async with open_rest(Script(check), credentials=HMAC) as rest:
        await rest.orderbook("a/b c")


async def test_request_matches_reference_vector_a() -> None:
    def check(request: httpx.Request) -> httpx.Response:
        assert request.headers["lmts-timestamp"] == "2026-01-15T09:30:00.123Z"
        assert request.headers["lmts-signature"] == "HijQ8f2/1aWSIUOlnLzopr0f2r9nIw1QmEH2u5Hqnf0="
        return ok(page_json([], 0))

    async with open_rest(Script(check), credentials=HMAC, clock=lambda: TS_EPOCH_S) as rest:
        await rest.request(
            "GET",
            "/markets/active?limit=25&page=2&sortBy=newest",
            endpoint="/markets/active",
            decoder=msgspec.json.Decoder(Any),
        )


async def test_request_post_body_signed_and_sent_as_same_bytes() -> None:
    def check(request: httpx.Request) -> httpx.Response:
        assert request.method == "POST"
        assert request.content == b"{}"
        assert request.headers["Content-Type"] == "application/json"
        # limitless-api.md §1.4 vector B.
        assert request.headers["lmts-signature"] == "vnN0AcizoxZruTZ3IBeeGJtYOXTpyksXNUwsai6BIYw="
        return ok({"ready": True})

    async with open_rest(Script(check), credentials=HMAC, clock=lambda: TS_EPOCH_S) as rest:
        result = await rest.request(
            "post",
            "/profiles/partner-accounts/4543/allowances/retry",
            endpoint="/profiles/partner-accounts/{profileId}/allowances/retry",
            body=b"{}",
            decoder=msgspec.json.Decoder(dict[str, bool]),
        )
    assert result == {"ready": True}


async def test_request_base_url_path_prefix_is_sent_and_signed() -> None:
    def check(request: httpx.Request) -> httpx.Response:
        assert target(request) == "/api/markets/m"
        assert_hmac_valid(request)
        return ok(market_json("m"))

    async with open_rest(Script(check), credentials=HMAC, base_url=BASE + "/api/") as rest:
        await rest.market("m")


async def test_request_api_key_header_mode() -> None:
    def check(request: httpx.Request) -> httpx.Response:
        assert request.headers["X-API-Key"] == API_KEY
        assert not any(name.startswith("lmts-") for name in request.headers)
        return ok(market_json("m"))

    async with open_rest(Script(check), credentials=ApiKey(API_KEY)) as rest:
        await rest.market("m")


async def test_request_public_sends_no_auth_and_standard_headers() -> None:
    def check(request: httpx.Request) -> httpx.Response:
        assert "X-API-Key" not in request.headers
        assert not any(name.startswith("lmts-") for name in request.headers)
        assert request.headers["Accept"] == "application/json"
        assert request.headers["User-Agent"] == USER_AGENT
        assert USER_AGENT.startswith("limitless-streamer/")
        assert "Content-Type" not in request.headers
        return ok(market_json("m"))

    async with open_rest(Script(check)) as rest:
        await rest.market("m")


# --- typed endpoints and venue cache ----------------------------------------------------


async def test_orderbook_decodes_exact_levels() -> None:
    body = b'{"bids":[{"price":0.515,"size":"150"}],"asks":[],"tokenId":123,"lastTradePrice":null}'
    script = Script(httpx.Response(200, content=body))
    async with open_rest(script) as rest:
        book = await rest.orderbook("m")
    assert book.bids == [PriceLevel("0.515", "150")]
    assert book.token_id == "123"
    assert target(script.requests[0]) == "/markets/m/orderbook"


async def test_market_caches_venue_per_slug() -> None:
    venue = {"exchange": "0xex", "adapter": None}
    script = Script(ok(market_json("m", venue=venue)))
    async with open_rest(script) as rest:
        assert rest.venue("m") is None
        market = await rest.market("m")
        assert isinstance(market, Market)
        assert rest.venue("m") == Venue(exchange="0xex", adapter=None)
        assert rest.venue("other") is None


async def test_active_markets_caches_venues_including_group_children() -> None:
    child = market_json("child", venue={"exchange": "0xneg", "adapter": "0xad"})
    group = market_json("group", venue={"exchange": "0xneg", "adapter": "0xad"}, markets=[child])
    script = Script(ok({"data": [group, market_json("plain")], "totalMarketsCount": 2}))
    async with open_rest(script) as rest:
        await rest.active_markets()
        assert rest.venue("child") == Venue(exchange="0xneg", adapter="0xad")
        assert rest.venue("group") is not None
        assert rest.venue("plain") is None


# --- observer ---------------------------------------------------------------------------


async def test_observer_sees_each_attempt_and_retry() -> None:
    script = Script(
        httpx.Response(429, json={"retryAfterSeconds": 2}),
        httpx.ConnectError("refused"),
        ok(market_json("m")),
    )
    observer = RecordingObserver()
    async with open_rest(script, observer=observer) as rest:
        await rest.market("m")
    assert observer.responses == [
        ("/markets/{slug}", 429, 1),
        ("/markets/{slug}", None, 2),
        ("/markets/{slug}", 200, 3),
    ]
    assert observer.retries == [("/markets/{slug}", 429, 2.0), ("/markets/{slug}", None, 1.0)]


# --- secrets never leak -----------------------------------------------------------------


async def test_errors_and_logs_never_contain_secrets(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    echo = {"message": f"bad token {TOKEN_ID} secret {SECRET}"}
    script = Script(
        httpx.Response(503, json=echo),
        httpx.ConnectError(f"refused {SECRET}"),
        httpx.Response(401, json=echo),
    )
    async with open_rest(script, credentials=HMAC) as rest:
        with pytest.raises(RestError) as info:
            await rest.market("m")
    assert info.value.status == 401
    for text in (str(info.value), repr(info.value), caplog.text):
        assert SECRET not in text
        assert TOKEN_ID not in text
    assert "<redacted>" in str(info.value)


async def test_api_key_never_in_error(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    echo = httpx.Response(403, text=f"key {API_KEY} rejected")
    async with open_rest(Script(httpx.Response(500), echo), credentials=ApiKey(API_KEY)) as rest:
        with pytest.raises(RestError) as info:
            await rest.market("m")
    assert API_KEY not in str(info.value)
    assert API_KEY not in caplog.text
    assert "rejected" in str(info.value)


# --- construction -----------------------------------------------------------------------


@pytest.mark.parametrize("url", ["api.test", "ftp://api.test", "https://api.test/?q=1"])
async def test_rest_client_rejects_bad_base_url(url: str) -> None:
    async with httpx.AsyncClient() as client:
        with pytest.raises(ValueError):
            RestClient(client, base_url=url)


def test_retry_policy_validates() -> None:
    with pytest.raises(ValueError):
        RetryPolicy(max_attempts=0)
    policy = msgspec.json.decode(
        json.dumps({"max_attempts": 2, "retry_statuses": [503]}), type=RetryPolicy
    )
    assert policy.max_attempts == 2
    assert policy.retry_statuses == (503,)

