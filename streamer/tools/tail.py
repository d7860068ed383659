"""``limitless-streamer tail URL``: read records back from a sink, rebuild books, flag gaps.

Sources: ``-`` (stdin NDJSON), ``file:PATH`` or a bare ``PATH`` (NDJSON; ``--follow`` keeps
reading as the file grows), ``nats://HOST:PORT/PREFIX?stream=NAME`` (a JetStream stream, from
its first message), ``redis://HOST:PORT/DB?stream=KEY`` (a Redis stream, or with
``per_market=true`` every ``KEY:*`` stream) and ``kafka://HOST:PORT/TOPIC`` (every partition
of a Kafka topic from its first offset; each market's records are in one partition, in
order).

Every record read is checked: book records go through :class:`orderbook.replay.Replayer`
(a gap in a market's ``seq`` within a run is reported on stderr the moment it is seen; the
market is rebuilt again from its next ``book``; a new run, i.e. a daemon restart or a
failover, is reported as a restart and the market is rebuilt from that run's ``book``).
Records are echoed to stdout as NDJSON unless ``--quiet``; ``--summary`` prints one line
per market at the end, to stdout (so ``> report.txt`` keeps it). Exit status: 0 when no
gap was seen, 1 otherwise, 2 for a bad URL or a file that cannot be read (one line on
stderr).
"""

from __future__ import annotations

import os
import stat
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import TextIO

import anyio
import msgspec

from orderbook.replay import Gap, Replayer
from orderbook.types import Book, BookDelta
from sinks.records import Record, decode_record
from streamer.errors import ConfigError


@dataclass
class TailReport:
    """What a tail saw."""

    records: int = 0
    undecodable: int = 0
    gaps: list[Gap] = field(default_factory=list)
    replayer: Replayer = field(default_factory=Replayer)


async def tail(
    lines: AsyncIterator[bytes],
    *,
    out: TextIO | None,
    err: TextIO,
    limit: int | None = None,
) -> TailReport:
    """Consume NDJSON lines: decode, replay book records, report gaps as they appear."""
    report = TailReport()
    async for line in lines:
        if not line.strip():
            continue
        try:
            record: Record = decode_record(line)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            report.undecodable += 1
            err.write(f"tail: undecodable line skipped: {exc}\n")
            continue
        report.records += 1
        if isinstance(record, Book | BookDelta):
            replayer = report.replayer
            restarts = len(replayer.restarts)
            gap = replayer.apply(record)
            if len(replayer.restarts) > restarts:
                restart = replayer.restarts[-1]
                err.write(f"tail: RESTART of {restart.market}: run {restart.old_run} -> "
                          f"{restart.new_run}, rebuilding from its book\n")
            if gap is not None:
                report.gaps.append(gap)
                err.write(f"tail: GAP in {gap.market}: expected seq {gap.expected}, "
                          f"got {gap.got} ({gap.got - gap.expected} missing)\n")
        if out is not None:
            out.write(line.decode("utf-8").rstrip("\n") + "\n")
        if limit is not None and report.records >= limit:
            break
    return report


def summary(report: TailReport) -> str:
    """One line per market: seq reached, sync state, top of book, depth."""
    replayer = report.replayer
    rows = [f"{report.records} records, {len(report.gaps)} gaps, "
            f"{replayer.duplicates} duplicates, {report.undecodable} undecodable, "
            f"{len(replayer.runs)} runs, {len(replayer.restarts)} market restarts, "
            f"{replayer.stale_runs} records of superseded runs ignored"]
    for market, state in sorted(replayer.markets.items()):
        book = state.book
        rows.append(f"{market}: run {state.run}, seq {state.next_seq - 1}, "
                    f"{'in sync' if state.synced else 'OUT OF SYNC'}, "
                    f"bid {book.best_bid()} ask {book.best_ask()}, "
                    f"{book.n_bids}x{book.n_asks} levels")
    return "\n".join(rows) + "\n"


async def _stdin_lines() -> AsyncIterator[bytes]:
    stream = anyio.wrap_file(sys.stdin.buffer)
    async for line in stream:
        yield line


async def file_lines(path: str, *, follow: bool = False,
                     poll_s: float = 0.2) -> AsyncIterator[bytes]:
    """Lines of an NDJSON file; with ``follow``, keep reading as it grows (whole lines)."""
    async with await anyio.open_file(path, "rb") as f:
        pending = b""
        while True:
            chunk = await f.read(1 << 16)
            if not chunk:
                if not follow:
                    return
                await anyio.sleep(poll_s)
                continue
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for line in lines:
                yield line


def open_source(url: str, *, follow: bool = False,
                from_book: bool = False) -> AsyncIterator[bytes]:
    """The line source for a sink URL.

    Raises:
        ConfigError: unknown scheme, or ``from_book`` without a ``nats://`` URL.
    """
    if from_book and not url.startswith("nats://"):
        raise ConfigError("tail: --from-book needs a nats:// URL (JetStream)")
    if url == "-":
        return _stdin_lines()
    if url.startswith(("nats://", "redis://", "kafka://")):
        from streamer.tools import tail_brokers

        return tail_brokers.open_broker_source(url, follow=follow, from_book=from_book)
    if url.startswith("file:"):
        path = url.removeprefix("file:")
        path = path.removeprefix("//") if path.startswith("///") else path
        path = path.split("?", 1)[0]
    elif "://" in url:
        raise ConfigError(f"tail: unsupported URL {url!r} (use -, PATH, file:PATH, "
                          "nats://, redis:// or kafka://)")
    else:
        path = url  # a bare path
    _check_readable(path)
    return file_lines(path, follow=follow)


def _check_readable(path: str) -> None:
    """Fail fast, in one line, on a file that is not there or cannot be read.

    Only ``stat``/``access``: opening a FIFO here would block until a writer comes.
    """
    try:
        mode = os.stat(path).st_mode
    except OSError as exc:
        raise ConfigError(f"tail: cannot read {path}: {exc.strerror or exc}") from None
    if stat.S_ISDIR(mode):
        raise ConfigError(f"tail: {path} is a directory, not an NDJSON file")
    if not os.access(path, os.R_OK):
        raise ConfigError(f"tail: cannot read {path}: permission denied")


async def run_tail(url: str, *, follow: bool, quiet: bool, show_summary: bool,
                   limit: int | None, from_book: bool = False) -> int:
    """The ``tail`` command; returns the exit status."""
    source = open_source(url, follow=follow, from_book=from_book)
    try:
        report = await tail(source, out=None if quiet else sys.stdout, err=sys.stderr,
                            limit=limit)
        if show_summary:
            sys.stdout.write(summary(report))
            sys.stdout.flush()
    except BrokenPipeError:  # the reader went away (`| head`): done, like the daemon
        _silence_stdout()
        return 0
    return 1 if report.gaps else 0


def _silence_stdout() -> None:
    """Point fd 1 at /dev/null so the interpreter's final flush does not fail again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, sys.stdout.fileno())
    finally:
        os.close(devnull)
