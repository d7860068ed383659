"""The simulator over real loopback sockets: REST with httpx, WebSocket with raw frames."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from decimal import Decimal
from typing import Any

import anyio
import anyio.abc
import httpx
import msgspec
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from streamer.simulator import Simulator, SimulatorAddress, SimulatorConfig

pytestmark = pytest.mark.anyio

EIO_PATH = "/socket.io/?EIO=4&transport=websocket"
PREFIX = "42/markets,"
QUIET = SimulatorConfig(quirks=False, rate_hz=0)


class WireLevel(msgspec.Struct):
    price: Decimal
    size: Decimal
    side: str | None = None


class WireBook(msgspec.Struct):
    bids: list[WireLevel]
    asks: list[WireLevel]
    tokenId: str
    adjustedMidpoint: Decimal | None
    maxSpread: Decimal
    minSize: Decimal
    lastTradePrice: Decimal | None = None


class WireUpdate(msgspec.Struct):
    marketSlug: str
    orderbook: WireBook
    timestamp: str | int


def levels(wire: list[WireLevel]) -> list[tuple[Decimal, Decimal]]:
    return [(level.price, level.size) for level in wire]


def sane_prices(book: WireBook) -> bool:
    return all(
        lv.price.is_finite() and lv.size.is_finite() and 0 < lv.price < 1 and lv.size > 0
        for lv in book.bids + book.asks
    )


@asynccontextmanager
async def running(config: SimulatorConfig) -> AsyncIterator[tuple[Simulator, SimulatorAddress]]:
    sim = Simulator(config)
    async with anyio.create_task_group() as tg:
        address = await tg.start(sim.run)
        try:
            yield sim, address
        finally:
            tg.cancel_scope.cancel()


@asynccontextmanager
async def with_rest(config: SimulatorConfig) -> AsyncIterator[tuple[Simulator, httpx.AsyncClient]]:
    async with running(config) as (sim, address):
        async with httpx.AsyncClient(base_url=address.api_url) as client:
            yield sim, client


async def get_book(client: httpx.AsyncClient, slug: str) -> WireBook:
    response = await client.get(f"/markets/{slug}/orderbook")
    assert response.status_code == 200
    return msgspec.json.decode(response.content, type=WireBook)


@asynccontextmanager
async def open_socket(
    address: SimulatorAddress, *, join: bool = True
) -> AsyncIterator[ClientConnection]:
    async with connect(address.ws_url + EIO_PATH) as ws:
        with anyio.fail_after(2):
            opened = await ws.recv()
            assert isinstance(opened, str) and opened.startswith("0{")
            if join:
                await ws.send("40/markets,")
                assert (await recv_frame(ws)).startswith('40/markets,{"sid":')
        yield ws


async def recv_frame(ws: ClientConnection) -> str:
    """The next frame that is not a ping (pings are answered)."""
    while True:
        frame = await ws.recv()
        assert isinstance(frame, str)
        if frame != "2":
            return frame
        await ws.send("3")


def split_event(frame: str) -> tuple[str, msgspec.Raw] | None:
    if not frame.startswith(PREFIX):
        return None
    try:
        name, raw = msgspec.json.decode(frame[len(PREFIX) :], type=tuple[str, msgspec.Raw])
    except msgspec.DecodeError:
        return None
    return name, raw


async def next_event(ws: ClientConnection, name: str, limit_s: float = 2.0) -> msgspec.Raw:
    with anyio.fail_after(limit_s):
        while True:
            parsed = split_event(await recv_frame(ws))
            if parsed is not None and parsed[0] == name:
                return parsed[1]


async def next_update(ws: ClientConnection, limit_s: float = 2.0) -> WireUpdate:
    return msgspec.json.decode(await next_event(ws, "orderbookUpdate", limit_s), type=WireUpdate)


async def subscribe(
    ws: ClientConnection, slugs: list[str], addresses: tuple[str, ...] = ()
) -> None:
    """Subscribe, then wait for an acked no-op: every later frame reflects the new subscription."""
    body = msgspec.json.encode(
        ["subscribe_market_prices", {"marketSlugs": slugs, "marketAddresses": list(addresses)}]
    )
    await ws.send(PREFIX + body.decode())
    await ws.send(PREFIX + '7["unsubscribe",{"channel":"subscribe_order_events"}]')
    with anyio.fail_after(2):
        while not (await recv_frame(ws)).startswith("43/markets,7["):
            pass


# -- REST -----------------------------------------------------------------------------


@pytest.mark.integration
async def test_rest_active_markets_paginates_everything() -> None:
    config = msgspec.structs.replace(QUIET, markets=30, groups=2, amm_markets=1)
    async with with_rest(config) as (sim, client):
        seen: list[dict[str, Any]] = []
        for page in range(1, 5):
            params = {"limit": 10, "page": page, "sortBy": "newest"}
            response = await client.get("/markets/active", params=params)
            assert response.status_code == 200
            body = response.json()
            assert body["totalMarketsCount"] == 33
            seen += body["data"]
        assert len(seen) == 33 and len({m["slug"] for m in seen}) == 33
        assert {m["slug"] for m in seen} == {m.slug for m in sim.exchange.active_markets()}
        groups = [m for m in seen if m["marketType"] == "group"]
        assert len(groups) == 2 and all(len(g["markets"]) == 3 for g in groups)
        assert all(child["tokens"]["yes"].isdigit() for g in groups for child in g["markets"])
        capped = (await client.get("/markets/active", params={"limit": 100})).json()
        assert len(capped["data"]) == 25
        assert sim.stats.rest.requests["/markets/active"] == 5


@pytest.mark.integration
async def test_rest_active_markets_rejects_bad_query() -> None:
    async with with_rest(QUIET) as (_, client):
        response = await client.get("/markets/active", params={"limit": 0})
        assert response.status_code == 400
        body = response.json()
        assert body["statusCode"] == 400 and isinstance(body["message"], list)
        assert (await client.get("/markets/active", params={"sortBy": "bogus"})).status_code == 400


@pytest.mark.integration
async def test_rest_market_by_slug_child_and_404() -> None:
    async with with_rest(QUIET) as (sim, client):
        group = next(m for m in sim.exchange.active_markets() if m.market_type == "group")
        child = group.children[1]
        body = (await client.get(f"/markets/{child.slug}")).json()
        assert body["slug"] == child.slug and body["orderInGroup"] == 1
        assert body["venue"] == {"exchange": child.exchange, "adapter": child.adapter}
        assert body["tokens"] == {"yes": child.yes_token, "no": child.no_token}
        missing = await client.get("/markets/no-such-market")
        assert missing.status_code == 404
        assert missing.json() == {
            "statusCode": 404, "message": "Market no-such-market not found", "error": "Not Found"
        }
        assert (await client.get("/nothing/here")).status_code == 404
        assert (await client.get(f"/markets/{group.slug}/orderbook")).status_code == 400


@pytest.mark.integration
async def test_rest_orderbook_matches_exchange_exactly() -> None:
    async with with_rest(QUIET) as (sim, client):
        slug = sim.exchange.book_slugs()[0]
        sim.exchange.set_book(
            slug, [(Decimal("0.515"), Decimal("150.25"))], [(Decimal("0.52"), Decimal("3"))]
        )
        response = await client.get(f"/markets/{slug}/orderbook")
        assert b'"bids":[{"price":0.515,"size":150.25,"side":"BUY"}]' in response.content
        book = msgspec.json.decode(response.content, type=WireBook)
        assert book.adjustedMidpoint == Decimal("0.5175")
        slug2 = sim.exchange.book_slugs()[1]
        book2 = await get_book(client, slug2)
        bids, asks = sim.exchange.book(slug2)
        assert (levels(book2.bids), levels(book2.asks)) == (bids, asks)
        market = sim.exchange.market(slug2)
        assert market is not None and book2.tokenId == market.yes_token
        assert [lv.side for lv in book2.bids] == ["BUY"] * len(bids)
        assert book2.maxSpread == Decimal("0.05") and book2.minSize == Decimal(1)


@pytest.mark.integration
async def test_rest_fault_rates_follow_the_seed() -> None:
    config = msgspec.structs.replace(QUIET, rest_429_rate=0.25, rest_503_rate=0.25)
    runs: list[list[int]] = []
    for _ in range(2):
        async with with_rest(config) as (sim, client):
            statuses = []
            for _ in range(200):
                response = await client.get("/markets/active", params={"limit": 1})
                statuses.append(response.status_code)
                if response.status_code == 429:
                    assert response.json() == {
                        "statusCode": 429, "message": "Too Many Requests", "retryAfterSeconds": 1
                    }
            assert sim.stats.rest.statuses[429] == statuses.count(429)
            runs.append(statuses)
    assert runs[0] == runs[1]
    assert 25 <= runs[0].count(429) <= 75 and 25 <= runs[0].count(503) <= 75
    assert runs[0].count(200) == 200 - runs[0].count(429) - runs[0].count(503)


@pytest.mark.integration
async def test_rest_keep_alive_and_per_path_counts() -> None:
    async with with_rest(QUIET) as (sim, client):
        slug = sim.exchange.book_slugs()[0]
        for _ in range(3):
            assert (await client.get(f"/markets/{slug}/orderbook")).status_code == 200
        posted = await client.post("/markets/active", json={"x": "y" * 5000})
        assert posted.status_code == 404
        assert posted.json()["message"] == "Cannot POST /markets/active"
        assert (await client.get(f"/markets/{slug}")).status_code == 200
        assert sim.stats.rest.connections == 1
        assert sim.stats.rest.requests[f"/markets/{slug}/orderbook"] == 3
        assert sim.stats.rest.total_requests == 5


# -- WebSocket ------------------------------------------------------------------------


@pytest.mark.integration
async def test_ws_rejects_other_paths_and_protocol_versions() -> None:
    async with running(QUIET) as (sim, address):
        with pytest.raises(InvalidStatus) as wrong_path:
            async with connect(address.ws_url + "/other"):
                pass
        assert wrong_path.value.response.status_code == 404
        with pytest.raises(InvalidStatus) as wrong_version:
            async with connect(address.ws_url + "/socket.io/?EIO=3&transport=websocket"):
                pass
        assert wrong_version.value.response.status_code == 400
        assert sim.stats.ws.connections_rejected == 2


@pytest.mark.integration
async def test_ws_open_packet_and_namespace_connect() -> None:
    config = msgspec.structs.replace(QUIET, ping_interval_ms=12345, ping_timeout_ms=6789)
    async with running(config) as (sim, address):
        # python-engineio's query order must work too.
        async with connect(address.ws_url + "/socket.io/?transport=websocket&EIO=4") as ws:
            opened = msgspec.json.decode((await ws.recv())[1:])
            assert opened["upgrades"] == [] and opened["maxPayload"] == 1_000_000
            assert (opened["pingInterval"], opened["pingTimeout"]) == (12345, 6789)
            assert isinstance(opened["sid"], str) and opened["sid"]
            await ws.send("40/markets,")
            ack = await ws.recv()
            assert isinstance(ack, str) and ack.startswith("40/markets,")
            assert isinstance(msgspec.json.decode(ack[len("40/markets,") :])["sid"], str)
            await ws.send("40/nope,")
            assert (await ws.recv()).startswith("44/nope,")
        assert sim.stats.connections_accepted == 1


@pytest.mark.integration
async def test_ws_ping_pong_keeps_alive_and_missing_pong_closes() -> None:
    config = msgspec.structs.replace(QUIET, ping_interval_ms=80, ping_timeout_ms=150)
    async with running(config) as (sim, address), open_socket(address, join=False) as ws:
        for _ in range(3):
            with anyio.fail_after(1):
                assert await ws.recv() == "2"
            await ws.send("3")
        with anyio.fail_after(2), pytest.raises(ConnectionClosed):
            while True:
                await ws.recv()  # pings go unanswered now
        assert sim.stats.ws.ping_timeouts == 1 and sim.stats.ws.pongs_received == 3


@pytest.mark.integration
async def test_ws_subscribe_receives_only_subscribed_slugs() -> None:
    config = SimulatorConfig(quirks=False, rate_hz=500, markets=6, groups=0, amm_markets=0)
    async with running(config) as (sim, address), open_socket(address) as ws:
        wanted = sim.exchange.book_slugs()[:2]
        await subscribe(ws, wanted)
        last: dict[str, str] = {}
        for _ in range(25):
            frame = await recv_frame(ws)
            parsed = split_event(frame)
            assert parsed is not None and parsed[0] == "orderbookUpdate", frame
            update = msgspec.json.decode(parsed[1], type=WireUpdate)
            assert update.marketSlug in wanted and sane_prices(update.orderbook)
            market = sim.exchange.market(update.marketSlug)
            assert market is not None and update.orderbook.tokenId == market.yes_token
            assert isinstance(update.timestamp, str)
            # Same ISO format throughout, so text order is time order.
            assert update.timestamp >= last.get(update.marketSlug, "")
            last[update.marketSlug] = update.timestamp
        assert sim.stats.subscriptions == 1 and sim.subscriptions() == [frozenset(wanted)]


@pytest.mark.integration
async def test_ws_no_book_is_pushed_on_subscribe() -> None:
    async with running(QUIET) as (sim, address), open_socket(address) as ws:
        await subscribe(ws, sim.exchange.book_slugs())
        with anyio.move_on_after(0.3) as quiet:
            await recv_frame(ws)
        assert quiet.cancelled_caught


@pytest.mark.integration
async def test_ws_subscribe_replaces_previous_subscription() -> None:
    config = SimulatorConfig(quirks=False, rate_hz=500, markets=4, groups=0, amm_markets=0)
    async with running(config) as (sim, address), open_socket(address) as ws:
        first, second = sim.exchange.book_slugs()[:2]
        await subscribe(ws, [first])
        assert (await next_update(ws)).marketSlug == first
        await subscribe(ws, [second])
        for _ in range(15):
            assert (await next_update(ws)).marketSlug == second


@pytest.mark.integration
async def test_ws_last_update_matches_rest_after_pause() -> None:
    config = SimulatorConfig(quirks=False, rate_hz=300, markets=2, groups=0, amm_markets=0)
    async with running(config) as (sim, address), open_socket(address) as ws:
        slug = sim.exchange.book_slugs()[0]
        await subscribe(ws, [slug])
        latest = await next_update(ws)
        sim.pause()
        while True:  # drain what was sent before the pause
            with anyio.move_on_after(0.2) as quiet:
                latest = await next_update(ws)
            if quiet.cancelled_caught:
                break
        bids, asks = sim.exchange.book(slug)
        assert (levels(latest.orderbook.bids), levels(latest.orderbook.asks)) == (bids, asks)
        async with httpx.AsyncClient(base_url=address.api_url) as client:
            rest = await get_book(client, slug)
        assert (levels(rest.bids), levels(rest.asks)) == (bids, asks)


@pytest.mark.integration
async def test_ws_kick_sends_namespace_disconnect_then_closes() -> None:
    async with running(QUIET) as (sim, address), open_socket(address) as ws:
        assert sim.kick_all() == 1
        with anyio.fail_after(2):
            assert await recv_frame(ws) == "41/markets,"
            with pytest.raises(ConnectionClosed):
                await ws.recv()
        assert sim.stats.kicks == 1


@pytest.mark.integration
async def test_ws_periodic_kick() -> None:
    config = msgspec.structs.replace(QUIET, kick_every_s=0.1)
    async with running(config) as (_, address), open_socket(address) as ws:
        with anyio.fail_after(2):
            assert await recv_frame(ws) == "41/markets,"


@pytest.mark.integration
async def test_ws_stall_silences_every_frame_without_closing() -> None:
    config = SimulatorConfig(
        quirks=False, rate_hz=500, markets=3, groups=0, amm_markets=0, ping_interval_ms=50
    )
    async with running(config) as (sim, address), open_socket(address) as ws:
        await subscribe(ws, sim.exchange.book_slugs())
        await next_update(ws)
        started = anyio.current_time()
        sim.stall(0.5)
        arrivals: list[float] = []
        with anyio.move_on_after(1.0):
            while True:
                await recv_frame(ws)
                arrivals.append(anyio.current_time() - started)
        # Frames already in flight may land at once; then nothing until the stall ends.
        assert not [t for t in arrivals if 0.1 < t < 0.45]
        assert [t for t in arrivals if t >= 0.5], "frames must resume after the stall"
        assert sim.stats.ws.dropped_in_stall > 0 and sim.stats.ws.stalls == 1
        assert sim.connections == 1


@pytest.mark.integration
async def test_ws_malformed_frames_appear_when_configured() -> None:
    config = SimulatorConfig(
        quirks=False, rate_hz=500, markets=3, groups=0, amm_markets=0, malformed_rate=0.3
    )
    async with running(config) as (sim, address), open_socket(address) as ws:
        slugs = sim.exchange.book_slugs()
        await subscribe(ws, slugs)
        good = bad = 0
        with anyio.fail_after(5):
            for _ in range(150):
                parsed = split_event(await recv_frame(ws))
                try:
                    assert parsed is not None and parsed[0] == "orderbookUpdate"
                    update = msgspec.json.decode(parsed[1], type=WireUpdate)
                    assert update.marketSlug in slugs and sane_prices(update.orderbook)
                    good += 1
                except (AssertionError, msgspec.ValidationError):
                    bad += 1
        assert 20 <= bad <= 75, (good, bad)
        assert sim.stats.ws.malformed_sent >= bad


@pytest.mark.integration
async def test_ws_lifecycle_events_follow_the_active_list() -> None:
    config = msgspec.structs.replace(
        QUIET, markets=3, groups=0, amm_markets=0, lifecycle_every_s=0.1
    )
    async with running(config) as (sim, address), open_socket(address) as ws:
        created = msgspec.json.decode(await next_event(ws, "marketCreated"))
        resolved = msgspec.json.decode(await next_event(ws, "marketResolved"))
        sim.pause()
        assert created["type"] == "CLOB" and resolved["winningOutcome"] in ("YES", "NO")
        async with httpx.AsyncClient(base_url=address.api_url) as client:
            active = (await client.get("/markets/active")).json()["data"]
            gone = (await client.get(f"/markets/{resolved['slug']}")).json()
        slugs = {m["slug"] for m in active}
        assert created["slug"] in slugs and resolved["slug"] not in slugs
        assert gone["status"] == "RESOLVED"
        assert gone["winningOutcomeIndex"] == resolved["winningIndex"]


@pytest.mark.integration
async def test_ws_amm_price_data_for_subscribed_address() -> None:
    config = SimulatorConfig(quirks=False, rate_hz=200, markets=1, groups=0, amm_markets=1)
    async with running(config) as (sim, address), open_socket(address) as ws:
        amm = sim.exchange.amm_addresses()[0]
        await subscribe(ws, [], ("0x" + amm[2:].upper(),))  # addresses match case-insensitively
        data = msgspec.json.decode(await next_event(ws, "newPriceData"))
        assert data["marketAddress"] == amm
        prices = data["updatedPrices"][0]
        assert Decimal(str(prices["yesPrice"])) + Decimal(str(prices["noPrice"])) == 1


@pytest.mark.integration
async def test_ws_client_namespace_disconnect_closes_socket() -> None:
    async with running(QUIET) as (sim, address), open_socket(address) as ws:
        await ws.send("41/markets,")
        with anyio.fail_after(2), pytest.raises(ConnectionClosed):
            await ws.recv()


@pytest.mark.integration
async def test_ws_quirks_vary_timestamps_and_sides() -> None:
    config = SimulatorConfig(quirks=True, rate_hz=500, markets=2, groups=0, amm_markets=0)
    async with running(config) as (sim, address), open_socket(address) as ws:
        await subscribe(ws, sim.exchange.book_slugs())
        stamps, sides = set(), set()
        for _ in range(60):
            update = await next_update(ws)
            stamps.add(type(update.timestamp))
            sides.add(update.orderbook.bids[0].side)
            assert sane_prices(update.orderbook)
        assert stamps == {str, int} and {"BUY", "buy", None} <= sides


@pytest.mark.integration
async def test_simulator_cancel_closes_open_sockets() -> None:
    stop = anyio.Event()
    sim = Simulator(QUIET)

    async def host(*, task_status: anyio.abc.TaskStatus[SimulatorAddress]) -> None:
        async with anyio.create_task_group() as inner:
            task_status.started(await inner.start(sim.run))
            await stop.wait()
            inner.cancel_scope.cancel()

    async with anyio.create_task_group() as tg:
        address = await tg.start(host)
        async with open_socket(address) as ws, httpx.AsyncClient(base_url=address.api_url) as http:
            assert (await http.get("/markets/active")).status_code == 200
            stop.set()
            with anyio.fail_after(5), pytest.raises(ConnectionClosed):
                await ws.recv()
    assert sim.connections == 0


@pytest.mark.integration
async def test_simulator_create_and_resolve_market_announce_to_sockets() -> None:
    async with running(QUIET) as (sim, address), open_socket(address) as ws:
        market = sim.create_market()
        created = msgspec.json.decode(await next_event(ws, "marketCreated"))
        assert created["slug"] == market.slug and market.slug in sim.exchange.book_slugs()
        sim.resolve_market(market.slug)
        resolved = msgspec.json.decode(await next_event(ws, "marketResolved"))
        assert resolved["slug"] == market.slug and resolved["winningIndex"] in (0, 1)
        assert market.slug not in {m.slug for m in sim.exchange.active_markets()}
