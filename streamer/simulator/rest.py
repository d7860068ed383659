"""The simulator's REST side: wire payloads and a tiny HTTP/1.1 server (h11 over anyio).

Paths and shapes follow the API reference §2: ``GET /markets/active``,
``GET /markets/{slug}`` and ``GET /markets/{slug}/orderbook`` (public), and, when
``SimulatorConfig.auth`` is set, ``GET /portfolio/positions`` (HMAC or API key),
``GET /profiles/partner-accounts/{id}/allowances`` and
``POST /profiles/partner-accounts/{id}/allowances/retry`` (HMAC only), verified by
:mod:`streamer.simulator.auth` over the request target and body exactly as received.
Errors use the NestJS body shape (``statusCode``/``message``/``error``); 429 carries
``retryAfterSeconds`` in the body only, as the venue does (§2.7).

The payload builders (:func:`market_payload`, :func:`orderbook_payload`) and
:class:`Quirks` are shared with the WebSocket side.
"""

from __future__ import annotations

import logging
import random
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, Final, TypeAlias
from urllib.parse import parse_qs, unquote, urlsplit

import anyio
import anyio.abc
import h11
import msgspec

from streamer.simulator.account import Account
from streamer.simulator.auth import verify_request
from streamer.simulator.exchange import (
    BookView,
    Exchange,
    Level,
    Market,
    SimulatorConfig,
)

__all__ = [
    "JSON_ENCODER",
    "Quirks",
    "RestServer",
    "RestStats",
    "iso_ms",
    "market_payload",
    "orderbook_payload",
]

logger = logging.getLogger(__name__)

JSON_ENCODER: Final = msgspec.json.Encoder(decimal_format="number")
"""Decimals go out as exact JSON numbers: ``Decimal("0.515")`` -> ``0.515``."""
MAX_SPREAD: Final = "0.05"
MIN_SIZE: Final = "1"
USDC: Final = {
    "address": "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913",
    "decimals": 6,
    "symbol": "USDC",
}
SORT_KEYS: Final = frozenset({"lp_rewards", "ending_soon", "newest", "high_value", "liquidity"})
MAX_REQUEST_BYTES: Final = 1 << 20
RECEIVE_CHUNK: Final = 65536
_END_OF_REQUEST: Final = (h11.EndOfMessage, h11.ConnectionClosed)
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_REASONS: Final = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    409: "Conflict",
    413: "Payload Too Large",
    429: "Too Many Requests",
    503: "Service Unavailable",
}
PORTFOLIO_PATH: Final = "/portfolio/positions"
PARTNER_PREFIX: Final = ("profiles", "partner-accounts")


def iso_ms(epoch_ms: int) -> str:
    """Epoch ms as ``2026-01-15T09:30:00.123Z`` (exact: no float on the way)."""
    moment = _EPOCH + timedelta(milliseconds=epoch_ms)
    return f"{moment:%Y-%m-%dT%H:%M:%S}.{epoch_ms % 1000:03d}Z"


class Quirks:
    """Chooses among the encodings the venue's documents disagree on (reference §5).

    With ``enabled=False`` every choice is the canonical one: numbers as JSON
    numbers, ``side`` as ``BUY``/``SELL``, ISO timestamps, no extra fields.

    Args:
        enabled: whether to vary encodings.
        rng: the seeded random source for the choices.
    """

    def __init__(self, enabled: bool, rng: random.Random) -> None:
        self.enabled = enabled
        self._rng = rng

    def chance(self, p: float) -> bool:
        """True with probability ``p`` when quirks are on, never otherwise."""
        return self.enabled and self._rng.random() < p

    def number(self, value: Decimal, p_string: float = 0.15) -> Decimal | str:
        """The number, or sometimes its exact string form (``"0.515"``)."""
        return str(value) if self.chance(p_string) else value

    def side_style(self) -> str | None:
        """``"upper"`` (``BUY``), ``"lower"`` (``buy``) or ``None`` (absent)."""
        if not self.enabled:
            return "upper"
        return self._rng.choice(("upper", "upper", "lower", None))

    def timestamp(self, epoch_ms: int) -> str | int:
        """ISO string (canonical) or, sometimes, epoch ms as a number."""
        return epoch_ms if self.chance(0.4) else iso_ms(epoch_ms)

    def decorate(self, payload: dict[str, Any]) -> dict[str, Any]:
        """Sometimes add fields nobody documented (clients must ignore them)."""
        if self.chance(0.2):
            payload["simulatorNote"] = {"source": "limitless-simulator", "v": 1}
        return payload


def levels_payload(levels: tuple[Level, ...], side: str, quirks: Quirks) -> list[dict[str, Any]]:
    """Levels as ``[{"price","size","side"}]`` with one side style and number style."""
    style = quirks.side_style()
    as_strings = quirks.chance(0.15)
    out: list[dict[str, Any]] = []
    for price, size in levels:
        level: dict[str, Any] = (
            {"price": str(price), "size": str(size)}
            if as_strings
            else {"price": price, "size": size}
        )
        if style is not None:
            level["side"] = side if style == "upper" else side.lower()
        out.append(level)
    return out


def orderbook_payload(view: BookView, quirks: Quirks, *, rest: bool) -> dict[str, Any]:
    """The orderbook object of REST §2.3 (``rest=True``) or of WS ``orderbookUpdate``."""
    payload: dict[str, Any] = {
        "bids": levels_payload(view.bids, "BUY", quirks),
        "asks": levels_payload(view.asks, "SELL", quirks),
        "tokenId": view.token_id,
        "adjustedMidpoint": _maybe(view.adjusted_midpoint, quirks),
        "maxSpread": MAX_SPREAD if not quirks.chance(0.3) else Decimal(MAX_SPREAD),
        "minSize": MIN_SIZE if not quirks.chance(0.3) else Decimal(MIN_SIZE),
    }
    if rest:
        payload["lastTradePrice"] = _maybe(view.last_trade_price, quirks)
    return quirks.decorate(payload)


def _maybe(value: Decimal | None, quirks: Quirks) -> Decimal | str | None:
    return None if value is None else quirks.number(value)


def market_payload(market: Market, exchange: Exchange) -> dict[str, Any]:
    """A market object shaped like REST §2.2 (group children nested in ``markets``)."""
    yes, no = _prices(market, exchange)
    payload: dict[str, Any] = {
        "id": market.id,
        "slug": market.slug,
        "title": market.title,
        "proxyTitle": None,
        "description": f"Simulated market {market.title}",
        "collateralToken": USDC,
        "expirationDate": f"{_EPOCH + timedelta(milliseconds=market.expiration_ms):%b %d, %Y}",
        "expirationTimestamp": market.expiration_ms,
        "expired": not market.active,
        "createdAt": iso_ms(market.created_ms),
        "updatedAt": iso_ms(market.resolved_ms or market.created_ms),
        "categories": list(market.categories),
        "tags": [],
        "status": market.status,
        "creator": {"name": "Limitless Simulator", "imageURI": None, "link": None},
        "tradeType": market.trade_type,
        "marketType": market.market_type,
        "priorityIndex": 0,
        "metadata": {
            "fee": True,
            "isBannered": False,
            "isPolyArbitrage": False,
            "shouldMarketMake": False,
        },
        "volume": "0",
        "volumeFormatted": "0",
        "conditionId": market.condition_id,
        "negRiskRequestId": None,
        "prices": [yes, no],
        "isRewardable": False,
        "settings": {
            "minSize": MIN_SIZE,
            "maxSpread": Decimal(MAX_SPREAD),
            "dailyReward": "0",
            "rewardsEpoch": "0",
            "c": "0",
            "rebateRate": 0,
        },
        "venue": {"exchange": market.exchange, "adapter": market.adapter},
        "logo": None,
        "imageUrl": None,
        "automationType": "manual",
        "trends": {},
        "orderInGroup": market.order_in_group,
        "winningOutcomeIndex": market.winning_index,
    }
    _add_kind_fields(payload, market, exchange)
    return payload


def _add_kind_fields(payload: dict[str, Any], market: Market, exchange: Exchange) -> None:
    if market.yes_token is not None and market.no_token is not None:
        payload["tokens"] = {"yes": market.yes_token, "no": market.no_token}
        payload["positionIds"] = [market.yes_token, market.no_token]
    if market.address is not None:
        payload["address"] = market.address
        payload["liquidity"] = "1000000000"
        payload["openInterest"] = "0"
    if market.market_type == "group":
        payload["outcomeTokens"] = [child.title for child in market.children]
        payload["negRiskMarketId"] = market.condition_id
        payload["dailyReward"] = "0"
        payload["markets"] = [market_payload(child, exchange) for child in market.children]


def _prices(market: Market, exchange: Exchange) -> tuple[Decimal, Decimal]:
    if market.address is not None and market.active:
        return exchange.amm_prices(market.slug)
    if market.has_book and market.active:
        mid = exchange.book_view(market.slug).adjusted_midpoint
        if mid is not None:
            return mid, 1 - mid
    half = Decimal("0.5")
    return half, half


@dataclass
class RestStats:
    """REST counters (tests assert on them).

    Attributes:
        connections: TCP connections accepted.
        requests: requests per path (query string excluded).
        statuses: responses per status code.
        auth_ok: authenticated requests, by identity (``hmac``, ``api_key``).
        auth_failures: private requests refused, by reason (``bad_signature`` …).
        rate_limited: requests answered 429 for breaking the documented limits (too many
            in flight, or too soon after the previous one), by which limit.
        max_in_flight: most requests of one token served at once.
    """

    connections: int = 0
    requests: Counter[str] = field(default_factory=Counter)
    statuses: Counter[int] = field(default_factory=Counter)
    auth_ok: Counter[str] = field(default_factory=Counter)
    auth_failures: Counter[str] = field(default_factory=Counter)
    rate_limited: Counter[str] = field(default_factory=Counter)
    max_in_flight: int = 0

    @property
    def total_requests(self) -> int:
        """All requests, every path."""
        return sum(self.requests.values())


Reply: TypeAlias = tuple[int, bytes]
"""``(status, JSON body)``."""


def error_body(status: int, message: Any, **extra: Any) -> bytes:
    """A NestJS-style error body."""
    return JSON_ENCODER.encode(
        {"statusCode": status, "message": message, "error": _REASONS.get(status, "Error"), **extra}
    )


class RestHandler:
    """Routing, auth and fault injection, without sockets: request in, ``(status, body)`` out.

    Args:
        config: simulator configuration (fault rates, page cap, quirks, auth).
        exchange: the model served.
        stats: counters to update.
        account: the authenticated user's portfolio and allowances (built if omitted).
        clock: epoch seconds, for the HMAC timestamp window.
    """

    def __init__(
        self,
        config: SimulatorConfig,
        exchange: Exchange,
        stats: RestStats,
        *,
        account: Account | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._config = config
        self._exchange = exchange
        self._stats = stats
        self._account = account if account is not None else Account(config, exchange)
        self._clock = clock
        self._fault_rng = random.Random(f"rest-faults-{config.seed}")
        self._quirks = Quirks(config.quirks, random.Random(f"rest-quirks-{config.seed}"))

    def handle(
        self,
        method: str,
        target: str,
        headers: Mapping[str, str] | None = None,
        body: bytes = b"",
    ) -> Reply:
        """Answer one request; counts it by path and status.

        Args:
            method: HTTP method.
            target: the request target exactly as received (path and query).
            headers: request headers with lower-case names.
            body: the exact body bytes received.
        """
        parts = urlsplit(target)
        path = parts.path
        self._stats.requests[path] += 1
        request = _Request(method, target, headers or {}, body)
        status, reply = self._fault() or self._route(request, path, parts.query)
        self._stats.statuses[status] += 1
        return status, reply

    def _fault(self) -> Reply | None:
        roll = self._fault_rng.random()
        if roll < self._config.rest_429_rate:
            return 429, JSON_ENCODER.encode(
                {"statusCode": 429, "message": "Too Many Requests", "retryAfterSeconds": 1}
            )
        if roll < self._config.rest_429_rate + self._config.rest_503_rate:
            return 503, error_body(503, "Service Unavailable")
        return None

    def _route(self, request: _Request, path: str, query: str) -> Reply:
        method = request.method
        segments = [unquote(s) for s in path.strip("/").split("/")]
        if method == "GET" and len(segments) >= 2 and segments[0] == "markets":
            if segments[1:] == ["active"]:
                return self._active(parse_qs(query))
            if len(segments) == 2:
                return self._market(segments[1])
            if len(segments) == 3 and segments[2] == "orderbook":
                return self._orderbook(segments[1])
        if method == "GET" and path == PORTFOLIO_PATH:
            return self._authenticated(request, hmac_only=False) or self._portfolio()
        if tuple(segments[:2]) == PARTNER_PREFIX and len(segments) >= 4:
            route = self._partner_route(method, segments)
            if route is not None:
                return self._authenticated(request, hmac_only=True) or route()
        return 404, error_body(404, f"Cannot {method} {path}")

    # -- private endpoints ---------------------------------------------------------------

    def _authenticated(self, request: _Request, *, hmac_only: bool) -> Reply | None:
        """``None`` when the request may proceed, else the 401/403 reply."""
        auth = self._config.auth
        if auth is None:
            self._stats.auth_failures["not_configured"] += 1
            return 401, error_body(401, "Unauthorized")
        verdict = verify_request(auth, request.headers, request.method, request.target,
                                 request.body, self._clock())
        if verdict.identity is None:
            self._stats.auth_failures[verdict.reason or "unknown"] += 1
            return 401, error_body(401, "Unauthorized")
        if hmac_only and verdict.identity != "hmac":
            self._stats.auth_failures["hmac_required"] += 1
            return 403, error_body(403, "This endpoint requires HMAC api-token authentication")
        self._stats.auth_ok[verdict.identity] += 1
        return None

    def _portfolio(self) -> Reply:
        return 200, JSON_ENCODER.encode(self._account.portfolio())

    def _partner_route(self, method: str, segments: list[str]) -> Callable[[], Reply] | None:
        """The handler of an allowance route, or ``None`` for any other partner path."""
        rest = segments[3:]
        if (method, rest) == ("GET", ["allowances"]):
            return lambda: self._allowances(segments[2], retry=False)
        if (method, rest) == ("POST", ["allowances", "retry"]):
            return lambda: self._allowances(segments[2], retry=True)
        return None

    def _allowances(self, raw_id: str, *, retry: bool) -> Reply:
        allowances = self._account.allowances
        if not raw_id.isdigit() or int(raw_id) < 1:
            return 400, error_body(400, ["profileId must be a positive integer"])
        profile_id = int(raw_id)
        if not allowances.has(profile_id):
            return 404, error_body(404, f"Partner account {profile_id} not found")
        status, payload = allowances.retry(profile_id) if retry else allowances.check(profile_id)
        return status, JSON_ENCODER.encode(payload)

    def _active(self, query: dict[str, list[str]]) -> Reply:
        try:
            limit = _positive(query, "limit", self._config.page_limit_max)
            page = _positive(query, "page", 1)
        except ValueError as exc:
            return 400, error_body(400, [str(exc)])
        sort_by = query.get("sortBy", ["newest"])[-1]
        if sort_by not in SORT_KEYS:
            return 400, error_body(400, [f"sortBy must be one of {sorted(SORT_KEYS)}"])
        limit = min(limit, self._config.page_limit_max)
        markets = _sorted(self._exchange.active_markets(), sort_by)
        chunk = markets[(page - 1) * limit : page * limit]
        data = [market_payload(m, self._exchange) for m in chunk]
        return 200, JSON_ENCODER.encode({"data": data, "totalMarketsCount": len(markets)})

    def _market(self, slug: str) -> Reply:
        market = self._exchange.market(slug)
        if market is None:
            return 404, error_body(404, f"Market {slug} not found")
        return 200, JSON_ENCODER.encode(market_payload(market, self._exchange))

    def _orderbook(self, slug: str) -> Reply:
        market = self._exchange.market(slug)
        if market is None:
            return 404, error_body(404, f"Market {slug} not found")
        if not market.has_book:
            return 400, error_body(400, f"Market {slug} has no orderbook")
        view = self._exchange.book_view(slug)
        return 200, JSON_ENCODER.encode(orderbook_payload(view, self._quirks, rest=True))


class _Request(msgspec.Struct, frozen=True):
    method: str
    target: str
    headers: Mapping[str, str]
    body: bytes


def _positive(query: dict[str, list[str]], name: str, default: int) -> int:
    raw = query.get(name)
    if raw is None:
        return default
    try:
        value = int(raw[-1])
    except ValueError:
        value = 0
    if value < 1:
        raise ValueError(f"{name} must be a positive integer")
    return value


def _sorted(markets: list[Market], sort_by: str) -> list[Market]:
    if sort_by == "newest":
        return sorted(markets, key=lambda m: (-m.created_ms, -m.id))
    if sort_by == "ending_soon":
        return sorted(markets, key=lambda m: (m.expiration_ms, m.id))
    return sorted(markets, key=lambda m: m.id)


class RestServer:
    """HTTP/1.1 (keep-alive, Content-Length bodies) over an anyio TCP listener.

    Args:
        handler: the routing core.
        stats: counters (connections).
    """

    def __init__(self, handler: RestHandler, stats: RestStats,
                 config: SimulatorConfig | None = None) -> None:
        self._handler = handler
        self._stats = stats
        self._config = config if config is not None else SimulatorConfig()
        self._in_flight: Counter[str] = Counter()
        self._last_start: dict[str, float] = {}

    async def serve(
        self,
        host: str,
        port: int,
        *,
        task_status: anyio.abc.TaskStatus[int] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        """Listen on ``host:port`` (0 = any free port) until cancelled; reports the port."""
        listener = await anyio.create_tcp_listener(local_host=host, local_port=port)
        async with listener:
            bound = listener.extra(anyio.abc.SocketAttribute.local_port)
            logger.debug("REST listening on %s:%s", host, bound)
            task_status.started(bound)
            await listener.serve(self._connection)

    async def _connection(self, stream: anyio.abc.SocketStream) -> None:
        self._stats.connections += 1
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_REQUEST_BYTES)
        async with stream:
            try:
                while await self._one_request(conn, stream):
                    conn.start_next_cycle()
            except h11.RemoteProtocolError:
                await _reject(conn, stream)
            except (anyio.BrokenResourceError, anyio.ClosedResourceError, h11.ProtocolError):
                logger.debug("REST connection dropped", exc_info=True)

    async def _one_request(self, conn: h11.Connection, stream: anyio.abc.SocketStream) -> bool:
        """Serve one request; returns whether the connection can carry another."""
        request = await _next_event(conn, stream)
        if not isinstance(request, h11.Request):
            return False
        received = await _read_body(conn, stream)
        if received is None:
            status, body = 413, error_body(413, "Payload Too Large")
        else:
            request_headers = {k.decode("latin-1"): v.decode("latin-1")
                               for k, v in request.headers}
            status, body = await self._limited(request, request_headers, received)
        headers = [
            ("content-type", "application/json; charset=utf-8"),
            ("content-length", str(len(body))),
        ]
        reason = _REASONS.get(status, "")
        head = conn.send(h11.Response(status_code=status, headers=headers, reason=reason))
        await stream.send(head + conn.send(h11.Data(data=body)) + conn.send(h11.EndOfMessage()))
        return conn.our_state is h11.DONE and conn.their_state is h11.DONE


    async def _limited(self, request: h11.Request, headers: dict[str, str],
                       received: bytes) -> Reply:
        """The documented per-token limits (2 in flight, 300 ms apart), then the handler."""
        config = self._config
        token = headers.get("lmts-api-key") or headers.get("x-api-key") or "anonymous"
        now = anyio.current_time()
        last = self._last_start.get(token)
        self._last_start[token] = now
        limit = None
        if config.rest_max_in_flight is not None and (
                self._in_flight[token] >= config.rest_max_in_flight):
            limit = "in_flight"
        elif (config.rest_min_interval_ms is not None and last is not None
              and (now - last) * 1000 < config.rest_min_interval_ms):
            limit = "interval"
        if limit is not None:
            self._stats.rate_limited[limit] += 1
            self._stats.statuses[429] += 1
            return 429, JSON_ENCODER.encode({"statusCode": 429, "message": "Too Many Requests",
                                             "retryAfterSeconds": 1})
        self._in_flight[token] += 1
        self._stats.max_in_flight = max(self._stats.max_in_flight, self._in_flight[token])
        try:
            if config.rest_latency_ms:
                await anyio.sleep(config.rest_latency_ms / 1000)
            return self._handler.handle(
                request.method.decode(), request.target.decode(), headers, received
            )
        finally:
            self._in_flight[token] -= 1


async def _read_body(conn: h11.Connection, stream: anyio.abc.SocketStream) -> bytes | None:
    """The whole request body (the exact bytes signed), or ``None`` when too large."""
    chunks: list[bytes] = []
    size = 0
    while not isinstance(event := await _next_event(conn, stream), _END_OF_REQUEST):
        if isinstance(event, h11.Data):
            size += len(event.data)
            if size <= MAX_REQUEST_BYTES:
                chunks.append(bytes(event.data))
    return b"".join(chunks) if size <= MAX_REQUEST_BYTES else None


async def _reject(conn: h11.Connection, stream: anyio.abc.SocketStream) -> None:
    """Best effort 400 for a request h11 could not parse, then the caller closes."""
    body = error_body(400, "Bad Request")
    headers = [("content-type", "application/json"), ("content-length", str(len(body)))]
    try:
        head = conn.send(h11.Response(status_code=400, headers=headers))
        await stream.send(head + conn.send(h11.Data(data=body)))
    except (h11.ProtocolError, anyio.BrokenResourceError, anyio.ClosedResourceError):
        logger.debug("could not send 400", exc_info=True)


async def _next_event(conn: h11.Connection, stream: anyio.abc.SocketStream) -> object:
    while True:
        event = conn.next_event()
        if event is not h11.NEED_DATA:
            return event
        try:
            data = await stream.receive(RECEIVE_CHUNK)
        except anyio.EndOfStream:
            data = b""
        conn.receive_data(data)
