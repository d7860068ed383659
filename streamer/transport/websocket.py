"""WebSocket transport: the only module that touches :mod:`websockets`.

``open_websocket`` yields a :class:`WebSocketTransport` with three methods
(``send``, ``receive``, ``aclose``); every websockets or OS exception is mapped here to
:class:`~streamer.errors.ConnectError` or :class:`~streamer.errors.ConnectionLost`.

websockets' own keepalive ping is switched off: Engine.IO v4 has its own heartbeat
(server ``2``, client ``3``) and the driver enforces ``pingInterval + pingTimeout``,
so a second timer would only add a second, differently-tuned way to drop the link.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Final, Protocol

import websockets
from websockets.asyncio.client import ClientConnection, connect

from streamer.errors import ConnectError, ConnectionLost

logger = logging.getLogger(__name__)

ENGINEIO_PATH: Final = "/socket.io/?EIO=4&transport=websocket"
"""Path and query of the upgrade request; HMAC signs exactly this string."""


class Transport(Protocol):
    """The seam the feed driver talks to (tests use a fake)."""

    async def send(self, text: str) -> None: ...

    async def receive(self) -> str: ...

    async def aclose(self) -> None: ...


class WebSocketTransport:
    """A connected websocket, text frames in and out."""

    def __init__(self, connection: ClientConnection) -> None:
        self._connection = connection

    async def send(self, text: str) -> None:
        """Send one text frame.

        Raises:
            ConnectionLost: the socket is closed or broken.
        """
        try:
            await self._connection.send(text)
        except (websockets.ConnectionClosed, OSError) as exc:
            raise ConnectionLost(f"send failed: {_describe(exc)}") from exc

    async def receive(self) -> str:
        """Receive one frame as text (binary frames are decoded as UTF-8).

        Raises:
            ConnectionLost: the socket closed or broke.
        """
        try:
            frame = await self._connection.recv()
        except (websockets.ConnectionClosed, OSError) as exc:
            raise ConnectionLost(f"receive failed: {_describe(exc)}") from exc
        if isinstance(frame, bytes):
            return frame.decode("utf-8", errors="replace")
        return frame

    async def aclose(self) -> None:
        """Close the socket; never raises."""
        try:
            await self._connection.close()
        except (websockets.WebSocketException, OSError):  # closing a dead socket
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
) -> AsyncIterator[WebSocketTransport]:
    """Connect to the Engine.IO endpoint below ``ws_url`` and yield a transport.

    Raises:
        ConnectError: DNS, TCP, TLS, timeout or a rejected HTTP upgrade (with status).
    """
    url = engineio_url(ws_url)
    try:
        connection = await connect(
            url,
            additional_headers=dict(headers),
            user_agent_header="limitless-streamer",
            open_timeout=open_timeout_s,
            ping_interval=None,
            ping_timeout=None,
            close_timeout=2,
            max_size=max_frame_bytes,
            compression="deflate",
        )
    except websockets.InvalidStatus as exc:
        raise ConnectError(f"upgrade rejected with HTTP {exc.response.status_code}") from exc
    except (websockets.WebSocketException, OSError, TimeoutError) as exc:
        raise ConnectError(f"connect failed: {_describe(exc)}") from exc
    transport = WebSocketTransport(connection)
    try:
        yield transport
    finally:
        await transport.aclose()


def _describe(exc: BaseException) -> str:
    """A short, secret-free description of a transport exception."""
    if isinstance(exc, websockets.ConnectionClosed):
        rcvd = exc.rcvd
        return f"closed (code {rcvd.code})" if rcvd is not None else "closed (no close frame)"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
