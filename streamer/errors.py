"""Errors of the daemon.

::

    StreamerError
    ├── ConfigError                 bad flags, config file or env → exit 2
    ├── TransportError              → retried with backoff
    │   ├── ConnectError            TCP/TLS/HTTP-upgrade failure, handshake rejected with a status
    │   ├── ConnectionLost          socket closed or reset mid-session
    │   ├── HeartbeatTimeout        no frame for pingInterval + pingTimeout
    │   ├── ServerDisconnect        ``41/markets,`` (kicked), Engine.IO close
    │   ├── ConnectRefused          ``44/markets,{…}`` namespace connect error
    │   ├── RestError               REST failure after retries (status, or transport)
    │   └── SinkBlocked             a lossless ``block`` sink is full: the daemon drops the
    │                               session on purpose, reconnects once it drained
    ├── ProtocolError               the peer broke Engine.IO/Socket.IO framing → retried
    └── InvalidState                our own misuse: a bug, never retried

Only :mod:`streamer.transport` catches third-party exceptions, and it re-raises
them as one of these with ``from exc``.
"""

from __future__ import annotations


class StreamerError(Exception):
    """Root of every error the daemon raises on purpose."""


class ConfigError(StreamerError):
    """Bad configuration: the message names the field. Exit status 2."""


class TransportError(StreamerError):
    """A network-level failure; the supervisor retries it with backoff."""


class ConnectError(TransportError):
    """Could not open the WebSocket (TCP, TLS, HTTP upgrade)."""


class ConnectionLost(TransportError):
    """The socket closed or failed during a session."""


class HeartbeatTimeout(TransportError):
    """No frame, ping included, within pingInterval + pingTimeout."""


class ServerDisconnect(TransportError):
    """The server closed the namespace (``41``) or the Engine.IO session (``1``)."""


class ConnectRefused(TransportError):
    """The server answered the namespace connect with ``44`` (connect_error)."""


class RestError(TransportError):
    """A REST call failed for good (after retries, or a non-retryable status).

    Attributes:
        status: HTTP status, or ``None`` for a transport failure.
        endpoint: the endpoint template, e.g. ``/markets/{slug}/orderbook``.
    """

    def __init__(self, endpoint: str, status: int | None, detail: str) -> None:
        self.endpoint = endpoint
        self.status = status
        self.detail = detail
        super().__init__(f"{endpoint}: {status if status is not None else 'transport'}: {detail}")


class SinkBlocked(TransportError):
    """A ``block`` sink's queue is full: the session is closed on purpose.

    The reader never waits for a sink (pings would go unanswered and the venue would drop
    us, blaming nobody); instead the daemon closes the session, waits until the sink has
    drained, reconnects and re-syncs every book, so the ``block`` sink loses nothing.
    """


class ProtocolError(StreamerError):
    """The peer broke Engine.IO/Socket.IO framing beyond what we skip."""


class InvalidState(StreamerError, AssertionError):
    """Our own misuse of a component: a bug."""
