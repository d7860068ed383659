"""The shipped JSON Schema: strict where consumers depend on it, open to optional fields."""

from __future__ import annotations

import json
from decimal import Decimal as D
from typing import Any

import jsonschema
import pytest

from orderbook.types import SCHEMA_VERSION, Book, BookDelta
from sinks.records import MarketInfo, Record, Status, encode
from streamer.schema import SCHEMA_ID, generate, shipped

VALIDATOR = jsonschema.Draft202012Validator(json.loads(shipped()))


def valid(obj: dict[str, Any]) -> bool:
    return VALIDATOR.is_valid(obj)


def as_json(record: Record) -> dict[str, Any]:
    out: dict[str, Any] = json.loads(encode(record))
    return out


BOOK = Book(SCHEMA_VERSION, "m", "123", 1, 1000, 1001, D("0.51"), D("0.515"),
            [(D("0.51"), D("10"))], [(D("0.515"), D("1E-7"))], "r1")
DELTA = BookDelta(SCHEMA_VERSION, "m", "123", 2, 1000, 1001, None, D("0.515"),
                  [(D("0.51"), D("0"))], [], "r1")
STATUS = Status(v=SCHEMA_VERSION, state="connected", recv_ts=5, run="r1")
MARKET = MarketInfo(v=SCHEMA_VERSION, market="m", recv_ts=1, title="t", token="1",
                    tokens={"yes": "1"}, exchange=None, adapter=None, status=None,
                    expiration=None, run="r1")


def test_the_schema_is_strict_and_versioned() -> None:
    schema = generate()
    assert schema["$id"] == SCHEMA_ID == "urn:limitless-streamer:events:v1"
    jsonschema.Draft202012Validator.check_schema(schema)
    for record in (BOOK, DELTA, STATUS, MARKET):
        assert valid(as_json(record)), record


@pytest.mark.parametrize(("record", "field", "value"), [
    (BOOK, "best_bid", "abc"),
    (BOOK, "best_ask", "NaN"),
    (BOOK, "seq", 0),
    (DELTA, "seq", -3),
    (BOOK, "v", 2),
    (STATUS, "v", 2),
    (BOOK, "type", "bookz"),
    (STATUS, "type", "nonsense"),
    (BOOK, "run", ""),
    (STATUS, "state", "sleeping"),
    (MARKET, "event", "deleted"),
    (DELTA, "bids", [["0.5"]]),
    (DELTA, "asks", [["0.5", "1,5"]]),
    (BOOK, "ts", "1000"),
])
def test_mutated_records_are_rejected(record: Record, field: str, value: object) -> None:
    obj = as_json(record)
    obj[field] = value
    assert not valid(obj)


@pytest.mark.parametrize(("record", "field"), [
    (BOOK, "market"), (BOOK, "run"), (DELTA, "seq"), (STATUS, "state"), (MARKET, "run"),
    (BOOK, "type"),
])
def test_records_missing_a_required_field_are_rejected(record: Record, field: str) -> None:
    obj = as_json(record)
    del obj[field]
    assert not valid(obj)


def test_unknown_optional_fields_are_allowed_within_v1() -> None:
    obj = as_json(BOOK)
    obj["some_future_field"] = {"x": 1}
    assert valid(obj)
