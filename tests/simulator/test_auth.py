"""The simulator's authentication: HMAC verification (pure and over loopback), the
private WebSocket channels, and the account model (private events, allowances).

The reference vectors are copied from the API reference §1.4; the client side of every
loopback test signs with :mod:`streamer.partner.auth`, a separate implementation.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import anyio
import httpx
import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidStatus

from streamer.partner.auth import ApiKey, HmacCredentials, auth_headers, iso_timestamp
from streamer.simulator import (
    Account,
    Exchange,
    Simulator,
    SimulatorAddress,
    SimulatorAuth,
    SimulatorConfig,
    verify_request,
)
from streamer.transport.rest import RestClient, RestStatusError

pytestmark = pytest.mark.anyio

SECRET = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
OTHER_SECRET = "c3VwZXItc2VjcmV0LWtleQ=="
TOKEN_ID = "tok-simulator-0001"
API_KEY = "lmts_simulator_api_key_0001"
TS = "2026-01-15T09:30:00.123Z"
TS_EPOCH_S = datetime(2026, 1, 15, 9, 30, 0, 123000, tzinfo=UTC).timestamp()
EIO_PATH = "/socket.io/?EIO=4&transport=websocket"
EIO_PATH_PY = "/socket.io/?transport=websocket&EIO=4"
PREFIX = "42/markets,"
AUTH = SimulatorAuth(token_id=TOKEN_ID, secret=SECRET, api_key=API_KEY)
HMAC = HmacCredentials(TOKEN_ID, SECRET)
VECTORS = [  # (method, path, body, signature) from §1.4, secret 0x00..0x1f
    ("GET", "/markets/active?limit=25&page=2&sortBy=newest", b"",
     "HijQ8f2/1aWSIUOlnLzopr0f2r9nIw1QmEH2u5Hqnf0="),
    ("POST", "/profiles/partner-accounts/4543/allowances/retry", b"{}",
     "vnN0AcizoxZruTZ3IBeeGJtYOXTpyksXNUwsai6BIYw="),
    ("GET", EIO_PATH, b"", "06OyE1eRZqH/pA2RV/toqV2FhAFgRRD9maEbvhY3Y+M="),
    ("GET", "/markets/active", b"", "RK5tuky+OELawd3YwSqHxKBv2mWhrxS0SAa7gjCuwSE="),
]


def hmac_headers(signature: str, timestamp: str = TS, token: str = TOKEN_ID) -> dict[str, str]:
    return {"lmts-api-key": token, "lmts-timestamp": timestamp, "lmts-signature": signature}


def signed(method: str, path: str, body: bytes = b"", *, now: float = TS_EPOCH_S,
           secret: str = SECRET) -> dict[str, str]:
    return auth_headers(HmacCredentials(TOKEN_ID, secret), method, path, body, now)


class Clock:
    """A settable epoch clock shared by the simulator and the client."""

    def __init__(self, now: float = TS_EPOCH_S) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


# -- pure verification ------------------------------------------------------------------


@pytest.mark.parametrize(("method", "path", "body", "signature"), VECTORS)
def test_verify_accepts_reference_vectors(
    method: str, path: str, body: bytes, signature: str
) -> None:
    verdict = verify_request(AUTH, hmac_headers(signature), method, path, body, TS_EPOCH_S)
    assert verdict.ok and verdict.identity == "hmac" and verdict.reason is None


def test_verify_accepts_ts_sdk_regression_vector() -> None:
    auth = SimulatorAuth(token_id="t", secret=OTHER_SECRET)
    headers = {"lmts-api-key": "t", "lmts-timestamp": "2026-03-23T12:34:56.789Z",
               "lmts-signature": "mgMUpOd7FH4sOSti2MF30YKF9yDq+67VjFksPa5I5eE="}
    now = datetime(2026, 3, 23, 12, 34, 56, tzinfo=UTC).timestamp()
    assert verify_request(auth, headers, "PATCH", "/orders?market=btc", b'{"foo":"bar"}', now).ok


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/markets/active?limit=25&page=2", b""),  # a query parameter dropped
        ("GET", "/markets/active?page=2&limit=25&sortBy=newest", b""),  # reordered query
        ("POST", "/markets/active?limit=25&page=2&sortBy=newest", b""),  # other method
        ("GET", "/markets/active?limit=25&page=2&sortBy=newest", b"{}"),  # other body
    ],
)
def test_verify_rejects_other_request_than_signed(method: str, path: str, body: bytes) -> None:
    verdict = verify_request(AUTH, hmac_headers(VECTORS[0][3]), method, path, body, TS_EPOCH_S)
    assert not verdict.ok and verdict.reason == "bad_signature"


def test_verify_rejects_wrong_secret() -> None:
    headers = signed("GET", "/portfolio/positions", secret=OTHER_SECRET)
    verdict = verify_request(AUTH, headers, "GET", "/portfolio/positions", b"", TS_EPOCH_S)
    assert verdict.reason == "bad_signature"


@pytest.mark.parametrize(("skew_s", "ok"), [(0, True), (29.9, True), (-29.9, True), (30.0, True),
                                            (30.2, False), (-30.2, False), (3600, False)])
def test_verify_timestamp_window_is_30s_both_ways(skew_s: float, ok: bool) -> None:
    headers = signed("GET", "/portfolio/positions")
    verdict = verify_request(AUTH, headers, "GET", "/portfolio/positions", b"",
                             TS_EPOCH_S + skew_s)
    assert verdict.ok is ok
    assert verdict.reason == (None if ok else "stale_timestamp")


@pytest.mark.parametrize(
    "timestamp",
    ["2026-01-15T09:30:00Z", "2026-01-15T09:30:00.123+00:00", "2026-01-15 09:30:00.123Z",
     "1768469400123", "", "2026-01-15T09:30:00.123456Z"],
)
def test_verify_rejects_malformed_timestamps(timestamp: str) -> None:
    verdict = verify_request(AUTH, hmac_headers(VECTORS[3][3], timestamp), "GET",
                             "/markets/active", b"", TS_EPOCH_S)
    assert verdict.reason == "bad_timestamp"


def test_verify_rejects_unknown_token_incomplete_and_missing_headers() -> None:
    sig = VECTORS[3][3]
    args = ("GET", "/markets/active", b"", TS_EPOCH_S)
    assert verify_request(AUTH, hmac_headers(sig, token="other"), *args).reason == "unknown_token"
    partial = {"lmts-api-key": TOKEN_ID, "lmts-signature": sig}
    assert verify_request(AUTH, partial, *args).reason == "incomplete_hmac_headers"
    assert verify_request(AUTH, {}, *args).reason == "missing"
    assert verify_request(AUTH, {"lmts-api-key": "\u00e9"}, *args).ok is False


def test_verify_api_key_mode_and_hmac_precedence() -> None:
    args = ("GET", "/portfolio/positions", b"", TS_EPOCH_S)
    assert verify_request(AUTH, {"X-API-Key": API_KEY}, *args).identity == "api_key"
    assert verify_request(AUTH, {"x-api-key": "lmts_wrong"}, *args).reason == "bad_api_key"
    no_key = SimulatorAuth(token_id=TOKEN_ID, secret=SECRET)
    assert verify_request(no_key, {"X-API-Key": API_KEY}, *args).reason == "bad_api_key"
    # HMAC headers win (§1.2): a bad signature is not rescued by a good API key.
    headers = {**signed("GET", "/other"), "X-API-Key": API_KEY}
    assert verify_request(AUTH, headers, *args).reason == "bad_signature"


@settings(max_examples=200, deadline=None)
@given(
    method=st.sampled_from(["GET", "POST", "DELETE", "patch"]),
    path=st.from_regex(r"/[A-Za-z0-9/_.~%-]{0,40}(\?[A-Za-z0-9=&%+._-]{0,40})?", fullmatch=True),
    body=st.binary(max_size=64),
    now=st.floats(min_value=1.6e9, max_value=2.5e9),
    skew=st.floats(min_value=-29.0, max_value=29.0),
)
def test_verify_accepts_whatever_the_client_signs(
    method: str, path: str, body: bytes, now: float, skew: float
) -> None:
    headers = auth_headers(HMAC, method, path, body, now)
    assert verify_request(AUTH, headers, method, path, body, now + skew).ok
    flipped = body + b" " if body else b"x"
    assert not verify_request(AUTH, headers, method, path, flipped, now + skew).ok


def test_simulator_auth_validates_and_never_shows_the_secret() -> None:
    assert SECRET not in repr(AUTH) and SECRET not in str(AUTH)
    with pytest.raises(ValueError, match="base64"):
        SimulatorAuth(token_id="t", secret="not base64!")
    with pytest.raises(ValueError):
        SimulatorAuth(token_id="", secret=SECRET)


# -- REST over loopback -------------------------------------------------------------------


@asynccontextmanager
async def running(
    config: SimulatorConfig, clock: Clock | None = None
) -> AsyncIterator[tuple[Simulator, SimulatorAddress]]:
    sim = Simulator(config, clock=clock or Clock())
    async with anyio.create_task_group() as tg:
        address = await tg.start(sim.run)
        try:
            yield sim, address
        finally:
            tg.cancel_scope.cancel()


CONFIG = SimulatorConfig(quirks=False, rate_hz=0, auth=AUTH, private_rate_hz=0)


@asynccontextmanager
async def rest_client(
    address: SimulatorAddress, credentials: Any, clock: Clock
) -> AsyncIterator[RestClient]:
    async with httpx.AsyncClient() as http:
        yield RestClient(http, base_url=address.api_url, credentials=credentials, clock=clock)


RAW_DECODER = msgspec.json.Decoder(msgspec.Raw)


class PortfolioShape(msgspec.Struct):
    clob: list[dict[str, Any]]
    amm: list[Any]
    group: list[Any]


@pytest.mark.integration
async def test_rest_portfolio_accepts_client_hmac_signature() -> None:
    clock = Clock()
    async with running(CONFIG, clock) as (sim, address), rest_client(address, HMAC, clock) as rest:
        body = await rest.request("GET", "/portfolio/positions", endpoint="p",
                                  decoder=msgspec.json.Decoder(PortfolioShape))
    assert body.clob and body.clob[0]["market"]["slug"] in sim.exchange.book_slugs()
    assert sim.stats.rest.auth_ok["hmac"] == 1 and not sim.stats.rest.auth_failures


@pytest.mark.integration
@pytest.mark.parametrize(
    ("credentials", "skew_s", "reason"),
    [
        (None, 0.0, "missing"),
        (HmacCredentials(TOKEN_ID, OTHER_SECRET), 0.0, "bad_signature"),
        (HmacCredentials("tok-someone-else", SECRET), 0.0, "unknown_token"),
        (HMAC, -31.0, "stale_timestamp"),
        (HMAC, +31.0, "stale_timestamp"),
        (ApiKey("lmts_wrong_key_123"), 0.0, "bad_api_key"),
    ],
)
async def test_rest_portfolio_rejects_bad_credentials_with_401(
    credentials: Any, skew_s: float, reason: str
) -> None:
    clock = Clock()
    client_clock = Clock(clock.now + skew_s)
    async with running(CONFIG, clock) as (sim, address):
        async with rest_client(address, credentials, client_clock) as rest:
            with pytest.raises(RestStatusError) as info:
                await rest.request("GET", "/portfolio/positions", endpoint="p",
                                   decoder=RAW_DECODER)
    assert info.value.status == 401
    body = msgspec.json.decode(info.value.body)
    assert body == {"statusCode": 401, "message": "Unauthorized", "error": "Unauthorized"}
    assert sim.stats.rest.auth_failures == {reason: 1}


@pytest.mark.integration
async def test_rest_rejects_signature_made_for_another_path() -> None:
    clock = Clock()
    async with running(CONFIG, clock) as (sim, address), httpx.AsyncClient() as http:
        headers = signed("GET", "/portfolio/positions?page=1", now=clock.now)
        bad = await http.get(address.api_url + "/portfolio/positions", headers=headers)
        headers = signed("GET", "/portfolio/positions", now=clock.now)
        good = await http.get(address.api_url + "/portfolio/positions", headers=headers)
    assert (bad.status_code, good.status_code) == (401, 200)
    assert sim.stats.rest.auth_failures == {"bad_signature": 1}


@pytest.mark.integration
async def test_rest_retry_post_signs_the_exact_body() -> None:
    clock = Clock()
    path = "/profiles/partner-accounts/4543/allowances/retry"
    async with running(CONFIG, clock) as (_, address), httpx.AsyncClient() as http:
        headers = signed("POST", path, b"{}", now=clock.now)
        other_body = await http.post(address.api_url + path, headers=headers, content=b"{ }")
        same_body = await http.post(address.api_url + path, headers=headers, content=b"{}")
    assert other_body.status_code == 401
    assert same_body.status_code == 200
    assert same_body.json()["summary"]["submitted"] == 4


@pytest.mark.integration
async def test_rest_public_endpoints_stay_public_and_private_need_auth() -> None:
    async with running(CONFIG) as (sim, address), httpx.AsyncClient() as http:
        active = await http.get(address.api_url + "/markets/active")
        portfolio = await http.get(address.api_url + "/portfolio/positions")
        allowances = await http.get(address.api_url + "/profiles/partner-accounts/4543/allowances")
    assert active.status_code == 200
    assert portfolio.status_code == allowances.status_code == 401
    assert sim.stats.rest.auth_failures == {"missing": 2}


@pytest.mark.integration
async def test_rest_private_endpoints_refused_when_simulator_has_no_auth() -> None:
    config = SimulatorConfig(quirks=False, rate_hz=0)
    async with running(config) as (_, address), rest_client(address, HMAC, Clock()) as rest:
        with pytest.raises(RestStatusError) as info:
            await rest.request("GET", "/portfolio/positions", endpoint="p", decoder=RAW_DECODER)
    assert info.value.status == 401


@pytest.mark.integration
async def test_rest_api_key_reads_portfolio_but_not_allowances() -> None:
    clock = Clock()
    key = ApiKey(API_KEY)
    async with running(CONFIG, clock) as (sim, address), rest_client(address, key, clock) as rest:
        await rest.request("GET", "/portfolio/positions", endpoint="p", decoder=RAW_DECODER)
        with pytest.raises(RestStatusError) as info:
            await rest.request("GET", "/profiles/partner-accounts/4543/allowances",
                               endpoint="a", decoder=RAW_DECODER)
    assert info.value.status == 403
    assert sim.stats.rest.auth_ok["api_key"] == 1
    assert sim.stats.rest.auth_failures == {"hmac_required": 1}


@pytest.mark.integration
async def test_rest_allowances_unknown_and_invalid_profiles() -> None:
    clock = Clock()
    async with running(CONFIG, clock) as (_, address), rest_client(address, HMAC, clock) as rest:
        statuses = []
        for pid in ("999", "0", "abc"):
            with pytest.raises(RestStatusError) as info:
                await rest.request("GET", f"/profiles/partner-accounts/{pid}/allowances",
                                   endpoint="a", decoder=RAW_DECODER)
            statuses.append(info.value.status)
    assert statuses == [404, 400, 400]


@pytest.mark.integration
async def test_rest_allowance_429_carries_retry_after_in_body() -> None:
    clock = Clock()
    config = msgspec.structs.replace(CONFIG, allowance_retry_429=1, allowance_retry_after_s=7)
    async with running(config, clock) as (_, address), rest_client(address, HMAC, clock) as rest:
        with pytest.raises(RestStatusError) as info:
            await rest.request("POST", "/profiles/partner-accounts/4543/allowances/retry",
                               endpoint="r", body=b"{}", decoder=RAW_DECODER, retry_statuses=())
    assert info.value.status == 429 and info.value.retry_after_s == 7


# -- WebSocket over loopback --------------------------------------------------------------


@asynccontextmanager
async def open_socket(
    address: SimulatorAddress, headers: dict[str, str], path: str = EIO_PATH
) -> AsyncIterator[ClientConnection]:
    async with connect(address.ws_url + path, additional_headers=headers) as ws:
        with anyio.fail_after(2):
            assert str(await ws.recv()).startswith("0{")
            await ws.send("40/markets,")
            assert (await recv_frame(ws)).startswith('40/markets,{"sid":')
        yield ws


async def recv_frame(ws: ClientConnection) -> str:
    while True:
        frame = await ws.recv()
        assert isinstance(frame, str)
        if frame != "2":
            return frame
        await ws.send("3")


async def next_event(ws: ClientConnection, name: str, limit_s: float = 2.0) -> Any:
    with anyio.fail_after(limit_s):
        while True:
            frame = await recv_frame(ws)
            if frame.startswith(PREFIX):
                event, payload = msgspec.json.decode(frame[len(PREFIX):])
                if event == name:
                    return payload


async def emit(ws: ClientConnection, name: str, payload: Any = None) -> None:
    body = [name] if payload is None else [name, payload]
    await ws.send(PREFIX + msgspec.json.encode(body).decode())


@pytest.mark.integration
async def test_ws_signed_handshake_serves_private_order_events() -> None:
    clock = Clock()
    async with running(CONFIG, clock) as (sim, address):
        async with open_socket(address, signed("GET", EIO_PATH, now=clock.now)) as ws:
            assert (await next_event(ws, "authenticated"))["account"] == AUTH.account
            await emit(ws, "subscribe_order_events", {})
            await emit(ws, "subscribe_positions", {})
            notice = await next_event(ws, "system")
            assert "position" in notice["message"]
            while not sim.push_private():
                pass
            event = await next_event(ws, "orderEvent")
    assert event["source"] in ("OME", "SETTLEMENT") and "eventId" in event
    assert sim.stats.ws.auth_accepted == 1 and sim.stats.ws.private_subscriptions == 2


@pytest.mark.integration
async def test_ws_accepts_the_python_sdk_query_order_when_signed_as_sent() -> None:
    clock = Clock()
    async with running(CONFIG, clock) as (sim, address):
        headers = signed("GET", EIO_PATH_PY, now=clock.now)
        async with open_socket(address, headers, EIO_PATH_PY) as ws:
            await next_event(ws, "authenticated")
    assert list(sim.stats.ws.handshake_paths) == [EIO_PATH_PY]


@pytest.mark.integration
@pytest.mark.parametrize(
    ("make_headers", "path", "reason"),
    [
        (lambda now: signed("GET", EIO_PATH, now=now, secret=OTHER_SECRET), EIO_PATH,
         "bad_signature"),
        (lambda now: signed("GET", EIO_PATH, now=now - 31), EIO_PATH, "stale_timestamp"),
        (lambda now: signed("GET", EIO_PATH, now=now + 31), EIO_PATH, "stale_timestamp"),
        (lambda now: signed("GET", EIO_PATH_PY, now=now), EIO_PATH, "bad_signature"),
        (lambda now: signed("GET", "/socket.io/", now=now), EIO_PATH, "bad_signature"),
        (lambda now: {"X-API-Key": "lmts_wrong"}, EIO_PATH, "bad_api_key"),
    ],
)
async def test_ws_rejects_bad_handshake_signature_with_401(
    make_headers: Any, path: str, reason: str
) -> None:
    clock = Clock()
    async with running(CONFIG, clock) as (sim, address):
        with pytest.raises(InvalidStatus) as info:
            async with connect(address.ws_url + path, additional_headers=make_headers(clock.now)):
                pass
    assert info.value.response.status_code == 401
    assert sim.stats.ws.auth_rejected == {reason: 1}
    assert sim.stats.ws.connections_accepted == 0


@pytest.mark.integration
async def test_ws_stale_reused_signature_rejected_fresh_one_accepted() -> None:
    clock = Clock()
    async with running(CONFIG, clock) as (sim, address):
        first = signed("GET", EIO_PATH, now=clock.now)
        async with open_socket(address, first):
            pass
        clock.now += 31
        with pytest.raises(InvalidStatus):
            async with connect(address.ws_url + EIO_PATH, additional_headers=first):
                pass
        async with open_socket(address, signed("GET", EIO_PATH, now=clock.now)):
            pass
    assert sim.stats.ws.auth_accepted == 2
    assert sim.stats.ws.auth_rejected == {"stale_timestamp": 1}


@pytest.mark.integration
async def test_ws_api_key_handshake_is_authenticated() -> None:
    async with running(CONFIG) as (sim, address):
        async with open_socket(address, {"X-API-Key": API_KEY}) as ws:
            await next_event(ws, "authenticated")
            await emit(ws, "subscribe_transactions", {})
            await ws.send(PREFIX + '5["unsubscribe",{"channel":"none"}]')
            with anyio.fail_after(2):
                while not (await recv_frame(ws)).startswith("43/markets,5"):
                    pass
    assert sim.stats.ws.private_subscriptions == 1 and sim.stats.ws.private_refused == 0


@pytest.mark.integration
async def test_ws_private_subscribe_on_anonymous_socket_gets_exception() -> None:
    async with running(CONFIG) as (sim, address):
        async with open_socket(address, {}) as ws:
            await emit(ws, "subscribe_order_events")
            exception = await next_event(ws, "exception")
            for _ in range(20):
                sim.push_private()
            await emit(ws, "subscribe_market_prices", {"marketSlugs": [], "marketAddresses": []})
            await ws.send(PREFIX + '5["unsubscribe",{"channel":"subscribe_market_prices"}]')
            frames = []
            with anyio.fail_after(2):
                while not (frame := await recv_frame(ws)).startswith("43/markets,5"):
                    frames.append(frame)
    assert exception["status"] == "error" and "Unauthorized" in exception["message"]
    assert not any('"orderEvent"' in f for f in frames)
    assert sim.stats.ws.private_refused == 1 and sim.stats.ws.private_subscriptions == 0


@pytest.mark.integration
async def test_ws_no_auth_configured_keeps_headers_ignored_and_sockets_public() -> None:
    config = SimulatorConfig(quirks=False, rate_hz=0)
    async with running(config) as (sim, address):
        async with open_socket(address, signed("GET", EIO_PATH, now=0.0)) as ws:
            await emit(ws, "subscribe_positions", {})
            await next_event(ws, "exception")
    assert sim.stats.ws.auth_rejected == {} and sim.stats.ws.connections_accepted == 1


# -- the account model (pure) ----------------------------------------------------------


def account(**knobs: Any) -> Account:
    config = SimulatorConfig(rate_hz=0, **knobs)
    return Account(config, Exchange(config))


def test_allowances_move_missing_submitted_confirmed() -> None:
    allowances = account(allowance_confirm_polls=2).allowances
    first = allowances.check(4543)
    assert first.status == 200 and not first.payload["ready"]
    assert first.payload["summary"] == {"total": 4, "confirmed": 0, "missing": 4,
                                        "submitted": 0, "failed": 0}
    retried = allowances.retry(4543)
    assert [t["status"] for t in retried.payload["targets"]] == ["submitted"] * 4
    assert all(t["txHash"].startswith("0x") for t in retried.payload["targets"])
    assert allowances.retry(4543).status == 409  # a retry is in flight
    assert allowances.check(4543).payload["summary"]["missing"] == 4  # chain not there yet
    done = allowances.check(4543).payload
    assert done["ready"] and done["summary"]["confirmed"] == 4
    assert all(t["confirmed"] for t in done["targets"])


def test_allowances_injected_429_then_409_then_success() -> None:
    allowances = account(allowance_retry_429=2, allowance_retry_after_s=9,
                         allowance_retry_409=1).allowances
    replies = [allowances.retry(4543) for _ in range(4)]
    assert [r.status for r in replies] == [429, 429, 409, 200]
    assert replies[0].payload["retryAfterSeconds"] == 9
    assert replies[2].payload["message"] == "Allowance retry already running"


def test_allowances_failed_and_unretryable_targets() -> None:
    allowances = account(allowance_targets=5, allowance_failed_targets=1,
                         allowance_unretryable_targets=1, allowance_confirm_polls=0).allowances
    targets = allowances.check(4543).payload["targets"]
    assert [(t["status"], t["retryable"], t.get("errorCode")) for t in targets[:2]] == [
        ("failed", True, "RPC_READ_FAILED"), ("failed", False, "PRIVY_SPONSORSHIP_UNAVAILABLE")]
    summary = allowances.retry(4543).payload["summary"]
    assert (summary["submitted"], summary["failed"]) == (4, 1)
    final = allowances.check(4543).payload
    assert not final["ready"] and final["summary"]["confirmed"] == 4
    assert allowances.retry(4543).payload["summary"]["submitted"] == 0  # nothing retryable


def test_account_emits_every_documented_private_shape_deterministically() -> None:
    def run() -> list[tuple[str, Any]]:
        acct = account(seed=3, private_duplicate_p=0.2)
        return [(e.name, e.payload) for i in range(300) for e in acct.step(1_767_225_600_000 + i)]

    events = run()
    assert msgspec.json.encode(events) == msgspec.json.encode(run())
    kinds = {(p["source"], p["type"]) for n, p in events if n == "orderEvent"}
    assert kinds == {("OME", "PLACEMENT"), ("OME", "UPDATE"), ("OME", "CANCELLATION"),
                     ("OME", "EXECUTION"), ("SETTLEMENT", "MATCHED"), ("SETTLEMENT", "MINED"),
                     ("SETTLEMENT", "FAILED")}
    names = {n for n, _ in events}
    assert names == {"orderEvent", "positions", "tx"}
    ids = [p["eventId"] for n, p in events if n == "orderEvent"]
    assert len(ids) > len(set(map(str, ids)))  # verbatim re-sends exercise dedupe
    assert any(isinstance(p, list) for n, p in events if n == "positions")  # both shapes
    executions = [p for n, p in events if n == "orderEvent" and p["type"] == "EXECUTION"]
    assert all(p["eventId"] == f"terminal:{p['orderId']}" for p in executions)
    matched = [p for n, p in events if n == "orderEvent" and p["type"] == "MATCHED"]
    for p in matched:  # settlement amounts are exact decimal strings
        assert Decimal(p["amountCollateral"]) == Decimal(p["amountContracts"]) * Decimal(p["price"])


def test_account_portfolio_shape_has_raw6_strings() -> None:
    acct = account()
    body = acct.portfolio()
    entry = body["clob"][0]
    assert entry["tokensBalance"]["yes"] == str(int(Decimal("25.5") * 1_000_000))
    assert entry["positions"]["yes"]["fillPrice"] == "420000"
    assert set(body) >= {"amm", "clob", "group", "points", "rewards"}


def test_iso_timestamp_helper_matches_reference_format() -> None:
    assert iso_timestamp(TS_EPOCH_S) == TS
