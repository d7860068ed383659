"""REST client for the Limitless API over one shared ``httpx.AsyncClient``.

The ``httpx.AsyncClient`` is created once per process by the caller and passed in (its
transport is injectable, tests use ``httpx.MockTransport``). This module is the only
place that sees httpx exceptions: every failure leaves it as
:class:`streamer.errors.RestError` (``raise … from exc``).

Retries (limitless-api.md §2.7/§2.8): statuses in :attr:`RetryPolicy.retry_statuses`
and transient transport errors (connect, timeout, read/write, a dropped connection)
are retried; other statuses fail at once. A 429 body's ``retryAfterSeconds`` and a
``Retry-After`` header (seconds) override the jittered backoff. Each attempt is signed
afresh (HMAC timestamps must be within 30 s of server time, §1.3). A caller with its
own retry rules (the allowance flow) passes ``retry_statuses=()`` and reads
:class:`RestStatusError` (``status``, ``retry_after_s``, ``body``).

Nothing here logs or raises header values or credentials.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Awaitable, Callable, Collection, Iterator
from contextlib import AbstractAsyncContextManager
from importlib import metadata
from typing import Any, Final, Protocol, TypeVar
from urllib.parse import quote, urlencode

import anyio
import httpx
import msgspec

from streamer.errors import RestError
from streamer.feed.retry import Backoff
from streamer.partner.auth import ApiKey, Credentials, auth_headers
from streamer.protocol.messages import (
    ACTIVE_PAGE_DECODER,
    MARKET_DECODER,
    ORDERBOOK_DECODER,
    ActiveMarketsPage,
    Market,
    OrderbookPayload,
    Venue,
)

logger = logging.getLogger(__name__)

T = TypeVar("T")

ENDPOINT_ACTIVE: Final = "/markets/active"
ENDPOINT_MARKET: Final = "/markets/{slug}"
ENDPOINT_ORDERBOOK: Final = "/markets/{slug}/orderbook"

DEFAULT_PAGE_LIMIT: Final = 25
DEFAULT_MAX_PAGES: Final = 1000
JSON_CONTENT_TYPE: Final = "application/json"
DEFAULT_429_PAUSE_S: Final = 1.0
"""How long every caller holds after a 429 that names no delay."""

_MAX_DETAIL_CHARS: Final = 300
_MIN_REDACT_CHARS: Final = 6
_REDACTED: Final = "<redacted>"


def _package_version() -> str:
    try:
        return metadata.version("limitless-streamer")
    except metadata.PackageNotFoundError:
        return "0+unknown"


USER_AGENT: Final = f"limitless-streamer/{_package_version()}"

_TRANSIENT_ERRORS: Final = (
    httpx.TimeoutException,
    httpx.NetworkError,
    httpx.RemoteProtocolError,
    httpx.ProxyError,
)


class RestStatusError(RestError):
    """A non-2xx reply that ended a request (a :class:`RestError` with the reply's details).

    Raised for every final non-2xx status, so ``except RestError`` keeps working; callers
    that run their own retry logic (the allowance flow, §2.6) read the extra fields.

    Attributes:
        retry_after_s: the server's requested delay (429 body ``retryAfterSeconds`` or a
            ``Retry-After`` header in seconds, the larger), uncapped; ``None`` if absent.
        body: the raw reply body (the server's words, never our headers).
    """

    def __init__(
        self,
        endpoint: str,
        status: int,
        detail: str,
        *,
        retry_after_s: float | None = None,
        body: bytes = b"",
    ) -> None:
        super().__init__(endpoint, status, detail)
        self.retry_after_s = retry_after_s
        self.body = body


class RetryPolicy(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """How a REST call is retried (a config value object).

    Attributes:
        max_attempts: total attempts, the first included (``>= 1``).
        backoff: delays between attempts when the server gives no hint.
        retry_statuses: HTTP statuses that are retried; any other non-2xx fails at once.
        max_retry_after_s: cap on a server-supplied delay (``retryAfterSeconds``/``Retry-After``).
    """

    max_attempts: int = 4
    backoff: Backoff = Backoff(initial_s=1, cap_s=30)
    retry_statuses: tuple[int, ...] = (429, 500, 502, 503, 504)
    max_retry_after_s: float = 120.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be >= 1")
        if not self.max_retry_after_s >= 0:
            raise ValueError("max_retry_after_s must be >= 0")


DEFAULT_RETRY: Final = RetryPolicy()


class RestObserver(Protocol):
    """Hook for a metrics layer: requests, latencies, retries, 429s.

    ``endpoint`` is the template (``/markets/{slug}``), never the concrete URL.
    ``status`` is ``None`` for a transport failure.
    """

    def on_response(
        self, endpoint: str, status: int | None, elapsed_s: float, attempt: int
    ) -> None:
        """Called after every attempt (``attempt`` counts from 1)."""

    def on_retry(self, endpoint: str, status: int | None, delay_s: float) -> None:
        """Called before sleeping ``delay_s`` ahead of the next attempt."""


class _ErrorBody(msgspec.Struct):
    """The parts of an error body we read (NestJS style, §2.7); all optional."""

    retryAfterSeconds: float | str | None = None
    message: Any = None
    error: Any = None


_ERROR_BODY_DECODER: Final = msgspec.json.Decoder(_ErrorBody)


class _Failure(msgspec.Struct, frozen=True):
    """One failed attempt: what to report and whether to try again."""

    status: int | None
    detail: str
    retryable: bool
    hint_s: float | None = None
    cause: BaseException | None = None
    body: bytes = b""


OnSend = Callable[[str | None], None]
"""Called as a request goes out; the argument is a replay's recorded tag, else ``None``."""


class Limiter(Protocol):
    """A shared request pace (:class:`streamer.feed.budget.RatePacer`)."""

    def slot(self) -> AbstractAsyncContextManager[None]: ...

    def pause(self, seconds: float) -> None: ...


class RestClient:
    """Typed, retrying, signing client for the public (and later private) REST API.

    Args:
        client: the process-wide ``httpx.AsyncClient`` (timeouts and pool set by the owner).
        base_url: e.g. ``https://api.limitless.exchange``; a path prefix is kept and signed.
        credentials: sent on every request when set (HMAC preferred by the caller).
        retry: retry policy.
        sleep: awaited between attempts (inject a recorder in tests).
        clock: epoch seconds, used for the HMAC timestamp.
        observer: optional metrics hook.

    Raises:
        ValueError: ``base_url`` is not an absolute http(s) URL.
    """

    def __init__(
        self,
        client: httpx.AsyncClient,
        *,
        base_url: str,
        credentials: Credentials | None = None,
        retry: RetryPolicy = DEFAULT_RETRY,
        sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
        clock: Callable[[], float] = time.time,
        observer: RestObserver | None = None,
        limiter: Limiter | None = None,
        transport_calls_on_send: bool = False,
    ) -> None:
        self._client = client
        self._limiter = limiter
        self._transport_calls_on_send = transport_calls_on_send
        self._base = _check_base_url(base_url)
        self._credentials = credentials
        self._retry = retry
        self._sleep = sleep
        self._clock = clock
        self._observer = observer
        self._venues: dict[str, Venue] = {}
        self._headers = {"Accept": JSON_CONTENT_TYPE, "User-Agent": USER_AGENT}
        self._redact_values = _secret_values(credentials)

    # --- typed endpoints ---------------------------------------------------------------

    async def active_markets_page(
        self, page: int, limit: int = DEFAULT_PAGE_LIMIT
    ) -> ActiveMarketsPage:
        """Fetch one page of active markets (``GET /markets/active?limit=…&page=…``).

        Args:
            page: 1-based page number.
            limit: page size (the venue caps it at 25).

        Raises:
            RestError: after retries, on a non-retryable status, or on an invalid body.
        """
        if page < 1 or limit < 1:
            raise ValueError("page and limit must be >= 1")
        query = urlencode({"limit": limit, "page": page})
        result = await self.request(
            "GET",
            f"{ENDPOINT_ACTIVE}?{query}",
            endpoint=ENDPOINT_ACTIVE,
            decoder=ACTIVE_PAGE_DECODER,
        )
        for market in result.data:
            self._remember(market)
        return result

    async def active_markets(
        self, *, limit: int = DEFAULT_PAGE_LIMIT, max_pages: int = DEFAULT_MAX_PAGES
    ) -> list[Market]:
        """Fetch every active market, page by page.

        Stops when ``page * limit >= totalMarketsCount``, on a short or empty page, or
        after ``max_pages`` (logged as a warning). A market seen twice (pages shift while
        being read) is kept once, first occurrence wins.

        Raises:
            RestError: any page failed for good.
        """
        markets: dict[str, Market] = {}
        for page in range(1, max_pages + 1):
            result = await self.active_markets_page(page, limit)
            for market in result.data:
                markets.setdefault(market.slug, market)
            if _last_page(result, page, limit):
                break
        else:
            logger.warning("active markets: stopped after max_pages=%d", max_pages)
        return list(markets.values())

    async def market(self, slug: str) -> Market:
        """Fetch one market (``GET /markets/{slug}``) and cache its venue.

        Raises:
            RestError: after retries, on a non-retryable status, or on an invalid body.
        """
        result = await self.request(
            "GET", f"/markets/{_quote(slug)}", endpoint=ENDPOINT_MARKET, decoder=MARKET_DECODER
        )
        self._remember(result)
        return result

    async def orderbook(self, slug: str, *, attempts: int | None = None,
                        on_send: OnSend | None = None, tag: str | None = None,
                        ) -> OrderbookPayload:
        """Fetch the YES-token book of one market (``GET /markets/{slug}/orderbook``).

        Args:
            slug: the market.
            attempts: for this call, the attempts instead of the policy's (the feed's
                seed queue passes 1: it retries a failed seed itself, per market, without
                holding a seeder while it waits).
            on_send: called when the request goes out (see :meth:`request`).
            tag: why the caller asks (a seed reason), kept with the request for a recording.

        Raises:
            RestError: after retries, on a non-retryable status, or on an invalid body.
        """
        return await self.request(
            "GET",
            f"/markets/{_quote(slug)}/orderbook",
            endpoint=ENDPOINT_ORDERBOOK,
            decoder=ORDERBOOK_DECODER,
            max_attempts=attempts,
            on_send=on_send,
            tag=tag,
        )

    def venue(self, slug: str) -> Venue | None:
        """Return the cached venue of a market seen in any response, or ``None``."""
        return self._venues.get(slug)

    def forget(self, slug: str) -> None:
        """Drop the cached venue of a market that is no longer followed."""
        self._venues.pop(slug, None)

    def _remember(self, market: Market) -> None:
        if market.venue is not None:
            self._venues[market.slug] = market.venue
        for child in market.markets or ():
            self._remember(child)

    # --- generic request ---------------------------------------------------------------

    async def request(
        self,
        method: str,
        path: str,
        *,
        endpoint: str,
        body: bytes | None = None,
        decoder: msgspec.json.Decoder[T],
        retry_statuses: Collection[int] | None = None,
        max_attempts: int | None = None,
        on_send: OnSend | None = None,
        tag: str | None = None,
    ) -> T:
        """Send one request with retries and decode a 2xx body.

        Args:
            method: HTTP method.
            path: path plus query, already encoded, exactly as it should be sent and signed.
            endpoint: the endpoint template, for errors, logs and metrics.
            body: JSON body bytes, serialised once by the caller; signed and sent as is
                with ``Content-Type: application/json``.
            decoder: decoder for the 2xx body.
            retry_statuses: for this call only, the statuses retried instead of the
                policy's (``()``: every non-2xx comes straight back as
                :class:`RestStatusError`; transport errors are still retried).
            max_attempts: for this call only, the attempts instead of the policy's.
            on_send: called at the moment each attempt goes out: after the wait for the
                shared pace, right before the request is written (or, when the client was
                built with ``transport_calls_on_send``, by the transport, which finds it in
                the request's ``extensions``: a replay calls it where the recording says
                the request went out). Until then the caller may still cancel the call.
                It gets ``None``, or from a replay the ``tag`` the live run's request had.
            tag: why the caller asks, in the request's ``extensions`` (a recording keeps
                it with the request line; never credentials).

        Returns:
            The decoded body.

        Raises:
            RestStatusError: a non-2xx status after the last attempt, or a non-retryable one.
            RestError: a transport failure after the last attempt or a non-transient one,
                or a 2xx body that does not decode (never retried).
        """
        method = method.upper()
        url = self._url(path, endpoint)
        target = url.raw_path.decode("ascii")  # the request-line target httpx sends
        delays = self._retry.backoff.delays()
        attempts = self._retry.max_attempts if max_attempts is None else max(1, max_attempts)
        statuses = self._retry.retry_statuses if retry_statuses is None else retry_statuses
        for attempt in range(1, attempts + 1):
            outcome = await self._send_once(method, url, target, endpoint, body, attempt, statuses,
                                            on_send, tag)
            if isinstance(outcome, httpx.Response):
                return self._decode(outcome, endpoint, decoder)
            if not outcome.retryable or attempt == attempts:
                raise _final_error(endpoint, outcome) from outcome.cause
            await self._wait(method, endpoint, outcome, attempt, delays)
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _url(self, path: str, endpoint: str) -> httpx.URL:
        if not path.startswith("/"):
            raise ValueError("path must start with '/'")
        try:
            return httpx.URL(self._base + path)
        except httpx.InvalidURL as exc:
            raise RestError(endpoint, None, "invalid URL") from exc

    async def _send_once(
        self,
        method: str,
        url: httpx.URL,
        target: str,
        endpoint: str,
        body: bytes | None,
        attempt: int,
        retry_statuses: Collection[int],
        on_send: OnSend | None = None,
        tag: str | None = None,
    ) -> httpx.Response | _Failure:
        started = time.perf_counter()
        extensions: dict[str, object] = {}
        if on_send is not None:
            extensions["on_send"] = on_send
        if tag is not None:
            extensions["tag"] = tag
        try:
            if self._limiter is None:
                if on_send is not None and not self._transport_calls_on_send:
                    on_send(None)
                response = await self._client.request(
                    method, url, content=body, headers=self._request_headers(method, target, body),
                    extensions=extensions,
                )
            else:
                async with self._limiter.slot():  # signed after the wait: a fresh timestamp
                    started = time.perf_counter()
                    headers = self._request_headers(method, target, body)
                    if on_send is not None and not self._transport_calls_on_send:
                        on_send(None)
                    response = await self._client.request(method, url, content=body,
                                                          headers=headers, extensions=extensions)
        except httpx.HTTPError as exc:
            self._on_response(endpoint, None, started, attempt)
            detail = self._redact(f"{type(exc).__name__}: {exc}")
            return _Failure(None, detail, isinstance(exc, _TRANSIENT_ERRORS), cause=exc)
        status = response.status_code
        self._on_response(endpoint, status, started, attempt)
        if 200 <= status < 300:
            return response
        retryable = status in retry_statuses
        body_info = _parse_error_body(response)
        hint = _retry_hint(response, body_info)
        if status == 429 and self._limiter is not None:
            # Every caller waits, not only this one, and also when this call is not retried.
            self._limiter.pause(min(hint if hint is not None else DEFAULT_429_PAUSE_S,
                                    self._retry.max_retry_after_s))
        detail = self._redact(_error_detail(response, body_info))
        return _Failure(status, detail, retryable, hint, body=response.content)

    def _request_headers(self, method: str, target: str, body: bytes | None) -> dict[str, str]:
        # Signed afresh on every attempt: a new timestamp and signature.
        auth = auth_headers(self._credentials, method, target, body or b"", self._clock())
        headers = {**self._headers, **auth}
        if body is not None:
            headers["Content-Type"] = JSON_CONTENT_TYPE
        return headers

    def _on_response(self, endpoint: str, status: int | None, started: float, attempt: int) -> None:
        if self._observer is not None:
            elapsed = time.perf_counter() - started
            self._observer.on_response(endpoint, status, elapsed, attempt)

    async def _wait(
        self, method: str, endpoint: str, failure: _Failure, attempt: int, delays: Iterator[float]
    ) -> None:
        if failure.hint_s is not None:
            delay = min(failure.hint_s, self._retry.max_retry_after_s)
        else:
            delay = next(delays)
        if self._observer is not None:
            self._observer.on_retry(endpoint, failure.status, delay)
        logger.warning(
            "REST %s %s failed (%s); attempt %d/%d, retrying in %.2f s",
            method,
            endpoint,
            failure.status if failure.status is not None else "transport",
            attempt,
            self._retry.max_attempts,
            delay,
        )
        await self._sleep(delay)

    def _decode(
        self, response: httpx.Response, endpoint: str, decoder: msgspec.json.Decoder[T]
    ) -> T:
        try:
            return decoder.decode(response.content)
        except msgspec.DecodeError as exc:
            detail = self._redact(f"invalid body: {exc}")
            raise RestError(endpoint, response.status_code, detail) from exc

    def _redact(self, text: str) -> str:
        for value in self._redact_values:
            text = text.replace(value, _REDACTED)
        return text


def _final_error(endpoint: str, failure: _Failure) -> RestError:
    if failure.status is None:
        return RestError(endpoint, None, failure.detail)
    return RestStatusError(
        endpoint, failure.status, failure.detail, retry_after_s=failure.hint_s, body=failure.body
    )


def _check_base_url(base_url: str) -> str:
    try:
        url = httpx.URL(base_url)
    except httpx.InvalidURL:
        raise ValueError("base_url is not a valid URL") from None
    if url.scheme not in ("http", "https") or not url.host or url.query or url.fragment:
        raise ValueError("base_url must be an absolute http(s) URL without query or fragment")
    return base_url.rstrip("/")


def _secret_values(credentials: Credentials | None) -> tuple[str, ...]:
    if credentials is None:
        return ()
    if isinstance(credentials, ApiKey):
        values: tuple[str, ...] = (credentials.key,)
    else:
        values = (credentials.secret, credentials.token_id)
    # Very short values would redact ordinary text; real keys are far longer.
    return tuple(v for v in values if len(v) >= _MIN_REDACT_CHARS)


def _quote(segment: str) -> str:
    return quote(segment, safe="")


def _last_page(page: ActiveMarketsPage, number: int, limit: int) -> bool:
    if len(page.data) < limit:
        return True
    total = page.totalMarketsCount
    return total is not None and number * limit >= total


def _parse_error_body(response: httpx.Response) -> _ErrorBody | None:
    try:
        return _ERROR_BODY_DECODER.decode(response.content)
    except msgspec.DecodeError:
        return None


def _retry_hint(response: httpx.Response, body: _ErrorBody | None) -> float | None:
    """The server's requested delay: the larger of body ``retryAfterSeconds`` and header."""
    raw = body.retryAfterSeconds if body is not None else None
    from_body = _parse_seconds(raw) if isinstance(raw, str) else raw
    from_header = _parse_seconds(response.headers.get("Retry-After"))
    hints = [v for v in (from_body, from_header) if v is not None and math.isfinite(v)]
    return max(0.0, *hints) if hints else None


def _parse_seconds(value: str | None) -> float | None:
    # Only the delta-seconds form; an HTTP-date falls back to the backoff.
    if value is None:
        return None
    try:
        return float(value.strip())
    except ValueError:
        return None


def _error_detail(response: httpx.Response, body: _ErrorBody | None) -> str:
    """A short, human-readable reason from an error response (never its headers)."""
    if body is not None and (body.message is not None or body.error is not None):
        reason = body.message if body.message is not None else body.error
        text = reason if isinstance(reason, str) else msgspec.json.encode(reason).decode()
    else:
        text = response.text
    text = " ".join(text.split())
    if len(text) > _MAX_DETAIL_CHARS:
        text = text[:_MAX_DETAIL_CHARS] + "…"
    return f"HTTP {response.status_code}: {text}" if text else f"HTTP {response.status_code}"
