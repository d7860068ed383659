"""Outputs of the daemon: the :class:`Sink` seam, the built-in sinks and the bounded fan-out.

Records and their encoder live in :mod:`sinks.records`.
"""

from __future__ import annotations

from sinks.base import (
    Sink,
    SinkClosed,
    SinkConfigError,
    SinkError,
    SinkRejected,
    SinkUnavailable,
)
from sinks.fanout import Fanout, OnError, OverflowPolicy, SinkSpec, SinkState, SinkStats
from sinks.file import FileSink
from sinks.memory import MemorySink
from sinks.stdout import StdoutSink
from sinks.url import SCHEMES, parse_sink_url, register_scheme

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
    "FileSink",
    "MemorySink",
    "StdoutSink",
    "SCHEMES",
    "parse_sink_url",
    "register_scheme",
]
