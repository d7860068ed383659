"""The JSON Schema of the output records: ``python -m streamer.schema`` prints it.

The shipped file ``events.schema.json`` is generated from the very Structs that encode
the records (``sinks.records.Record``), then tightened where a Struct type is looser than
the contract; a test keeps the file and this generator identical. Strict where it matters
to consumers:

- ``$id`` carries the schema version; ``v`` is a constant; ``type`` is an enum with one
  definition per record type (``anyOf`` over them, so an unknown ``type`` is rejected);
- ``run`` is a non-empty string on every record; ``seq`` is at least 1;
- decimals are strings matching :data:`DECIMAL_PATTERN` (``"abc"`` is rejected);
- each type lists its required fields; ``status.state`` and ``market.event`` are enums.

Evolution (the README states it): new optional fields may appear within v1, so the
schema does not forbid unknown properties and consumers must ignore them; anything else
(a field removed, renamed, retyped or made required, a new ``type``, a new enum value)
bumps ``v`` and the ``$id``.
"""

from __future__ import annotations

import argparse
import json
from importlib import resources
from typing import Any, Final

import msgspec

from sinks.records import MARKET_EVENTS, SCHEMA_VERSION, STATUS_STATES, Record

SCHEMA_FILE = "events.schema.json"
SCHEMA_ID: Final = f"urn:limitless-streamer:events:v{SCHEMA_VERSION}"
"""A URN, not a URL: the project publishes no schema address to resolve."""
DECIMAL_PATTERN: Final = r"^-?[0-9]+(\.[0-9]+)?([eE][-+]?[0-9]+)?$"
"""A decimal as the venue writes it (``0.515``, ``120``, ``1E-7``); no NaN, no Infinity."""
_ENUMS: Final[dict[tuple[str, str], tuple[str, ...]]] = {
    ("Status", "state"): STATUS_STATES,
    ("MarketInfo", "event"): MARKET_EVENTS,
}


def _tighten(node: Any) -> Any:
    """Decimal strings get the pattern (recursively through anyOf, arrays, tuples)."""
    if isinstance(node, dict):
        if node.get("format") == "decimal":
            return {"type": "string", "pattern": DECIMAL_PATTERN}
        return {key: _tighten(value) for key, value in node.items()}
    if isinstance(node, list):
        return [_tighten(item) for item in node]
    return node


def generate() -> dict[str, Any]:
    """The schema as built from the record Structs, tightened (see the module docstring)."""
    schema = msgspec.json.schema(Record)
    defs: dict[str, Any] = schema["$defs"]
    for name in [ref["$ref"].rsplit("/", 1)[1] for ref in schema["anyOf"]]:
        definition = defs[name] = _tighten(defs[name])
        props = definition["properties"]
        props["v"] = {"const": SCHEMA_VERSION}
        props["run"] = {"type": "string", "minLength": 1,
                        "description": "the daemon run that made the record"}
        if "seq" in props:
            props["seq"] = {"type": "integer", "minimum": 1}
        for (owner, field), values in _ENUMS.items():
            if owner == name:
                default = props[field].get("default")
                props[field] = {"enum": list(values)}
                if default is not None:
                    props[field]["default"] = default
        required: list[str] = definition["required"]
        if "run" not in required:
            required.append("run")
    schema.pop("discriminator", None)  # OpenAPI only; anyOf over the types does the work
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        "title": f"limitless-streamer events, schema version {SCHEMA_VERSION}",
        "description": "One JSON object per line (NDJSON). Decimals are JSON strings "
        "holding the exact decimal text received from the venue. Within v1 new optional "
        "fields may appear: ignore unknown fields. Anything else bumps v.",
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
