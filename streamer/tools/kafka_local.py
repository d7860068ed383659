"""A throw-away single-node Apache Kafka broker (KRaft mode) for tests and benchmarks.

The jars come from Maven Central through ``scripts/fetch-kafka.sh`` (``mvn
dependency:copy-dependencies`` of ``org.apache.kafka:kafka_2.13``), once, into
:func:`kafka_home` (``$LIMITLESS_KAFKA_HOME``, else
``~/.cache/limitless-streamer/kafka-VERSION``); after that everything is offline. The broker
runs as ``java -cp 'HOME/libs/*' kafka.Kafka server.properties`` with a small heap, one node
that is both broker and controller, on loopback ports, after its storage directory was
formatted (``kafka.tools.StorageTool format``).

Nothing here is used by the daemon itself.
"""

from __future__ import annotations

import base64
import os
import shutil
import socket
import subprocess
import uuid
from pathlib import Path
from typing import Final

__all__ = [
    "KAFKA_VERSION",
    "kafka_home",
    "kafka_libs",
    "fetch_jars",
    "write_server_properties",
    "format_storage",
    "broker_argv",
    "broker_ready",
]

KAFKA_VERSION: Final = os.environ.get("LIMITLESS_KAFKA_VERSION", "4.4.0")
DEFAULT_HEAP: Final = "256m"
FETCH_SCRIPT: Final = Path(__file__).resolve().parent.parent / "scripts" / "fetch-kafka.sh"

_SERVER_PROPERTIES: Final = """\
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:{controller_port}
listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}
advertised.listeners=PLAINTEXT://127.0.0.1:{port}
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs={log_dir}
auto.create.topics.enable=false
num.partitions=1
num.network.threads=2
num.io.threads=2
background.threads=2
num.recovery.threads.per.data.dir=1
log.cleaner.enable=false
offsets.topic.replication.factor=1
offsets.topic.num.partitions=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
broker.session.timeout.ms=2000
broker.heartbeat.interval.ms=500
"""


def kafka_home() -> Path:
    """Where the jars are cached (see the module docstring)."""
    home = os.environ.get("LIMITLESS_KAFKA_HOME")
    if home:
        return Path(home)
    return Path.home() / ".cache" / "limitless-streamer" / f"kafka-{KAFKA_VERSION}"


def kafka_libs() -> Path | None:
    """The directory of jars, if they were fetched completely."""
    libs = kafka_home() / "libs"
    return libs if (libs / f".complete-{KAFKA_VERSION}").exists() else None


def fetch_jars() -> Path | None:
    """The jars, fetching them first if needed and possible (java, mvn and the script).

    Returns ``None`` when they are not there and cannot be fetched here.
    """
    libs = kafka_libs()
    if libs is not None:
        return libs
    if not (shutil.which("java") and shutil.which("mvn") and FETCH_SCRIPT.exists()):
        return None
    subprocess.run(["bash", os.fspath(FETCH_SCRIPT), os.fspath(kafka_home())], check=True,
                   stdout=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    return kafka_libs()


def write_server_properties(directory: Path, port: int, controller_port: int) -> Path:
    """A single-node KRaft configuration with its log directory under ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "server.properties"
    path.write_text(_SERVER_PROPERTIES.format(port=port, controller_port=controller_port,
                                              log_dir=directory / "data"))
    return path


def format_storage(libs: Path, properties: Path) -> None:
    """Format the KRaft storage of ``properties`` with a fresh cluster id (once per dir)."""
    cluster_id = _cluster_id()
    subprocess.run(
        ["java", "-Xmx128m", "-XX:TieredStopAtLevel=1", "-cp", f"{libs}/*",
         "kafka.tools.StorageTool", "format", "--ignore-formatted", "-t", cluster_id,
         "-c", os.fspath(properties)],
        check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
    )


def _cluster_id() -> str:
    """A random KRaft cluster id that does not start with ``-``.

    Like Kafka's own ``Uuid.randomUuid``: one id in 64 would otherwise begin with ``-`` and
    ``StorageTool`` would parse it as an option (``format`` exits 1).
    """
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not cluster_id.startswith("-"):
            return cluster_id


def broker_argv(libs: Path, properties: Path, heap: str = DEFAULT_HEAP) -> list[str]:
    """The command line of the broker (small heap, serial GC: two cores are shared)."""
    return ["java", f"-Xmx{heap}", f"-Xms{heap}", "-XX:+UseSerialGC",
            "-XX:TieredStopAtLevel=1", "-Djava.awt.headless=true", "-cp", f"{libs}/*",
            "kafka.Kafka", os.fspath(properties)]


def broker_ready(port: int) -> bool:
    """Whether the broker on ``port`` answers a metadata request naming itself.

    A raw Kafka ``Metadata`` v4 request (no client library needed): the broker accepts
    connections before it has joined its own quorum, so an open port is not enough.
    """
    request = _metadata_request()
    with socket.create_connection(("127.0.0.1", port), timeout=1.0) as sock:
        sock.sendall(request)
        size = int.from_bytes(_read(sock, 4), "big")
        body = _read(sock, size)
    # correlation id (4), throttle_time_ms (4), brokers array length (4), brokers ...
    brokers = int.from_bytes(body[8:12], "big", signed=True)
    return brokers > 0


def _metadata_request() -> bytes:
    client = b"limitless-probe"
    # api key 3 (Metadata), version 4, correlation id 1, client id
    header = ((3).to_bytes(2, "big") + (4).to_bytes(2, "big") + (1).to_bytes(4, "big")
              + len(client).to_bytes(2, "big") + client)
    # topics: null array (every topic); allow_auto_topic_creation: false
    body = (-1).to_bytes(4, "big", signed=True) + b"\x00"
    payload = header + body
    return len(payload).to_bytes(4, "big") + payload


def _read(sock: socket.socket, size: int) -> bytes:
    data = bytearray()
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionError("broker closed the connection")
        data += chunk
    return bytes(data)
