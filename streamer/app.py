"""Wiring: the one top-level task group of the daemon.

::

    outer task group
    ├── fanout.run            sinks open first, drain last
    ├── producers task group  (cancelled on SIGTERM/SIGINT or when stdout goes away)
    │   ├── signals           SIGTERM/SIGINT → shutdown, SIGHUP → reopen file sinks
    │   ├── discovery         bootstrap markets over REST, re-poll, lifecycle events
    │   ├── run_feed          reconnect loop → Feed.run_session
    │   └── snapshots         a full book of every market per snapshot_interval_s
    └── lease                 (--lease) acquire/renew; the fan-out's gate lets only the
                              holder's current run out; stopped after the fan-out drained

Shutdown cancels the producers, then closes the fan-out, which drains every sink
queue within ``shutdown_grace_s`` and closes the sinks.
"""

from __future__ import annotations

import logging
import signal
import sys
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Final

import anyio
import httpx
from anyio.abc import TaskStatus

from orderbook import book
from orderbook.types import Book
from sinks.base import SinkMisconfigured
from sinks.fanout import Fanout, SinkSpec
from sinks.gate import PublishGate
from streamer import __version__
from streamer.config import Settings
from streamer.errors import ConfigError, RestError
from streamer.feed.budget import RatePacer
from streamer.feed.feed import Feed, now_ms
from streamer.feed.supervisor import Connect, run_feed
from streamer.feed.universe import Universe, expand, in_shard, is_live, is_resolved
from streamer.ha.lease import Lease, make_backend, parse_lease_url
from streamer.ops.health import serve_http
from streamer.ops.metrics import Metrics
from streamer.partner.allowances import AllowanceWatcher
from streamer.partner.auth import Credentials
from streamer.partner.private import PrivateChannels
from streamer.protocol.messages import Market
from streamer.transport.rest import RestClient, RetryPolicy

logger = logging.getLogger(__name__)


class Discovery:
    """Bootstraps the market set over REST and keeps it current."""

    def __init__(self, settings: Settings, rest: RestClient, feed: Feed) -> None:
        self._settings = settings
        self._rest = rest
        self._feed = feed
        self._poke = anyio.Event()
        self._missing: list[str] = []

    def on_market_event(self, kind: str, slug: str) -> None:
        """``marketCreated`` polls now; ``marketResolved`` drops the market now."""
        if kind == "resolved":
            if self._feed.universe.get(slug) is not None:
                self._feed.remove_market(slug, "RESOLVED")
        elif kind == "created" and (self._settings.all_markets or slug in self._missing):
            self._poke.set()

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Bootstrap (retrying forever), signal readiness, then re-poll periodically.

        After the bootstrap nothing discovery meets stops the daemon: a failed poll keeps
        the current set, and a named market that is gone (404) is removed and polled again.
        """
        delays = self._settings.rest.backoff.delays()
        while True:
            try:
                markets = await self._discover(bootstrap=True)
                break
            except RestError as exc:
                delay = next(delays)
                logger.warning("market bootstrap failed: %s; retrying in %.1fs", exc, delay,
                               extra={"reason": type(exc).__name__, "delay_s": round(delay, 3)})
                await anyio.sleep(delay)
        self._apply(markets)
        logger.info("bootstrap: following %d markets", len(self._feed.universe.slugs()))
        task_status.started()
        while True:
            with anyio.move_on_after(self._settings.discovery_interval_s):
                await self._poke.wait()
            self._poke = anyio.Event()
            try:
                self._apply(await self._discover(bootstrap=False))
            except RestError as exc:
                logger.warning("market discovery failed: %s; keeping the current set", exc,
                               extra={"reason": type(exc).__name__})

    async def _discover(self, *, bootstrap: bool) -> list[Market]:
        s = self._settings
        found: list[Market] = []
        if s.all_markets:
            now = now_ms()
            active = await self._rest.active_markets(limit=s.rest.page_limit)
            found.extend(m for m in expand(active) if is_live(m, now))
        missing = []
        for slug in s.markets:
            try:
                market = await self._rest.market(slug)
            except RestError as exc:
                if exc.status != 404:
                    raise
                missing.append(slug)
                continue
            found.extend(m for m in expand([market]) if not is_resolved(m))
        if missing and missing != self._missing:
            logger.warning("markets not found on the venue (404), polled again: %s",
                           ", ".join(missing), extra={"market": ",".join(missing)})
        self._missing = missing
        if bootstrap and missing and len(missing) == len(s.markets) and not s.all_markets:
            raise ConfigError(f"markets: none of the configured markets exist: {missing}")
        shard = s.shard_spec
        if shard is not None:
            found = [m for m in found if in_shard(m.slug, *shard)]
        return found

    def _apply(self, markets: list[Market]) -> None:
        feed = self._feed
        before = feed.universe.version
        if not self._settings.all_markets:
            # Named markets: one that vanished (delisted, resolved) is removed; it comes back
            # by itself when a later poll finds it again (starting with a fresh ``book``).
            seen = {m.slug for m in markets}
            for entry in feed.universe.active():
                if entry.slug not in seen:
                    feed.remove_market(entry.slug, "DELISTED")
        for record in feed.universe.update(markets, now_ms(), prune=self._settings.all_markets):
            if record.event == "removed":
                feed.forget_market(record.market)
            feed.publish(record)
        if feed.universe.version != before:
            feed.universe_changed()


SWITCH_INTERVAL_S: Final = 0.001
"""The GIL switch interval of a daemon process (CPython's default is 5 ms).

Sinks write from worker threads (files, the recording). While the event loop is busy,
every hand-over of the GIL to such a thread waited up to the switch interval: at full
load a file sink took ~13 ms per batch round trip and fell behind the reader. At 1 ms
they keep up. Process-wide, so the process owner sets it (:func:`tune_process`, called by
the CLI and the benchmark), not :func:`run`."""


def tune_process() -> None:
    """Set the process-wide knobs a daemon process runs with (:data:`SWITCH_INTERVAL_S`)."""
    sys.setswitchinterval(SWITCH_INTERVAL_S)


async def _fanout_then(fanout: Fanout, lease_scope: anyio.CancelScope, *,
                       task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
    """Run the fan-out; once it has drained and closed, stop the lease task.

    So on SIGTERM a holder keeps renewing (and its gate open) while its queues drain, and
    only then gives the lease up: its last records are written, not fenced.
    """
    try:
        await fanout.run(task_status=task_status)
    finally:
        lease_scope.cancel()


async def _in_scope(fn: Callable[..., Awaitable[None]], scope: anyio.CancelScope, *,
                    task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
    with scope:
        await fn(task_status=task_status)


def _take_over(feed: Feed, run: str) -> None:
    """The lease was acquired: publish every market's book under the new run, then go on."""
    feed.start_run(run)
    feed.emit_status("lease_acquired", "takeover")


async def _watch_signals(fanout: Fanout, shutdown: anyio.CancelScope) -> None:
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
        async for signum in signals:
            if signum == signal.SIGHUP:
                logger.info("SIGHUP: reopening file sinks")
                fanout.reopen()
                continue
            logger.info("%s: shutting down", signal.Signals(signum).name)
            shutdown.cancel()
            return


async def _watch_closed_sinks(fanout: Fanout, shutdown: anyio.CancelScope) -> None:
    await fanout.closed.wait()
    logger.info("an output closed (e.g. the stdout pipe); shutting down")
    shutdown.cancel()


async def _watch_stop(stop: anyio.Event, shutdown: anyio.CancelScope) -> None:
    await stop.wait()
    shutdown.cancel()


async def run(
    settings: Settings,
    credentials: Credentials | None,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
    on_feed: Callable[[Feed], None] | None = None,
    handle_signals: bool = True,
    specs: list[SinkSpec] | None = None,
    metrics: Metrics | None = None,
    connect: Connect | None = None,
    stop: anyio.Event | None = None,
    run_id: str | None = None,
) -> None:
    """Run the daemon until a signal, a closed output, or a fatal error.

    Args:
        settings: validated settings.
        credentials: REST/WS credentials or None for public data.
        transport: httpx transport override (tests).
        on_feed: called with the Feed once built (tests and metrics hook in here).
        handle_signals: install SIGTERM/SIGINT/SIGHUP handling (off in tests).
        specs: sinks to use instead of ``settings.sinks`` (tests, embedding).
        metrics: the metrics to fill (tests pass one with a private registry).
        connect: WebSocket connector override (record taps it, replay serves from a file).
        stop: when set, shut down as on SIGTERM (a replay that reached its end).
        run_id: this run's id (a replay derives one from the recording); default: a new
            UUIDv7.
    """
    specs = settings.sink_specs() if specs is None else specs
    logger.info("book core: %s", book.BOOK_CORE)
    metrics = Metrics(per_market=settings.per_market_metrics) if metrics is None else metrics
    feeds: list[Feed] = []  # the fan-out exists before the feed; its snapshots come late

    def snapshot_source(market: str) -> Book | None:
        return feeds[0].snapshot_record(market) if feeds else None

    lease_spec = parse_lease_url(settings.lease) if settings.lease is not None else None
    gate = PublishGate() if lease_spec is not None else None
    fanout = Fanout(specs, drain_timeout_s=settings.shutdown_grace_s,
                    snapshot_source=snapshot_source, on_written=metrics.on_written, gate=gate)
    budget = RatePacer(settings.rest.max_in_flight, settings.rest.min_interval_s)
    metrics.bind(fanout=fanout, sinks=[spec.sink for spec in specs], budget=budget)
    async with httpx.AsyncClient(
        timeout=settings.rest.timeout_s,
        transport=transport,
        headers={"User-Agent": f"limitless-streamer/{__version__}"},
    ) as http:
        rest = RestClient(
            http,
            base_url=settings.api_url,
            credentials=credentials,
            retry=RetryPolicy(max_attempts=settings.rest.max_attempts,
                              backoff=settings.rest.backoff),
            observer=metrics.rest,
            limiter=budget,
            transport_calls_on_send=getattr(transport, "calls_on_send", False),
        )
        lease_scope = anyio.CancelScope()  # the lease outlives the drain (see _fanout_then)
        async with anyio.create_task_group() as outer:
            await outer.start(_fanout_then, fanout, lease_scope)
            try:
                async with anyio.create_task_group() as producers:
                    # First, so /healthz answers while the bootstrap is still retrying.
                    await producers.start(serve_http, settings.metrics_addr, metrics,
                                          metrics.readiness)
                    if handle_signals:
                        producers.start_soon(_watch_signals, fanout, producers.cancel_scope)
                    producers.start_soon(_watch_closed_sinks, fanout, producers.cancel_scope)
                    if stop is not None:
                        producers.start_soon(_watch_stop, stop, producers.cancel_scope)
                    private = (PrivateChannels(settings.private)
                               if settings.private.channels else None)
                    feed = Feed(settings, rest, fanout, Universe(), private=private,
                                run=run_id)
                    feeds.append(feed)
                    discovery = Discovery(settings, rest, feed)
                    feed.on_market_event = discovery.on_market_event
                    metrics.bind(feed=feed)
                    if on_feed is not None:
                        on_feed(feed)
                    await producers.start(discovery.run)
                    await producers.start(partial(run_feed, connect=connect), feed,
                                          settings.ws_url, settings.feed, credentials)
                    if settings.snapshot_interval_s > 0:
                        producers.start_soon(feed.run_snapshots, settings.snapshot_interval_s)
                    if lease_spec is not None and gate is not None:
                        lease = Lease(lease_spec, make_backend(lease_spec), gate,
                                      on_acquired=partial(_take_over, feed))
                        metrics.bind(lease=lease, gate=gate)
                        await outer.start(_in_scope, lease.run, lease_scope)
                    if settings.allowances.profiles:
                        watcher = AllowanceWatcher(rest, settings.allowances.profiles,
                                                   publish=feed.publish,
                                                   settings=settings.allowances)
                        metrics.bind(allowances=watcher)
                        await producers.start(watcher.run)
            finally:
                fanout.close()
    for error in fanout.closed_errors.values():
        if isinstance(error, SinkMisconfigured):  # e.g. a missing Kafka topic: exit 2
            raise ConfigError(str(error))
