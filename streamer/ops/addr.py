"""``HOST:PORT`` parsing and the one-line error for an address that cannot be bound.

A leaf module (stdlib and :mod:`streamer.errors` only), so that configuration, the health
endpoint and the simulator can all use it without importing each other.
"""

from __future__ import annotations

import errno

from streamer.errors import ConfigError

__all__ = ["bind_error", "parse_addr"]


def parse_addr(addr: str) -> tuple[str | None, int]:
    """``"127.0.0.1:9464"`` → ``("127.0.0.1", 9464)``; ``"[::1]:0"``; ``":9464"`` = all.

    Returns:
        ``(host, port)``; host ``None`` means every interface.

    Raises:
        ValueError: no port, a port outside 0..65535, or an unbracketed IPv6 host.
    """
    host, sep, port_text = addr.strip().rpartition(":")
    if not sep or not port_text.isdigit():
        raise ValueError(f"{addr!r} is not HOST:PORT")
    port = int(port_text)
    if port > 65535:
        raise ValueError(f"{addr!r}: port must be 0..65535")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ValueError(f"{addr!r}: put an IPv6 host in brackets, e.g. [::1]:9464")
    return (host or None), port


def bind_error(
    flag: str, host: str | None, port: int, exc: OSError, *, field: str | None = None
) -> ConfigError:
    """A one-line :class:`ConfigError` for a listener that could not bind.

    An address in use or not local is an operator's problem, not a bug: it exits 2 with
    the address and the flag to change, instead of a traceback (and, under
    ``Restart=always``, a crash loop that looks like a bug).

    Args:
        flag: the flag (and config field) that chose the address, e.g. ``--metrics-addr``.
        host: the host asked for (``None``: every interface).
        port: the port asked for.
        exc: what the bind raised.
        field: the config-file field that can also set it, if any.
    """
    where = f"{'[' + host + ']' if host and ':' in host else host or '*'}:{port}"
    if exc.errno == errno.EADDRINUSE:
        why = "address already in use (another process listens there)"
    elif exc.errno == errno.EADDRNOTAVAIL:
        why = "address not available on this machine"
    elif exc.errno == errno.EACCES:
        why = "permission denied (ports below 1024 need privileges)"
    else:
        why = exc.strerror or str(exc)
    fix = f"{flag} (config: {field})" if field else flag
    return ConfigError(f"{flag} {where}: cannot listen: {why}; choose another with {fix}")
