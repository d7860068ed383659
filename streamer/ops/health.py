"""The operations HTTP endpoint: ``/healthz``, ``/readyz`` and ``/metrics``.

One small HTTP/1.1 server (h11 over ``anyio.create_tcp_listener``) inside the daemon's
task group, so a scrape reads the stats in the event-loop thread and never races the
feed (prometheus_client's own thread server is deliberately not used).

* ``/healthz``: 200 while the process (and its event loop) runs.
* ``/readyz``: 200 when ``readiness()`` says ready, else 503; a JSON body
  ``{"ready": bool, "reason": "..."}`` either way.
* ``/metrics``: the Prometheus registry (text 0.0.4, or OpenMetrics if the scraper asks),
  gzip-compressed when the scraper accepts it.

``GET`` and ``HEAD`` only; keep-alive is supported (Prometheus reuses connections); a
client idle for ``IDLE_TIMEOUT_S`` or sending more than ``MAX_REQUEST_BYTES`` of headers
is dropped; at most ``MAX_CONNECTIONS`` at once (more are closed at once).
"""

from __future__ import annotations

import gzip
import logging
from collections.abc import Callable
from typing import Final, NamedTuple

import anyio
import h11
import msgspec
from anyio.abc import SocketAttribute, SocketStream, TaskStatus

from streamer.ops.addr import bind_error, parse_addr
from streamer.ops.metrics import Metrics

__all__ = [
    "HttpApp",
    "Response",
    "parse_addr",
    "serve_http",
    "DEFAULT_METRICS_ADDR",
]

logger = logging.getLogger(__name__)

DEFAULT_METRICS_ADDR: Final = "127.0.0.1:9464"
MAX_CONNECTIONS: Final = 16
MAX_REQUEST_BYTES: Final = 16 * 1024
IDLE_TIMEOUT_S: Final = 30.0
READ_CHUNK: Final = 65536
GZIP_MIN_BYTES: Final = 1024

_JSON: Final = "application/json"
_TEXT: Final = "text/plain; charset=utf-8"
_ENCODER: Final = msgspec.json.Encoder()
_CONN_ERRORS: Final = (
    h11.ProtocolError,
    anyio.BrokenResourceError,
    anyio.ClosedResourceError,
    anyio.EndOfStream,
    TimeoutError,
)

Readiness = Callable[[], tuple[bool, str]]


class Response(NamedTuple):
    """One HTTP response before framing."""

    status: int
    content_type: str
    body: bytes
    gzipped: bool = False


class HttpApp:
    """Maps a request to a :class:`Response` (no I/O; the server frames it).

    Args:
        metrics: rendered on ``/metrics``.
        readiness: called on every ``/readyz``.
    """

    def __init__(self, metrics: Metrics, readiness: Readiness) -> None:
        self._metrics = metrics
        self._readiness = readiness

    def respond(self, method: str, target: str, headers: dict[str, str]) -> Response:
        """Answer one request.

        Args:
            method: HTTP method (upper case).
            target: request target (a query string is ignored).
            headers: lower-cased header names to values.
        """
        path = target.split("?", 1)[0]
        if path not in _ROUTES:
            return Response(404, _TEXT, b"not found: try /healthz, /readyz or /metrics\n")
        if method not in ("GET", "HEAD"):
            return Response(405, _TEXT, b"method not allowed\n")
        if path == "/healthz":
            return Response(200, _TEXT, b"ok\n")
        if path == "/readyz":
            ready, reason = self._readiness()
            body = _ENCODER.encode({"ready": ready, "reason": reason}) + b"\n"
            return Response(200 if ready else 503, _JSON, body)
        return self._scrape(headers)

    def _scrape(self, headers: dict[str, str]) -> Response:
        try:
            body, content_type = self._metrics.render(headers.get("accept", ""))
        except Exception:
            # A bug in metric collection must not take down a market-data daemon: the
            # scrape fails (Prometheus records up=0 for it) and the traceback is logged.
            logger.exception("metrics collection failed")
            return Response(500, _TEXT, b"metrics collection failed\n")
        if "gzip" in headers.get("accept-encoding", "") and len(body) >= GZIP_MIN_BYTES:
            return Response(200, content_type, gzip.compress(body, compresslevel=5), True)
        return Response(200, content_type, body)


_ROUTES: Final = frozenset({"/healthz", "/readyz", "/metrics"})


async def serve_http(
    addr: str,
    metrics: Metrics,
    readiness: Readiness,
    *,
    task_status: TaskStatus[int] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``/healthz``, ``/readyz`` and ``/metrics`` on ``addr`` until cancelled.

    Args:
        addr: ``HOST:PORT`` (see :func:`parse_addr`); port 0 picks a free port.
        metrics: the registry owner.
        readiness: ``() -> (ready, reason)``, e.g. ``metrics.readiness``.
        task_status: receives the bound port once listening.

    Raises:
        ValueError: ``addr`` is malformed.
        ConfigError: the address cannot be bound (in use, not local), naming the flag.
    """
    host, port = parse_addr(addr)
    app = HttpApp(metrics, readiness)
    limiter = anyio.CapacityLimiter(MAX_CONNECTIONS)
    try:
        listener = await anyio.create_tcp_listener(local_host=host, local_port=port)
    except OSError as exc:
        raise bind_error("--metrics-addr", host, port, exc, field="metrics_addr") from None
    async with listener:
        bound = int(listener.extra(SocketAttribute.local_port))
        shown = f"{host if host is not None else '*'}:{bound}"
        logger.info("metrics and health endpoint listening on %s", shown,
                    extra={"url": f"http://{shown}/metrics"})
        task_status.started(bound)

        async def handle(stream: SocketStream) -> None:
            try:
                limiter.acquire_nowait()
            except anyio.WouldBlock:
                await stream.aclose()
                return
            try:
                await _serve_connection(stream, app)
            finally:
                limiter.release()

        await listener.serve(handle)


async def _serve_connection(stream: SocketStream, app: HttpApp) -> None:
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_REQUEST_BYTES)
    async with stream:
        try:
            while True:
                request = await _next_request(stream, conn)
                if request is None:
                    return
                headers = {k.decode("latin-1").lower(): v.decode("latin-1")
                           for k, v in request.headers}
                method = request.method.decode("ascii", "replace")
                response = app.respond(method, request.target.decode("latin-1"), headers)
                await _send(stream, conn, response, head=method == "HEAD")
                if conn.our_state is h11.MUST_CLOSE or conn.their_state is h11.MUST_CLOSE:
                    return
                conn.start_next_cycle()
        except h11.RemoteProtocolError as exc:
            await _send_error(stream, conn, exc.error_status_hint)
        except _CONN_ERRORS:
            return  # the client went away or misbehaved; nothing to tell it


async def _next_request(stream: SocketStream, conn: h11.Connection) -> h11.Request | None:
    """The next request with its body consumed, or ``None`` on EOF or idle timeout."""
    request: h11.Request | None = None
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            with anyio.move_on_after(IDLE_TIMEOUT_S):
                try:
                    data = await stream.receive(READ_CHUNK)
                except anyio.EndOfStream:
                    data = b""
                conn.receive_data(data)
                continue
            return None
        if isinstance(event, h11.Request):
            request = event
        elif isinstance(event, h11.EndOfMessage):
            return request
        elif isinstance(event, h11.ConnectionClosed):
            return None


async def _send(stream: SocketStream, conn: h11.Connection, response: Response, *,
                head: bool) -> None:
    headers = [
        ("Content-Type", response.content_type),
        ("Content-Length", str(len(response.body))),
        ("Cache-Control", "no-store"),
    ]
    if response.gzipped:
        headers.append(("Content-Encoding", "gzip"))
    await stream.send(conn.send(h11.Response(status_code=response.status, headers=headers)))
    if not head and response.body:
        await stream.send(conn.send(h11.Data(data=response.body)))
    await stream.send(conn.send(h11.EndOfMessage()))


async def _send_error(stream: SocketStream, conn: h11.Connection, status: int) -> None:
    if conn.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
        return
    try:
        await _send(stream, conn, Response(status, _TEXT, b"bad request\n"), head=False)
    except (*_CONN_ERRORS, h11.LocalProtocolError):
        return
