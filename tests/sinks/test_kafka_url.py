"""``kafka://`` URL parsing, headers and partitioning (no broker: the client is not started)."""

from __future__ import annotations

import re

import pytest

pytest.importorskip("aiokafka")

from sinks.base import SinkConfigError
from sinks.delivery import to_message
from sinks.kafka import KafkaConfig, KafkaSink, message_headers, partition_for
from sinks.records import SCHEMA_VERSION, Status
from sinks.url import parse_sink_url, redact_url
from tests.brokers.conftest import make_records


def kafka_config(url: str) -> KafkaConfig:
    sink = parse_sink_url(url).sink
    assert isinstance(sink, KafkaSink)
    return sink.config


def test_kafka_url_defaults() -> None:
    spec = parse_sink_url("kafka://broker-1/limitless.books")
    assert isinstance(spec.sink, KafkaSink)
    assert spec.sink.name == "kafka:broker-1:9092/limitless.books"
    assert spec.sink.spool is None
    config = spec.sink.config
    assert config.bootstrap == ("broker-1:9092",)
    assert (config.topic, config.compression, config.linger_ms, config.batch_bytes) == (
        "limitless.books", "none", 5, 2**20)
    assert (config.create, config.partitions, config.replication) == (False, 1, 1)
    assert (config.security_protocol, config.ack_timeout_s) == ("PLAINTEXT", 10.0)
    options = config.client_options()
    assert options["bootstrap_servers"] == ["broker-1:9092"]
    assert "sasl_plain_password" not in options and "ssl_context" not in options


def test_kafka_url_every_option() -> None:
    config = kafka_config(
        "kafka://alice:s%40cret@b1:9093,b2:9094,b3/md?compression=zstd&linger=0"
        "&batch_size=256KiB&create=true&partitions=6&replication=3&ack_timeout=30s"
        "&security=sasl_plaintext&sasl_mechanism=scram-sha-512")
    assert config.bootstrap == ("b1:9093", "b2:9094", "b3:9092")
    assert (config.compression, config.linger_ms, config.batch_bytes) == ("zstd", 0, 256 * 1024)
    assert (config.create, config.partitions, config.replication) == (True, 6, 3)
    assert (config.ack_timeout_s, config.security_protocol, config.sasl_mechanism) == (
        30.0, "SASL_PLAINTEXT", "SCRAM-SHA-512")
    assert (config.username, config.password) == ("alice", "s@cret")
    options = config.client_options()
    assert options["sasl_plain_password"] == "s@cret"
    assert options["request_timeout_ms"] == 30_000


def test_kafka_url_linger_interval_and_query_credentials() -> None:
    config = kafka_config("kafka://b:1/t?linger=20ms&security=sasl_plaintext"
                          "&sasl_username=bob&sasl_password=pw")
    assert (config.linger_ms, config.username, config.password) == (20, "bob", "pw")


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("kafka:///topic", "needs a broker"),
        ("kafka://b:9092/", "topic ''"),
        ("kafka://b:9092/a/b", "topic 'a/b'"),
        ("kafka://b:notaport/t", "use host:port"),
        ("kafka://b/t?compression=brotli", "compression 'brotli' is not one of none, gzip"),
        ("kafka://b/t?security=tls", "security 'TLS' is not one of plaintext, ssl"),
        ("kafka://b/t?sasl_mechanism=GSSAPI", "sasl_mechanism 'GSSAPI'"),
        ("kafka://b/t?security=sasl_ssl", "needs a user and password"),
        ("kafka://b/t?partitions=0", "option 'partitions': must be >= 1"),
        ("kafka://b/t?create=maybe", "option 'create': 'maybe' is not true or false"),
        ("kafka://b/t?batch_size=lots", "option 'batch_size'"),
        ("kafka://b/t?acks=1", "unknown option 'acks' for kafka:"),
    ],
)
def test_kafka_url_rejects(url: str, message: str) -> None:
    with pytest.raises(SinkConfigError, match=re.escape(message)) as info:
        parse_sink_url(url)
    assert "\n" not in str(info.value)


def test_kafka_secrets_are_redacted() -> None:
    url = ("kafka://alice:hunter2@b:9092/t?security=sasl_ssl&sasl_password=hunter3"
           "&ssl_password=hunter4&compression=brotli")
    with pytest.raises(SinkConfigError) as info:
        parse_sink_url(url)
    for secret in ("hunter2", "hunter3", "hunter4"):
        assert secret not in str(info.value)
        assert secret not in redact_url(url)
    sink = parse_sink_url(url.replace("&compression=brotli", "")).sink
    assert "hunter" not in sink.name and "hunter" not in repr(sink)


def test_partition_for_matches_kafkas_default_partitioner() -> None:
    from aiokafka.partitioner import DefaultPartitioner  # a port of the Java client's

    assert partition_for(None, 6) == 0
    assert len({partition_for(f"market-{i}".encode(), 6) for i in range(50)}) == 6
    for key in (b"a", b"market-0", b"btc-above-100k", "ünïcode".encode()):
        for n in (1, 3, 7, 12):
            assert partition_for(key, n) == DefaultPartitioner()(key, list(range(n)), None)


def test_message_headers_carry_type_seq_id_and_run() -> None:
    book = make_records(1, 1)[0]
    message = to_message(book, lambda kind, market: "t")
    headers = dict(message_headers(message))
    assert headers == {"type": b"book", "seq": b"1", "id": message.msg_id.encode()}
    status = to_message(Status(v=SCHEMA_VERSION, state="connected", recv_ts=1),
                        lambda kind, market: "t")
    assert [key for key, _ in message_headers(status)] == ["type", "id"]
    # a record that carries a run (issue 9) passes it on
    tagged = type(message)(message.route, message.msg_id, message.kind, message.market,
                           message.seq, message.data[:-1] + b',"run":"0193-abc"}')
    assert dict(message_headers(tagged))["run"] == b"0193-abc"
    odd = type(message)(message.route, message.msg_id, message.kind, message.market,
                        message.seq, message.data[:-1] + b',"run":7}')
    assert "run" not in dict(message_headers(odd))

