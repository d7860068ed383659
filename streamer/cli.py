"""Command line: ``run``, ``simulate``, ``demo``.

Exit status: 0 after a clean shutdown (SIGTERM/SIGINT, or the stdout reader went
away), 2 for bad flags or configuration (one line on stderr naming the problem),
1 for anything else (so systemd or Kubernetes restarts the process).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from collections.abc import Mapping, Sequence
from functools import partial
from typing import Any, NoReturn

import anyio

from streamer import __version__
from streamer.errors import ConfigError

logger = logging.getLogger("streamer")

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2


HELP_WIDTH = 100
"""Column width of ``--help`` when not on a terminal, and of the README synopsis."""

EXIT_STATUS_HELP = """\
exit status:
  0  stopped by SIGTERM/SIGINT (sinks flushed) or the stdout reader went away
  1  anything else, e.g. a bug (a traceback is logged), so a supervisor restarts it
  2  bad flags, configuration, credentials, a port in use or an unwritable sink file
     (one line on stderr naming the flag or field)"""

ENV_HELP = """\
environment:
  LIMITLESS_API_KEY        legacy API key (sent as X-API-Key)
  LIMITLESS_HMAC_TOKEN_ID  scoped HMAC token id (with LIMITLESS_HMAC_SECRET; preferred)
  LIMITLESS_HMAC_SECRET    base64 secret of that token
  Secrets are read only from the environment and never logged."""


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage error in one line and exits 2."""

    width: int | None = None
    """Fixed help width (the README synopsis); ``None``: the terminal's width."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")

    def _get_formatter(self) -> argparse.HelpFormatter:
        width = self.width
        if width is None and not sys.stdout.isatty():
            width = HELP_WIDTH  # stable output in pipes, files and tests
        return argparse.RawDescriptionHelpFormatter(prog=self.prog, width=width)


def _defaults() -> Any:
    """The Settings defaults, so the help text states them and cannot drift."""
    from streamer.config import Settings

    return Settings()


def _add_run_flags(p: argparse.ArgumentParser, *, demo: bool = False) -> None:
    d = _defaults()
    if not demo:
        p.add_argument("--config", metavar="FILE",
                       help="TOML config file; flags win over it (default: none)")
        p.add_argument("--api-url", dest="api_url", metavar="URL",
                       help=f"REST base URL (default {d.api_url})")
        p.add_argument("--ws-url", dest="ws_url", metavar="URL",
                       help=f"WebSocket base URL (default {d.ws_url})")
        p.add_argument("--market", dest="markets", action="append", metavar="SLUG",
                       help="follow this market (repeatable; a group slug expands to its "
                            "markets; default: none)")
        p.add_argument("--all-markets", dest="all_markets", action="store_true", default=None,
                       help="follow every active CLOB market, re-polled periodically "
                            "(default off)")
        p.add_argument("--discovery-interval", dest="discovery_interval_s", type=float,
                       metavar="SECONDS",
                       help=f"re-poll interval of the market list "
                            f"(default {d.discovery_interval_s:g})")
        p.add_argument("--shard", metavar="INDEX/COUNT",
                       help="follow only this shard of the markets, by a stable slug hash "
                            "(default: all markets)")
        p.add_argument("--private-channel", dest="private.channels", action="append",
                       choices=["positions", "order_events", "transactions"],
                       help="authenticated channel to stream (repeatable; needs credentials; "
                            "default: none)")
        p.add_argument("--allowance-profile", dest="allowances.profiles", action="append",
                       type=int, metavar="ID",
                       help="watch this partner sub-account's allowances (repeatable; HMAC; "
                            "default: none)")
        p.add_argument("--lease", metavar="URL",
                       help="hot standby: publish only while holding this lease "
                            "(nats://HOST:PORT/BUCKET?ttl=3s or redis://HOST:PORT/DB?key=K&ttl=3s; "
                            "default: none, always publish)")
    p.add_argument("--snapshot-interval", dest="snapshot_interval_s", type=float,
                   metavar="SECONDS", help="a full book of every market this often (0: off; "
                                           "default 60)")
    p.add_argument("--depth", type=int, metavar="N",
                   help="emit only the top N levels per side (default: every level)")
    p.add_argument("--sink", dest="sinks", action="append", metavar="URL",
                   help="output (repeatable): stdout:, file:PATH[?max_bytes=&rotate=&keep=], "
                        f"nats://..., redis://... (default {' '.join(d.sinks)})")
    p.add_argument("--record", dest="record.dir", metavar="DIR",
                   help="record every frame and REST response received to DIR, see replay "
                        "(default: no recording)")
    _add_output_flags(p, demo=demo)


def _add_output_flags(p: argparse.ArgumentParser, *, demo: bool = False) -> None:
    d = _defaults()
    p.add_argument("--log-level", dest="log_level",
                   choices=["debug", "info", "warning", "error"],
                   help=f"log threshold (default {d.log_level})")
    p.add_argument("--log-format", dest="log_format", choices=["auto", "json", "text"],
                   help="stderr log lines; auto: JSON unless stderr is a terminal "
                        f"(default {d.log_format})")
    metrics_default = "127.0.0.1:0, any free port" if demo else d.metrics_addr
    p.add_argument("--metrics-addr", dest="metrics_addr", metavar="HOST:PORT",
                   help=f"serve /metrics, /healthz, /readyz here (default {metrics_default})")
    p.add_argument("--no-per-market-metrics", dest="per_market_metrics",
                   action="store_false", default=None,
                   help="drop per-market series, for very large universes "
                        "(default: per-market series on)")


def _add_sim_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seed", type=int, default=1, help="random seed (default %(default)s)")
    p.add_argument("--markets", dest="sim_markets", type=int, default=12, metavar="N",
                   help="number of CLOB markets (default %(default)s)")
    p.add_argument("--rate", type=float, default=20.0, metavar="HZ",
                   help="book updates per second in all (default %(default)g)")
    p.add_argument("--kick-every", type=float, metavar="SECONDS",
                   help="disconnect every client every N seconds (default: never)")
    p.add_argument("--stall-every", type=float, metavar="SECONDS",
                   help="go silent every N seconds (default: never)")
    p.add_argument("--stall-for", type=float, default=5.0, metavar="SECONDS",
                   help="length of each silence (default %(default)g)")
    p.add_argument("--malformed-rate", type=float, default=0.0, metavar="P",
                   help="fraction of event frames sent malformed (default %(default)g)")
    p.add_argument("--rest-429-rate", type=float, default=0.0, metavar="P",
                   help="fraction of REST requests answered 429 (default %(default)g)")
    p.add_argument("--rest-503-rate", type=float, default=0.0, metavar="P",
                   help="fraction of REST requests answered 503 (default %(default)g)")
    p.add_argument("--ping-interval-ms", type=int, default=25000, metavar="MS",
                   help="Engine.IO pingInterval (default %(default)s)")
    p.add_argument("--ping-timeout-ms", type=int, default=20000, metavar="MS",
                   help="Engine.IO pingTimeout (default %(default)s)")
    p.add_argument("--private-rate", type=float, default=5.0, metavar="HZ",
                   help="private events per second on authenticated sockets "
                        "(default %(default)g)")


def build_parser(*, width: int | None = None) -> argparse.ArgumentParser:
    """The CLI's argument parser.

    Args:
        width: fixed help width (the README synopsis is rendered at :data:`HELP_WIDTH`);
            default: the terminal's width, or HELP_WIDTH when stdout is not a terminal.
    """
    class FixedParser(_Parser):  # argparse builds the subparsers from this class too
        pass

    FixedParser.width = width
    parser = FixedParser(prog="limitless-streamer",
                         description="Real-time order books from Limitless Exchange as NDJSON.",
                         epilog=f"{EXIT_STATUS_HELP}\n\n{ENV_HELP}")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=FixedParser,
                                metavar="COMMAND")
    run = sub.add_parser("run", help="run the daemon",
                         description="Follow markets on the venue and write their order books "
                                     "as NDJSON events to the sinks.",
                         epilog=f"{EXIT_STATUS_HELP}\n\n{ENV_HELP}")
    _add_run_flags(run)
    sim = sub.add_parser("simulate", help="run only the embedded simulator",
                         description="Run the embedded exchange simulator (REST + Socket.IO) "
                                     "and log its two URLs for run --api-url/--ws-url.",
                         epilog=EXIT_STATUS_HELP)
    _add_sim_flags(sim)
    sim.add_argument("--host", default="127.0.0.1",
                     help="interface to listen on (default %(default)s)")
    sim.add_argument("--rest-port", type=int, default=0, metavar="PORT",
                     help="REST port (default 0: any free port)")
    sim.add_argument("--ws-port", type=int, default=0, metavar="PORT",
                     help="WebSocket port (default 0: any free port)")
    sim.add_argument("--log-level", dest="log_level", default="info",
                     choices=["debug", "info", "warning", "error"],
                     help="log threshold (default %(default)s)")
    sim.add_argument("--auth", action="store_true",
                     help="verify HMAC signatures against LIMITLESS_HMAC_TOKEN_ID/_SECRET "
                          "and serve the private channels and a partner allowance flow "
                          "(default off)")
    demo = sub.add_parser("demo", help="simulator + daemon in one process, NDJSON to stdout",
                          description="The simulator on loopback and the daemon "
                                      "(--all-markets) in one process; Ctrl-C stops both.",
                          epilog=EXIT_STATUS_HELP)
    _add_sim_flags(demo)
    _add_run_flags(demo, demo=True)
    demo.add_argument("--private", action="store_true",
                      help="also stream private channels and allowance readiness, with a "
                           "throw-away HMAC token shared by the simulator and the daemon "
                           "(default off)")
    allow = sub.add_parser("allowances", help="partner sub-account allowance readiness",
                           description="Check (and with --retry, fix) the allowances of "
                                       "partner sub-accounts; exit 0 when all are ready.",
                           epilog=f"{ENV_HELP}")
    allow.add_argument("profiles", nargs="+", type=int, metavar="PROFILE_ID",
                       help="partner sub-account profile id")
    allow.add_argument("--api-url", default=None, metavar="URL",
                       help=f"REST base URL (default {_defaults().api_url})")
    allow.add_argument("--retry", action="store_true",
                       help="run the retry flow for missing/failed targets (default off)")
    allow.add_argument("--wait", type=float, metavar="SECONDS",
                       help="keep going until all are ready or the time is up "
                            "(default: check once)")
    allow.add_argument("--json", action="store_true",
                       help="JSON instead of a table (default off)")
    rep = sub.add_parser("replay", help="replay a recording through the daemon's pipeline")
    rep.add_argument("recording", metavar="DIR", help="a --record directory or segment file")
    rep.add_argument("--run", metavar="NAME", help="which run of DIR (default: the newest)")
    pace = rep.add_mutually_exclusive_group()
    pace.add_argument("--speed", type=float, default=1.0, metavar="X",
                      help="times faster than recorded (default 1)")
    pace.add_argument("--max-speed", action="store_true",
                      help="as fast as possible (default off: recorded pace)")
    rep.add_argument("--from", dest="start", metavar="TIME",
                     help="start at the first session opened at or after TIME "
                          "(epoch ms, ISO 8601 UTC, or +SECONDS from the start; "
                          "default: the beginning)")
    rep.add_argument("--to", dest="end", metavar="TIME",
                     help="stop after TIME (default: the end of the recording)")
    rep.add_argument("--sink", dest="sinks", action="append", metavar="URL",
                     help="output (repeatable; default stdout:)")
    _add_output_flags(rep)
    tail = sub.add_parser("tail", help="read events back from a sink, rebuild books, flag gaps",
                          description="Read events back from a sink, rebuild every book, "
                                      "report seq gaps on stderr; exit 1 if a gap was seen, "
                                      "2 for a bad URL or an unreadable file.")
    tail.add_argument("url", metavar="URL",
                      help="-, PATH, file:PATH, nats://HOST:PORT/PREFIX?stream=, redis://..., "
                           "kafka://HOST:PORT/TOPIC, or a recording (DIR or segment file)")
    tail.add_argument("--decode", action="store_true",
                      help="recording: show frames decoded (Socket.IO events), not raw "
                           "(default off)")
    tail.add_argument("--run", metavar="NAME",
                      help="recording: which run (default: the newest)")
    tail.add_argument("--follow", "-f", action="store_true",
                      help="keep reading new events (default off)")
    tail.add_argument("--quiet", "-q", action="store_true",
                      help="do not echo events (default off)")
    tail.add_argument("--summary", action="store_true",
                      help="per-market summary at the end, on stdout (default off)")
    tail.add_argument("--limit", type=int, metavar="N",
                      help="stop after N events (default: no limit)")
    tail.add_argument("--from-book", action="store_true",
                      help="nats:// only: start at each market's newest book, not at the "
                           "start of retention (default off)")
    return parser


_RUN_KEYS = ("api_url", "ws_url", "markets", "all_markets", "discovery_interval_s", "sinks",
             "log_level", "shard", "log_format", "metrics_addr", "per_market_metrics",
             "private.channels", "allowances.profiles", "snapshot_interval_s", "depth",
             "lease", "record.dir")


def _overrides(ns: argparse.Namespace) -> dict[str, Any]:
    return {k: getattr(ns, k) for k in _RUN_KEYS if getattr(ns, k, None) is not None}


def _sim_config(ns: argparse.Namespace, auth: Any = None) -> Any:
    from streamer.simulator import SimulatorConfig

    try:
        return SimulatorConfig(
            auth=auth, private_rate_hz=ns.private_rate,
            seed=ns.seed, markets=ns.sim_markets, rate_hz=ns.rate, kick_every_s=ns.kick_every,
            stall_every_s=ns.stall_every, stall_for_s=ns.stall_for,
            malformed_rate=ns.malformed_rate, rest_429_rate=ns.rest_429_rate,
            rest_503_rate=ns.rest_503_rate, ping_interval_ms=ns.ping_interval_ms,
            ping_timeout_ms=ns.ping_timeout_ms,
        )
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"simulator: {exc}") from None


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    """Entry point of ``limitless-streamer`` and ``python -m streamer``."""
    ns = build_parser().parse_args(argv)
    env = os.environ if env is None else env
    try:
        if ns.command == "run":
            return _cmd_run(ns, env)
        if ns.command == "simulate":
            return _cmd_simulate(ns, env)
        if ns.command == "tail":
            return _cmd_tail(ns)
        if ns.command == "allowances":
            return _cmd_allowances(ns, env)
        if ns.command == "replay":
            return _cmd_replay(ns)
        return _cmd_demo(ns)
    except ConfigError as exc:
        sys.stderr.write(f"limitless-streamer: error: {exc}\n")
        return EXIT_USAGE


def _cmd_run(ns: argparse.Namespace, env: Mapping[str, str]) -> int:
    from streamer.config import load_credentials, load_settings
    from streamer.ops.logutil import setup_logging

    settings = load_settings(ns.config, _overrides(ns))
    credentials = load_credentials(env, settings)
    preflight_sinks(settings)
    setup_logging(settings.log_level, settings.log_format, env=env)
    logger.info("limitless-streamer %s starting: api %s, ws %s, sinks %s", __version__,
                settings.api_url, settings.ws_url, ", ".join(settings.sinks),
                extra={"url": settings.api_url, "sink": ", ".join(settings.sinks)})
    from streamer.recording.recorder import run_daemon

    return _run_guarded(lambda: run_daemon(settings, credentials))


def _cmd_simulate(ns: argparse.Namespace, env: Mapping[str, str]) -> int:
    from streamer.config import load_credentials
    from streamer.ops.logutil import setup_logging
    from streamer.partner.auth import HmacCredentials
    from streamer.simulator import Simulator
    from streamer.simulator.auth import SimulatorAuth

    auth = None
    if ns.auth:
        credentials = load_credentials(env)
        if not isinstance(credentials, HmacCredentials):
            raise ConfigError("simulate --auth: set LIMITLESS_HMAC_TOKEN_ID and "
                              "LIMITLESS_HMAC_SECRET (the credentials the simulator accepts)")
        auth = SimulatorAuth(token_id=credentials.token_id, secret=credentials.secret)
    config = _sim_config(ns, auth)
    setup_logging(ns.log_level)

    async def serve() -> None:
        sim = Simulator(config)
        async with anyio.create_task_group() as tg:
            address = await tg.start(
                partial(sim.run, host=ns.host, rest_port=ns.rest_port, ws_port=ns.ws_port)
            )
            logger.info("simulator ready: --api-url %s --ws-url %s", address.api_url,
                        address.ws_url, extra={"url": address.api_url})
            sys.stderr.flush()
            await _wait_for_stop_signal()
            tg.cancel_scope.cancel()

    return _run_guarded(serve)


def _cmd_demo(ns: argparse.Namespace) -> int:
    from streamer.config import load_settings
    from streamer.ops.logutil import setup_logging
    from streamer.recording.recorder import run_daemon
    from streamer.simulator import Simulator

    credentials, auth = _demo_credentials() if ns.private else (None, None)
    config = _sim_config(ns, auth)
    overrides = _overrides(ns)
    if ns.private:
        overrides["private.channels"] = ["order_events", "positions", "transactions"]
        overrides["allowances"] = {"profiles": [4543], "poll_interval_s": 2.0,
                                   "after_submit_s": 1.0, "conflict_wait_s": 1.0}
    # Validate before starting anything (placeholder URLs; the real ones come below).
    checked = load_settings(None, {**overrides, "all_markets": True})
    preflight_sinks(checked)
    setup_logging(checked.log_level, checked.log_format)

    async def demo() -> None:
        sim = Simulator(config)
        async with anyio.create_task_group() as tg:
            address = await tg.start(sim.run)
            logger.info("demo: simulator at %s and %s", address.api_url, address.ws_url)
            settings = load_settings(None, {"metrics_addr": "127.0.0.1:0", **overrides,
                                            "all_markets": True,
                                            "api_url": address.api_url,
                                            "ws_url": address.ws_url,
                                            "discovery_interval_s": 10.0})
            await run_daemon(settings, credentials)
            tg.cancel_scope.cancel()

    return _run_guarded(demo)


def preflight_sinks(settings: Any) -> None:
    """Startup checks of the sinks' local resources (file sinks: can the file be written?).

    A missing or read-only directory found here exits 2; the same failure later, at run
    time, is retried under the sink's policy instead.

    Raises:
        ConfigError: ``sinks: <sink>: <problem>``.
    """
    from sinks.base import SinkConfigError
    from sinks.file import FileSink

    for spec in settings.sink_specs():
        if isinstance(spec.sink, FileSink):
            try:
                spec.sink.preflight()
            except SinkConfigError as exc:
                raise ConfigError(f"sinks: {exc}") from None


def _demo_credentials() -> tuple[Any, Any]:
    """A throw-away HMAC token for ``demo --private``: the simulator checks what the daemon
    signs with it; it exists only in this process."""
    import base64
    import secrets

    from streamer.partner.auth import HmacCredentials
    from streamer.simulator.auth import SimulatorAuth

    token_id = "demo-" + secrets.token_hex(4)
    secret = base64.b64encode(secrets.token_bytes(32)).decode()
    return HmacCredentials(token_id, secret), SimulatorAuth(token_id=token_id, secret=secret)


def _cmd_allowances(ns: argparse.Namespace, env: Mapping[str, str]) -> int:
    from streamer.config import DEFAULT_API_URL, load_credentials, load_settings
    from streamer.ops.logutil import setup_logging
    from streamer.partner.allowances import allowances_command, check_allowance_credentials

    api_url = ns.api_url or DEFAULT_API_URL
    load_settings(None, {"api_url": api_url, "all_markets": True})  # validates the URL
    credentials = load_credentials(env)
    try:
        hmac = check_allowance_credentials(credentials)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    setup_logging("warning", "text", env=env)
    status = EXIT_FAILURE

    async def go() -> None:
        nonlocal status
        status = await allowances_command(api_url, ns.profiles, hmac, retry=ns.retry,
                                          wait_s=ns.wait, as_json=ns.json, out=sys.stdout)

    code = _run_guarded(go)
    return code if code != EXIT_OK else status


def _cmd_replay(ns: argparse.Namespace) -> int:
    from streamer.ops.logutil import setup_logging
    from streamer.recording.replay import replay

    if not ns.max_speed and not ns.speed > 0:
        raise ConfigError(f"--speed: must be > 0, got {ns.speed}")
    overrides = {k: getattr(ns, k) for k in ("sinks", "log_level", "log_format", "metrics_addr",
                                             "per_market_metrics")
                 if getattr(ns, k, None) is not None}
    overrides.setdefault("sinks", ["stdout:"])
    setup_logging(ns.log_level or "info", ns.log_format or "auto")

    async def go() -> None:
        try:
            await replay(ns.recording, overrides=overrides, run=ns.run,
                         speed=None if ns.max_speed else ns.speed, start=ns.start, end=ns.end,
                         handle_signals=True)
        except (FileNotFoundError, ValueError) as exc:
            raise ConfigError(f"replay: {exc}") from None

    return _run_guarded(go)


def _cmd_tail(ns: argparse.Namespace) -> int:
    from streamer.tools.tail import run_tail

    if _is_recording(ns.url):
        return _tail_recording(ns)
    status = EXIT_OK

    async def go() -> None:
        nonlocal status
        status = await run_tail(ns.url, follow=ns.follow, quiet=ns.quiet,
                                show_summary=ns.summary, limit=ns.limit,
                                from_book=ns.from_book)

    code = _run_guarded(go)
    return code if code != EXIT_OK else status


def _is_recording(url: str) -> bool:
    from streamer.recording.recorder import SUFFIX

    return url.endswith(SUFFIX) or os.path.isdir(url)


def _tail_recording(ns: argparse.Namespace) -> int:
    from streamer.recording import recorder as recording

    try:
        entries = recording.load(ns.url, ns.run)[1]
    except (FileNotFoundError, ValueError) as exc:
        raise ConfigError(f"tail: {exc}") from None
    protocols: dict[int, Any] = {}
    limit = len(entries) if ns.limit is None else ns.limit
    try:
        for entry in entries[:limit]:
            recording.format_entry(entry, sys.stdout, decode=ns.decode, protocols=protocols)
    except BrokenPipeError:
        pass
    return EXIT_OK


async def _wait_for_stop_signal() -> None:
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for _ in signals:
            return


def _run_guarded(fn: Any) -> int:
    from streamer.app import tune_process

    tune_process()
    try:
        anyio.run(fn)
    except BaseException as exc:
        return _exit_code(exc)
    return EXIT_OK


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for e in exc.exceptions for leaf in _leaves(e)]
    return [exc]


def _exit_code(exc: BaseException) -> int:
    """Map what escaped the event loop to an exit status (ConfigError wins)."""
    leaves = _leaves(exc)
    for leaf in leaves:
        if isinstance(leaf, ConfigError):
            sys.stderr.write(f"limitless-streamer: error: {leaf}\n")
            return EXIT_USAGE
    if all(isinstance(leaf, KeyboardInterrupt) for leaf in leaves):
        return EXIT_OK
    logger.critical("fatal error, exiting: %r", leaves[0], exc_info=leaves[0],
                    extra={"reason": type(leaves[0]).__name__})
    return EXIT_FAILURE
