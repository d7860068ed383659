"""The JSON Schema of the output records: ``python -m streamer.schema`` prints it.

The shipped file ``events.schema.json`` is generated from the very Structs that encode
the records (``sinks.records.Record``); a test keeps the two identical.
"""

from __future__ import annotations

import argparse
import json
from importlib import resources
from typing import Any

import msgspec

from sinks.records import SCHEMA_VERSION, Record

SCHEMA_FILE = "events.schema.json"


def generate() -> dict[str, Any]:
    """The schema as built from the record Structs."""
    schema = msgspec.json.schema(Record)
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": f"limitless-streamer events, schema version {SCHEMA_VERSION}",
        "description": "One JSON object per line (NDJSON). Decimals are JSON strings "
        "holding the exact decimal text received from the venue.",
        **schema,
    }


def render() -> str:
    """The schema as the text of the shipped file."""
    return json.dumps(generate(), indent=2, sort_keys=True) + "\n"


def shipped() -> str:
    """The text of the schema file shipped in the package."""
    return resources.files(__name__).joinpath(SCHEMA_FILE).read_text(encoding="utf-8")


def build_parser() -> argparse.ArgumentParser:
    """The flags of ``python -m streamer.schema`` (only ``--help``)."""
    return argparse.ArgumentParser(
        prog="python -m streamer.schema",
        description="Print the JSON Schema (draft 2020-12) of the NDJSON events on stdout; "
        f"the same text as the shipped streamer/schema/{SCHEMA_FILE}.",
    )
