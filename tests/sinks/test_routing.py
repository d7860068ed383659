"""Per-sink routing: ``types=`` and ``markets=`` on sink URLs, applied by the fan-out."""

from __future__ import annotations

import re

import anyio
import pytest

from sinks.base import SinkConfigError
from sinks.fanout import Fanout, OverflowPolicy, SinkSpec
from sinks.memory import MemorySink
from sinks.records import RECORD_TYPES, SCHEMA_VERSION, Record, Status, record_type
from sinks.routing import Route
from sinks.url import parse_sink_url
from tests.brokers.conftest import make_records
from tests.sinks.test_conflate import FakeDaemon, StepSink, describe


def feed() -> list[Record]:
    records = make_records(markets=4, per_market=5)
    records.append(Status(v=SCHEMA_VERSION, state="connected", recv_ts=1))
    records.append(Status(v=SCHEMA_VERSION, state="divergence", recv_ts=2, market="market-1"))
    return records


def test_route_by_type_and_market_glob() -> None:
    records = feed()
    books = Route.parse("book,book_delta", None)
    assert books is not None
    assert [r for r in records if books.accepts(r)] == [
        r for r in records if record_type(r) in ("book", "book_delta")]
    some = Route.parse(None, "market-1, market-[23]")
    assert some is not None
    kept = [r for r in records if some.accepts(r)]
    assert {getattr(r, "market", None) for r in kept} == {None, "market-1", "market-2",
                                                          "market-3"}
    assert Route.parse(None, None) is None
    both = Route.parse("status", "market-1")
    assert both is not None
    assert [r for r in records if both.accepts(r)] == records[-2:]


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("types=book,trades", "types: unknown record type trades; known: book, book_delta"),
        ("types=", "types: unknown record type ''"),
        ("markets=", "markets: an empty pattern"),
        ("markets=btc-*,", "markets: an empty pattern"),
    ],
)
def test_routing_options_are_checked(query: str, message: str) -> None:
    with pytest.raises(SinkConfigError, match=re.escape(message)) as info:
        parse_sink_url(f"stdout:?{query}")
    assert "\n" not in str(info.value)


def test_every_scheme_takes_routing_options(tmp_path: object) -> None:
    for url in ("stdout:?types=status", f"file:{tmp_path}/x.ndjson?markets=btc-*&types=book"):
        assert parse_sink_url(url).route is not None
    assert parse_sink_url("stdout:").route is None
    assert set(RECORD_TYPES) >= {"book", "book_delta", "status"}


@pytest.mark.anyio
async def test_fanout_routes_each_record_to_the_sinks_that_want_it() -> None:
    records = feed()
    books, statuses, everything = MemorySink("books"), MemorySink("statuses"), MemorySink("all")
    fanout = Fanout([
        SinkSpec(books, route=Route.parse("book,book_delta", "market-[01]")),
        SinkSpec(statuses, route=Route.parse("status", None)),
        SinkSpec(everything),
    ])
    async with anyio.create_task_group() as tg:
        await tg.start(fanout.run)
        for record in records[:10]:
            await fanout.publish(record)
        for record in records[10:]:
            await fanout.wait_ready()
            assert fanout.publish_nowait(record)
        fanout.close()
    assert everything.records == records
    assert books.records == [r for r in records if getattr(r, "market", None)
                             in ("market-0", "market-1") and record_type(r) != "status"]
    assert statuses.records == [r for r in records if isinstance(r, Status)]
    assert fanout.stats["books"].enqueued == len(books.records)


@pytest.mark.anyio
async def test_conflation_snapshots_follow_the_other_sinks_routes() -> None:
    """A conflating sink's fresh ``book`` goes to every other sink whose route takes it."""
    daemon = FakeDaemon()
    slow, only_b, statuses = StepSink(), MemorySink("only-b"), MemorySink("statuses")
    fanout = Fanout([SinkSpec(slow, policy=OverflowPolicy.CONFLATE, queue_size=2, batch_max=1),
                     SinkSpec(only_b, route=Route.parse(None, "b")),
                     SinkSpec(statuses, route=Route.parse("status", None))],
                    snapshot_source=daemon.snapshot)
    async with anyio.create_task_group() as tg:
        await tg.start(fanout.run)
        fanout.publish_nowait(daemon.seed("a"))
        with anyio.fail_after(5):
            await slow.entered.wait()
        for record in (daemon.seed("b"), daemon.delta("a"), daemon.delta("a"),
                       daemon.delta("b"), daemon.delta("b")):
            fanout.publish_nowait(record)  # the queue (2) overflows: a, then b conflate
        assert fanout.stats["slow"].conflated > 0
        slow.allow(20)
        with anyio.fail_after(5):
            while fanout.stats["slow"].snapshots < 2 or fanout.stats["slow"].depth:
                await anyio.sleep(0.01)
        fanout.close()
    assert sorted(daemon.snapshot_calls) == ["a", "b"]
    assert {(type(r).__name__, getattr(r, "market", None)) for r in slow.records} >= {
        ("Book", "a"), ("Book", "b")}
    assert {getattr(r, "market", None) for r in only_b.records} == {"b"}
    assert describe(only_b.records)[-1][0] == "Book"  # b's snapshot reached it, a's did not
    assert statuses.records == []
