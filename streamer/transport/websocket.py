"""WebSocket transport: the only module that touches a WebSocket library.

``open_websocket`` yields a :class:`WebSocketTransport` with three methods
(``send``, ``receive``, ``aclose``); every library or OS exception is mapped here to
:class:`~streamer.errors.ConnectError` or :class:`~streamer.errors.ConnectionLost`.

Two clients speak the same API (websockets' asyncio client), chosen by
``feed.ws_client``:

- ``picows`` (the default): ``picows.websockets``, picows' drop-in implementation of the
  websockets API over its Cython frame parser. Receiving a frame costs ~1 us of CPU
  against ~4.7 us with websockets (``python -m streamer.bench``'s loopback server, 2 kB
  frames), the largest single item of the daemon's per-update cost.
- ``websockets``: the reference implementation, kept as the fallback (set it if picows
  ever misbehaves against a server, or on a platform without a picows wheel).

Both negotiate permessage-deflate when the server offers it. Their own keepalive ping is
switched off: Engine.IO v4 has its own heartbeat (server ``2``, client ``3``) and the
driver enforces ``pingInterval + pingTimeout``, so a second timer would only add a second,
differently-tuned way to drop the link.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Final, Literal, Protocol, TypeAlias

import anyio
from websockets.proxy import get_proxy
from websockets.uri import parse_uri

from streamer.errors import ConnectError, ConnectionLost

logger = logging.getLogger(__name__)

ENGINEIO_PATH: Final = "/socket.io/?EIO=4&transport=websocket"
"""Path and query of the upgrade request; HMAC signs exactly this string."""

WsClient: TypeAlias = Literal["picows", "websockets"]
"""Which library speaks WebSocket (``feed.ws_client``)."""

WS_CLIENTS: Final[tuple[WsClient, ...]] = ("picows", "websockets")
DEFAULT_WS_CLIENT: Final[WsClient] = "picows"


@dataclass(frozen=True, slots=True)
class _Library:
    """What the transport uses of one client library (both mirror websockets' API)."""

    name: WsClient
    connect: Callable[..., Any]
    closed: type[Exception]
    """``ConnectionClosed``: ``rcvd`` is the close frame received, or ``None``."""
    invalid_status: type[Exception]
    """``InvalidStatus``: the upgrade was answered with another HTTP status (``response``)."""
    error: type[Exception]
    """``WebSocketException``, the base of every library error."""


_LIBRARIES: dict[str, _Library] = {}


def _library(name: WsClient) -> _Library:
    """The client library ``name``, imported on first use. Without picows (a platform with
    no wheel for it), ``websockets`` is used instead, with a warning."""
    library = _LIBRARIES.get(name)
    if library is None:
        package = "picows.websockets" if name == "picows" else "websockets"
        try:
            root = importlib.import_module(package)
            client = importlib.import_module(f"{package}.asyncio.client")
        except ImportError as exc:
            if name != "picows":
                raise
            logger.warning("feed.ws_client: picows is not importable (%s); using websockets",
                           exc)
            library = _library("websockets")
        else:
            library = _Library(name, client.connect, root.ConnectionClosed,
                               root.InvalidStatus, root.WebSocketException)
        _LIBRARIES[name] = library
    return library


class Transport(Protocol):
    """The seam the feed driver talks to (tests use a fake)."""

    async def send(self, text: str) -> None: ...

    async def receive(self) -> str: ...

    async def aclose(self) -> None: ...


class WebSocketTransport:
    """A connected websocket, text frames in and out."""

    __slots__ = ("client", "_connection", "_lost", "_error")

    def __init__(self, connection: Any, library: _Library) -> None:
        self.client = library.name
        """Which library speaks for this transport."""
        self._connection = connection
        self._lost = (library.closed, OSError)
        self._error = library.error

    async def send(self, text: str) -> None:
        """Send one text frame.

        Raises:
            ConnectionLost: the socket is closed or broken.
        """
        try:
            await self._connection.send(text)
        except self._lost as exc:
            raise ConnectionLost(f"send failed: {_describe(exc, self._lost[0])}") from exc

    async def receive(self) -> str:
        """Receive one frame as text (binary frames are decoded as UTF-8).

        Raises:
            ConnectionLost: the socket closed or broke.
        """
        try:
            frame = await self._connection.recv()
        except self._lost as exc:
            raise ConnectionLost(f"receive failed: {_describe(exc, self._lost[0])}") from exc
        if type(frame) is str:
            return frame
        return bytes(frame).decode("utf-8", errors="replace")

    async def aclose(self) -> None:
        """Close the socket; never raises."""
        try:
            await self._connection.close()
        except (self._error, OSError):  # closing a dead socket
            pass


def engineio_url(ws_url: str) -> str:
    """The full upgrade URL for a base ``ws(s)://host[:port]`` URL."""
    return ws_url.rstrip("/") + ENGINEIO_PATH


@asynccontextmanager
async def open_websocket(
    ws_url: str,
    headers: Mapping[str, str],
    *,
    open_timeout_s: float,
    max_frame_bytes: int,
    client: WsClient = DEFAULT_WS_CLIENT,
) -> AsyncIterator[WebSocketTransport]:
    """Connect to the Engine.IO endpoint below ``ws_url`` and yield a transport.

    Args:
        client: the WebSocket library, ``"picows"`` or ``"websockets"`` (see the module
            docstring).

    The whole connect (DNS, TCP, proxy, TLS, upgrade) runs under one ``open_timeout_s``
    deadline, and the proxy comes from the environment by websockets' rules (``no_proxy``
    honoured, SOCKS first) for both clients.

    Raises:
        ConnectError: DNS, TCP, proxy, TLS, timeout or a rejected HTTP upgrade (with status),
            or anything else that fails the connect: the supervisor retries it.
    """
    url = engineio_url(ws_url)
    library = _library(client)
    try:
        proxy = get_proxy(parse_uri(url))
        # picows' own open_timeout covers only the upgrade: one deadline over everything.
        with anyio.fail_after(open_timeout_s):
            connection = await library.connect(
                url,
                additional_headers=dict(headers),
                user_agent_header="limitless-streamer",
                open_timeout=open_timeout_s,
                proxy=proxy,
                ping_interval=None,
                ping_timeout=None,
                close_timeout=2,
                max_size=max_frame_bytes,
                compression="deflate",
            )
    except library.invalid_status as exc:
        status = getattr(getattr(exc, "response", None), "status_code", "?")
        raise ConnectError(f"upgrade rejected with HTTP {status}") from exc
    except TimeoutError as exc:
        raise ConnectError(f"connect failed: timed out after {open_timeout_s:g}s") from exc
    except Exception as exc:
        # Every failure to connect is retried. Besides the libraries' errors and OSError,
        # picows lets python_socks' ProxyError through, and an AssertionError when the
        # peer closes during the upgrade.
        raise ConnectError(f"connect failed: {_describe(exc, library.closed)}") from exc
    transport = WebSocketTransport(connection, library)
    try:
        yield transport
    finally:
        await transport.aclose()


def _describe(exc: BaseException, closed: type[Exception]) -> str:
    """A short, secret-free description of a transport exception (``closed``: the library's
    ``ConnectionClosed``)."""
    if isinstance(exc, closed):
        rcvd, sent = getattr(exc, "rcvd", None), getattr(exc, "sent", None)
        if rcvd is not None:
            return f"closed (code {rcvd.code})"
        if sent is not None:  # we closed first, e.g. 1009 for a frame over max_frame_bytes
            return f"closed by us (code {sent.code})"
        return "closed (no close frame)"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
