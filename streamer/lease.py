"""Hot standby: a broker lease decides which of several hot daemons publishes.

Placeholder: the URL parser (the lease itself follows).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final, Literal
from urllib.parse import parse_qs, unquote, urlsplit

from streamer.errors import ConfigError

DEFAULT_TTL_S: Final = 3.0
DEFAULT_KEY: Final = "leader"
_TTL_RE: Final = re.compile(r"^([0-9]+(?:\.[0-9]+)?)(ms|s)?$")


@dataclass(frozen=True, slots=True)
class LeaseSpec:
    """A parsed ``--lease`` URL (credentials kept out of ``repr``)."""

    kind: Literal["nats", "redis"]
    host: str
    port: int
    bucket: str
    """JetStream key-value bucket (nats) or the database number as text (redis)."""
    key: str
    ttl_s: float
    username: str | None = None
    password: str | None = None

    def __repr__(self) -> str:
        return (f"LeaseSpec({self.kind}://{self.host}:{self.port}/{self.bucket}"
                f"?key={self.key}&ttl={self.ttl_s}s)")

    @property
    def shown(self) -> str:
        """The URL without credentials, for logs."""
        return f"{self.kind}://{self.host}:{self.port}/{self.bucket}?key={self.key}"


def parse_lease_url(url: str) -> LeaseSpec:
    """Parse ``nats://HOST:PORT/BUCKET?ttl=3s[&key=K]`` or ``redis://HOST:PORT/DB?key=K&ttl=3s``.

    Raises:
        ConfigError: one line naming ``lease`` and what is wrong (never the password).
    """
    parts = urlsplit(url)
    if parts.scheme not in ("nats", "redis"):
        raise ConfigError("lease: expected nats://HOST:PORT/BUCKET?ttl=3s or "
                          "redis://HOST:PORT/DB?key=KEY&ttl=3s")
    try:
        port = parts.port
    except ValueError:
        raise ConfigError("lease: invalid port") from None
    if not parts.hostname:
        raise ConfigError("lease: a host is required")
    query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
    unknown = set(query) - {"ttl", "key"}
    if unknown:
        raise ConfigError(f"lease: unknown option(s) {sorted(unknown)} (ttl, key)")
    match = _TTL_RE.match(query.get("ttl", f"{DEFAULT_TTL_S}s"))
    if match is None:
        raise ConfigError(f"lease: ttl must look like 3s or 2500ms, got {query['ttl']!r}")
    ttl_s = float(match[1]) / (1000.0 if match[2] == "ms" else 1.0)
    if not 0.3 <= ttl_s <= 3600:
        raise ConfigError(f"lease: ttl must be between 0.3s and 3600s, got {ttl_s}s")
    path = parts.path.strip("/")
    key = query.get("key", DEFAULT_KEY)
    if not key or not re.fullmatch(r"[A-Za-z0-9_.:=-]{1,200}", key):
        raise ConfigError(f"lease: invalid key {key!r}")
    if parts.scheme == "nats":
        if not re.fullmatch(r"[A-Za-z0-9_-]{1,100}", path):
            raise ConfigError("lease: nats:// needs a key-value bucket name as its path "
                              "(letters, digits, _ and -)")
        bucket = path
    else:
        bucket = path or "0"
        if not bucket.isdigit():
            raise ConfigError(f"lease: redis:// path must be a database number, got {path!r}")
        if "key" not in query:
            raise ConfigError("lease: redis:// needs ?key=KEY")
    return LeaseSpec(parts.scheme,  # type: ignore[arg-type]
                     parts.hostname, port or (4222 if parts.scheme == "nats" else 6379),
                     bucket, key, ttl_s,
                     unquote(parts.username) if parts.username else None,
                     unquote(parts.password) if parts.password else None)
