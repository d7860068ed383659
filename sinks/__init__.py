"""Outputs of the daemon: the :class:`Sink` seam, the built-in sinks and the bounded fan-out.

Records and their encoder live in :mod:`sinks.records`. ``NatsJetStreamSink`` and
``RedisStreamSink`` are imported on first attribute access (and left out of ``__all__``),
since nats-py and redis are optional.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sinks.base import (
    Sink,
    SinkClosed,
    SinkConfigError,
    SinkError,
    SinkRejected,
    SinkUnavailable,
)
from sinks.delivery import DeliveryStats, SpooledSink
from sinks.fanout import (
    Fanout,
    OnError,
    OverflowPolicy,
    SinkSpec,
    SinkState,
    SinkStats,
    SnapshotSource,
)
from sinks.file import FileSink
from sinks.memory import MemorySink
from sinks.spool import Spool
from sinks.stdout import StdoutSink
from sinks.url import SCHEMES, parse_sink_url, register_scheme

if TYPE_CHECKING:
    from sinks.nats import NatsJetStreamSink as NatsJetStreamSink
    from sinks.redis import RedisStreamSink as RedisStreamSink

__all__ = [
    "Sink",
    "SinkError",
    "SinkUnavailable",
    "SinkRejected",
    "SinkClosed",
    "SinkConfigError",
    "Fanout",
    "OnError",
    "OverflowPolicy",
    "SinkSpec",
    "SinkState",
    "SinkStats",
    "SnapshotSource",
    "FileSink",
    "MemorySink",
    "StdoutSink",
    "Spool",
    "SpooledSink",
    "DeliveryStats",
    "SCHEMES",
    "parse_sink_url",
    "register_scheme",
]


def __getattr__(name: str) -> Any:
    if name == "NatsJetStreamSink":
        from sinks.nats import NatsJetStreamSink

        return NatsJetStreamSink
    if name == "RedisStreamSink":
        from sinks.redis import RedisStreamSink

        return RedisStreamSink
    raise AttributeError(f"module 'sinks' has no attribute {name!r}")
