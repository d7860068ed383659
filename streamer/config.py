"""Settings: one tree of frozen msgspec Structs, from a TOML file, flags and the environment.

Precedence: defaults < ``--config`` file < command-line flags. Secrets come from the
environment only (``LIMITLESS_API_KEY``, or ``LIMITLESS_HMAC_TOKEN_ID`` +
``LIMITLESS_HMAC_SECRET``) and are read only in :func:`load_credentials`. Every problem
raises :class:`~streamer.errors.ConfigError` with a single line that names the field;
the CLI turns it into exit status 2.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final, Literal
from urllib.parse import urlsplit

import msgspec

from sinks.base import SinkConfigError
from sinks.fanout import SinkSpec
from sinks.url import parse_sink_url
from streamer.errors import ConfigError
from streamer.feed.retry import Backoff
from streamer.ops.addr import parse_addr
from streamer.partner.allowances import AllowanceSettings, check_allowance_credentials
from streamer.partner.auth import Credentials, credentials_from_env
from streamer.partner.private import PrivateSettings, check_private_config
from streamer.transport.websocket import DEFAULT_WS_CLIENT, WsClient

DEFAULT_API_URL: Final = "https://api.limitless.exchange"
DEFAULT_WS_URL: Final = "wss://ws.limitless.exchange"
DEFAULT_NAMESPACE: Final = "/markets"
DEFAULT_MAX_FRAME_BYTES: Final = 16 * 1024 * 1024

LogLevel = Literal["debug", "info", "warning", "error"]
_SLUG_RE: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._~-]{0,199}$")
_SHARD_RE: Final = re.compile(r"^(\d{1,6})/(\d{1,6})$")


class FeedSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """WebSocket feed knobs."""

    namespace: str = DEFAULT_NAMESPACE
    connect_timeout_s: float = 10.0
    max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES
    backoff: Backoff = Backoff(initial_s=1.0, factor=2.0, cap_s=30.0, jitter=0.2)
    """Delays between failed attempts (connect/upgrade errors, refused namespace, a session
    that ended before delivering any event); reset by every healthy session."""
    healthy_jitter_s: float = 0.5
    """A healthy session (joined, delivered at least one event) that ends is followed by a
    reconnect after a random delay in [0, healthy_jitter_s]."""
    max_attempts_per_minute: int = 30
    """Floor against spinning: at most this many connect attempts in any rolling minute."""
    min_attempt_interval_s: float = 1.0
    """Floor against spinning: at least this long between two connect attempts' starts."""
    max_clock_skew_s: float = 300.0
    """An exchange timestamp further than this from the local receive time is counted and not
    trusted for ordering (the book is still applied, stamped with the receive time)."""
    lifecycle: bool = True
    """Also subscribe to ``marketCreated``/``marketResolved`` (``subscribe_market_lifecycle``)."""
    ws_client: WsClient = DEFAULT_WS_CLIENT
    """The WebSocket library: ``picows`` (the default, ~4x cheaper per frame received) or
    ``websockets`` (the reference implementation, as a fallback). Same protocol, same
    behaviour; see :mod:`streamer.transport.websocket`."""


class RestSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """REST client knobs."""

    timeout_s: float = 30.0
    max_attempts: int = 4
    backoff: Backoff = Backoff(initial_s=1.0, factor=2.0, cap_s=30.0, jitter=0.2)
    seed_concurrency: int = 2
    """Seeder tasks fetching REST books (more than ``max_in_flight`` cannot help)."""
    page_limit: int = 25
    max_in_flight: int = 2
    """Shared REST pace (every caller): requests in flight at once (venue documents 2)."""
    min_interval_s: float = 0.33
    """Shared REST pace: least time between two request starts (venue documents 300 ms)."""
    seed_backoff: Backoff = Backoff(initial_s=0.5, factor=2.0, cap_s=2.0, jitter=0.2)
    """Per-market delays before retrying a failed seed (never given up). Short: the shared
    pace already bounds what the venue sees, this only spreads retries across markets."""
    crossed_backoff: Backoff = Backoff(initial_s=2.0, factor=2.0, cap_s=60.0, jitter=0.2)
    """Per-market delays between REST re-seeds of a book that stays crossed."""


class HealthSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Per-market freshness probes and background REST audits."""

    stale_after_s: float = 120.0
    """A market with no update for this long is probed over REST (quiet or diverged?)."""
    probe_check_s: float = 5.0
    audit_interval_s: float = 60.0
    """Every this often, ``audit_sample`` books are fetched and compared (0 disables)."""
    audit_sample: int = 1


class RecordSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``[record]``: where and how the raw feed is recorded (off when ``dir`` is unset)."""

    dir: str | None = None
    max_bytes: int = 64 * 1024 * 1024
    """Rotate a segment once it holds this many compressed bytes."""
    max_age_s: float = 3600.0
    """Rotate a segment once it is this old."""
    keep: int = 48
    """Segments kept in ``dir`` (all runs); older ones are deleted."""
    flush_interval_s: float = 0.5
    queue_max: int = 200_000
    """Entries waiting for the writer; beyond this, new entries are dropped and counted."""


def _check_record(s: RecordSettings) -> None:
    if s.max_bytes < 1024:
        raise ConfigError(f"record.max_bytes: must be >= 1024, got {s.max_bytes}")
    if not s.max_age_s > 0:
        raise ConfigError(f"record.max_age_s: must be > 0, got {s.max_age_s}")
    if s.keep < 1:
        raise ConfigError(f"record.keep: must be >= 1, got {s.keep}")
    if not s.flush_interval_s > 0:
        raise ConfigError(f"record.flush_interval_s: must be > 0, got {s.flush_interval_s}")
    if s.queue_max < 1:
        raise ConfigError(f"record.queue_max: must be >= 1, got {s.queue_max}")


class Settings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The whole configuration of one daemon."""

    api_url: str = DEFAULT_API_URL
    ws_url: str = DEFAULT_WS_URL
    markets: tuple[str, ...] = ()
    all_markets: bool = False
    discovery_interval_s: float = 60.0
    sinks: tuple[str, ...] = ("stdout:",)
    log_level: LogLevel = "info"
    shutdown_grace_s: float = 3.0
    shard: str | None = None
    """``INDEX/COUNT``: follow only the markets whose slug hashes to INDEX (0-based)."""
    metrics_addr: str = "127.0.0.1:9464"
    """HOST:PORT for /metrics, /healthz and /readyz (port 0: any free port)."""
    per_market_metrics: bool = True
    """Per-market series (best bid/ask, spread, depth, age); off for huge universes."""
    log_format: Literal["auto", "json", "text"] = "auto"
    """``auto``: JSON lines when stderr is not a terminal, text when it is."""
    snapshot_interval_s: float = 60.0
    """A full ``book`` of every market this often (0: off), so a consumer that joins late
    has a starting point within one interval. 60 s: a minute's wait for a late joiner, at
    the cost of one book per market per minute (500 markets x ~1.5 KB = 12 KB/s), small
    beside the deltas of an active universe; shorter for consumers that join often."""
    depth: int | None = None
    """Emit only the top N levels per side (deltas are computed on that view); None: all."""
    lease: str | None = None
    """Hot standby: ``nats://HOST:PORT/BUCKET?ttl=3s`` or ``redis://HOST:PORT/DB?key=K&ttl=3s``;
    only the daemon holding the lease publishes."""
    feed: FeedSettings = FeedSettings()
    rest: RestSettings = RestSettings()
    health: HealthSettings = HealthSettings()
    private: PrivateSettings = PrivateSettings()
    allowances: AllowanceSettings = AllowanceSettings()
    record: RecordSettings = RecordSettings()

    @property
    def shard_spec(self) -> tuple[int, int] | None:
        """``(index, count)`` from :attr:`shard`, or None (validated at load)."""
        if self.shard is None:
            return None
        index, _, count = self.shard.partition("/")
        return int(index), int(count)

    def sink_specs(self) -> list[SinkSpec]:
        """Parse every sink URL; a bad one raises ConfigError naming it."""
        specs = []
        for url in self.sinks:
            try:
                specs.append(parse_sink_url(url))
            except SinkConfigError as exc:
                raise ConfigError(f"sinks: {exc}") from None
        names = [spec.sink.name for spec in specs]
        if len(set(names)) != len(names):
            raise ConfigError(f"sinks: the same sink is configured twice: {names}")
        return specs



def load_settings(config_path: str | None, overrides: Mapping[str, Any]) -> Settings:
    """Build Settings from an optional TOML file and flag overrides (flags win).

    Args:
        config_path: path of a TOML file, or ``None``.
        overrides: flag values already parsed, keyed by Settings field; ``None`` values
            mean "not given" and are skipped.

    Raises:
        ConfigError: unreadable file, bad TOML, unknown or ill-typed field, or a
            value that fails validation; the message names the field.
    """
    data: dict[str, Any] = {}
    if config_path is not None:
        data = _read_toml(config_path)
    for key, value in overrides.items():
        if value is not None:
            *path, leaf = key.split(".")  # "private.channels" sets one field of a section
            section = data
            for part in path:
                section = section.setdefault(part, {})
                if not isinstance(section, dict):
                    raise ConfigError(f"{part}: expected a table")
            section[leaf] = value
    try:
        settings = msgspec.convert(data, type=Settings)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"config: {exc}") from None
    _validate(settings)
    return settings


def load_credentials(
    env: Mapping[str, str], settings: Settings | None = None
) -> Credentials | None:
    """Credentials from the environment, or ``None`` for public data only.

    With ``settings``, also checks that what the settings ask for can be done with them:
    private channels need credentials, the allowance watcher needs an HMAC token.

    Raises:
        ConfigError: a half-configured HMAC pair (names the missing variable), or private
            channels / allowance profiles without the credentials they need.
    """
    try:
        credentials = credentials_from_env(env)
        if settings is not None:
            check_private_config(settings.private, credentials)
            if settings.allowances.profiles:
                check_allowance_credentials(credentials)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    return credentials


def _read_toml(path: str) -> dict[str, Any]:
    try:
        text = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"--config {path}: {exc.strerror or exc}") from None
    try:
        return tomllib.loads(text.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"--config {path}: {exc}") from None


def _validate(s: Settings) -> None:
    _check_record(s.record)
    _check_url("api_url", s.api_url, ("http", "https"))
    _check_url("ws_url", s.ws_url, ("ws", "wss"))
    for slug in s.markets:
        if not _SLUG_RE.match(slug):
            raise ConfigError(f"markets: invalid market slug {slug!r}")
    if not s.markets and not s.all_markets:
        raise ConfigError("markets: no markets selected (pass --market SLUG or --all-markets)")
    if not s.sinks:
        raise ConfigError("sinks: at least one sink is required")
    if s.snapshot_interval_s < 0 or s.snapshot_interval_s != s.snapshot_interval_s:
        raise ConfigError(f"snapshot_interval_s: must be >= 0 (0: off), got "
                          f"{s.snapshot_interval_s}")
    if s.depth is not None and s.depth < 1:
        raise ConfigError(f"depth: must be >= 1, got {s.depth}")
    if s.lease is not None:
        from streamer.ha.lease import parse_lease_url

        parse_lease_url(s.lease)  # raises ConfigError naming "lease"
    positive = {
        "discovery_interval_s": s.discovery_interval_s,
        "shutdown_grace_s": s.shutdown_grace_s,
        "feed.connect_timeout_s": s.feed.connect_timeout_s,
        "feed.max_attempts_per_minute": s.feed.max_attempts_per_minute,
        "feed.max_clock_skew_s": s.feed.max_clock_skew_s,
        "feed.max_frame_bytes": s.feed.max_frame_bytes,
        "rest.timeout_s": s.rest.timeout_s,
        "rest.max_attempts": s.rest.max_attempts,
        "rest.seed_concurrency": s.rest.seed_concurrency,
        "rest.page_limit": s.rest.page_limit,
        "rest.max_in_flight": s.rest.max_in_flight,
        "health.stale_after_s": s.health.stale_after_s,
        "health.probe_check_s": s.health.probe_check_s,
    }
    for name, value in positive.items():
        if not value > 0:
            raise ConfigError(f"{name}: must be > 0, got {value}")
    for name, value in (("feed.healthy_jitter_s", s.feed.healthy_jitter_s),
                        ("feed.min_attempt_interval_s", s.feed.min_attempt_interval_s),
                        ("rest.min_interval_s", s.rest.min_interval_s)):
        if not value >= 0:
            raise ConfigError(f"{name}: must be >= 0, got {value}")
    if s.health.audit_interval_s < 0 or s.health.audit_sample < 0:
        raise ConfigError("health: audit_interval_s and audit_sample must be >= 0")
    for name, b in (("feed.backoff", s.feed.backoff), ("rest.backoff", s.rest.backoff),
                    ("rest.seed_backoff", s.rest.seed_backoff),
                    ("rest.crossed_backoff", s.rest.crossed_backoff)):
        if not (b.initial_s > 0 and b.factor >= 1 and b.cap_s >= b.initial_s and 0 <= b.jitter < 1):
            raise ConfigError(
                f"{name}: need initial_s > 0, factor >= 1, cap_s >= initial_s, 0 <= jitter < 1"
            )
    try:
        parse_addr(s.metrics_addr)
    except ValueError as exc:
        raise ConfigError(f"metrics_addr: {exc}") from None
    if s.shard is not None:
        match = _SHARD_RE.match(s.shard)
        if not match or not int(match[1]) < int(match[2]):
            raise ConfigError(
                f"shard: expected INDEX/COUNT with 0 <= INDEX < COUNT, got {s.shard!r}"
            )
    if not s.feed.namespace.startswith("/"):
        raise ConfigError(f"feed.namespace: must start with '/', got {s.feed.namespace!r}")
    s.sink_specs()


def _check_url(field: str, url: str, schemes: tuple[str, ...]) -> None:
    parts = urlsplit(url)
    if parts.scheme not in schemes or not parts.hostname:
        raise ConfigError(f"{field}: expected a {'/'.join(schemes)} URL, got {url!r}")
