from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal

import anyio
import anyio.lowlevel
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orderbook.book import OrderBook
from orderbook.replay import Replayer
from sinks.base import SinkConfigError
from sinks.fanout import Fanout, OverflowPolicy, SinkSpec
from sinks.memory import MemorySink
from sinks.records import SCHEMA_VERSION, Book, BookDelta, Record, Status
from sinks.url import parse_sink_url

pytestmark = pytest.mark.anyio


class FakeDaemon:
    """Per-market books and seqs, like the feed: every record it makes takes the next seq."""

    def __init__(self) -> None:
        self.books: dict[str, OrderBook] = {}
        self.seq: dict[str, int] = {}
        self.ticks = 0
        self.snapshot_calls: list[str] = []

    def _next_seq(self, market: str) -> int:
        self.seq[market] = self.seq.get(market, 0) + 1
        return self.seq[market]

    def seed(self, market: str) -> Book:
        self.books[market] = OrderBook()
        self.books[market].apply_delta([("0.40", "10")], [("0.60", "10")])
        return self._book(market)

    def delta(self, market: str) -> BookDelta:
        self.ticks += 1
        level = (str(Decimal(self.ticks % 30 + 1).scaleb(-2)), str(self.ticks % 4))
        self.books[market].apply_delta([level], [])
        return BookDelta(v=SCHEMA_VERSION, market=market, token="1",
                         seq=self._next_seq(market), ts=self.ticks, recv_ts=self.ticks,
                         best_bid=None, best_ask=None, bids=[level], asks=[])

    def snapshot(self, market: str) -> Book | None:
        """The Fanout's snapshot source: the current book with the market's next seq."""
        self.snapshot_calls.append(market)
        return self._book(market) if market in self.books else None

    def _book(self, market: str) -> Book:
        bids, asks = self.books[market].levels()
        return Book(v=SCHEMA_VERSION, market=market, token="1", seq=self._next_seq(market),
                    ts=self.ticks, recv_ts=self.ticks, best_bid=None, best_ask=None,
                    bids=bids, asks=asks)


class StepSink:
    """A slow sink: each write waits for a permit the test hands out."""

    def __init__(self, name: str = "slow") -> None:
        self.name = name
        self.records: list[Record] = []
        self.permits = 0
        self.entered = anyio.Event()
        self._granted = anyio.Event()

    async def open(self) -> None:
        pass

    async def write(self, batch: Sequence[Record]) -> None:
        self.entered.set()
        while not self.permits:
            await self._granted.wait()
            self._granted = anyio.Event()
        self.permits -= 1
        self.records.extend(batch)

    def allow(self, writes: int) -> None:
        self.permits += writes
        self._granted.set()

    async def aclose(self) -> None:
        pass


def status(i: int) -> Status:
    return Status(v=SCHEMA_VERSION, state="connected", recv_ts=i)


def describe(records: Sequence[Record]) -> list[tuple[str, str | None, int]]:
    """(type, market, seq) of book records, (status, None, recv_ts) of statuses."""
    out: list[tuple[str, str | None, int]] = []
    for record in records:
        if isinstance(record, Book | BookDelta):
            out.append((type(record).__name__, record.market, record.seq))
        else:
            assert isinstance(record, Status)
            out.append(("Status", None, record.recv_ts))
    return out


def replay(records: Sequence[Record]) -> Replayer:
    """Replay the book records; every gap must be revealed by (and closed with) a Book."""
    replayer = Replayer()
    for record in records:
        if isinstance(record, Book | BookDelta):
            gap = replayer.apply(record)
            assert gap is None or isinstance(record, Book), f"gap closed by a delta: {gap}"
    return replayer


def assert_books_match(replayer: Replayer, daemon: FakeDaemon) -> None:
    for market, book in daemon.books.items():
        rebuilt = replayer.book(market)
        assert rebuilt is not None, f"{market} is not in sync"
        assert rebuilt.levels() == book.levels(), market


async def test_conflate_slow_sink_gets_latest_book_per_market_after_catching_up() -> None:
    daemon = FakeDaemon()
    slow, fast = StepSink(), MemorySink("fast")
    fanout = Fanout([SinkSpec(slow, policy=OverflowPolicy.CONFLATE, queue_size=4, batch_max=2),
                     SinkSpec(fast)], snapshot_source=daemon.snapshot)
    async with anyio.create_task_group() as tg:
        await tg.start(fanout.run)
        fanout.publish_nowait(daemon.seed("a"))
        with anyio.fail_after(5):
            await slow.entered.wait()  # a@1 is in flight, the queue is empty
        queued: list[Record] = [daemon.seed("b"), daemon.seed("c"), daemon.delta("a"),
                                daemon.delta("b")]
        for record in queued:
            fanout.publish_nowait(record)  # the queue is now full (4)
        fanout.publish_nowait(daemon.delta("a"))  # a@3: conflates a (a@2 queued, a@3)
        fanout.publish_nowait(daemon.delta("c"))  # room again: queued
        fanout.publish_nowait(daemon.delta("a"))  # a is dirty: conflated on arrival
        fanout.publish_nowait(status(7))  # full: conflates b, the oldest queued market
        stats = fanout.stats["slow"]
        assert (stats.conflated, stats.dropped, stats.depth) == (5, 0, 3)
        assert daemon.snapshot_calls == []
        slow.allow(10)
        with anyio.fail_after(5):
            await fast.wait_for(11)
        fanout.close()
    assert describe(slow.records) == [
        ("Book", "a", 1), ("Book", "c", 1), ("BookDelta", "c", 2),
        ("Book", "a", 5), ("Book", "b", 3),  # snapshots once at low water, before the rest
        ("Status", None, 7),
    ]
    assert daemon.snapshot_calls == ["a", "b"]
    assert (stats.conflated, stats.snapshots, stats.written, stats.dropped) == (5, 2, 6, 0)
    slow_replay = replay(slow.records)
    assert [(gap.market, gap.expected, gap.got) for gap in slow_replay.gaps] == [("a", 2, 5)]
    assert_books_match(slow_replay, daemon)
    # The other sink got every record plus the snapshots, so its seqs have no hole.
    assert describe(fast.records)[-2:] == [("Book", "a", 5), ("Book", "b", 3)]
    fast_replay = replay(fast.records)
    assert (fast_replay.gaps, fast_replay.duplicates) == ([], 0)
    assert_books_match(fast_replay, daemon)
    assert fanout.stats["fast"].dropped == 0


async def test_conflate_full_of_non_book_records_drops_oldest_non_book() -> None:
    daemon = FakeDaemon()
    slow = StepSink()
    fanout = Fanout([SinkSpec(slow, policy=OverflowPolicy.CONFLATE, queue_size=2)],
                    snapshot_source=daemon.snapshot)
    async with anyio.create_task_group() as tg:
        await tg.start(fanout.run)
        fanout.publish_nowait(status(0))
        with anyio.fail_after(5):
            await slow.entered.wait()
        for i in range(1, 5):
            fanout.publish_nowait(status(i))
        stats = fanout.stats["slow"]
        assert (stats.dropped, stats.conflated, stats.depth) == (2, 0, 2)
        slow.allow(10)
        fanout.close()
    assert describe(slow.records) == [("Status", None, i) for i in (0, 3, 4)]
    assert daemon.snapshot_calls == []


async def test_conflate_market_without_book_gets_no_snapshot() -> None:
    daemon = FakeDaemon()
    slow = StepSink()
    fanout = Fanout([SinkSpec(slow, policy=OverflowPolicy.CONFLATE, queue_size=1)],
                    snapshot_source=lambda market: (daemon.snapshot(market)
                                                    if market == "a" else None))
    async with anyio.create_task_group() as tg:
        await tg.start(fanout.run)
        fanout.publish_nowait(status(0))
        with anyio.fail_after(5):
            await slow.entered.wait()
        fanout.publish_nowait(status(1))
        fanout.publish_nowait(daemon.seed("gone"))  # full: conflated, "gone" is dirty
        slow.allow(10)
        fanout.close()
    assert describe(slow.records) == [("Status", None, 0), ("Status", None, 1)]
    stats = fanout.stats["slow"]
    assert (stats.conflated, stats.snapshots, stats.dropped) == (1, 0, 0)


async def test_conflate_drain_at_shutdown_writes_pending_snapshots() -> None:
    daemon = FakeDaemon()
    slow = StepSink()
    fanout = Fanout([SinkSpec(slow, policy=OverflowPolicy.CONFLATE, queue_size=1)],
                    snapshot_source=daemon.snapshot)
    async with anyio.create_task_group() as tg:
        await tg.start(fanout.run)
        fanout.publish_nowait(daemon.seed("a"))
        with anyio.fail_after(5):
            await slow.entered.wait()
        fanout.publish_nowait(daemon.delta("a"))
        for _ in range(5):
            fanout.publish_nowait(daemon.delta("a"))
        fanout.close()  # shutdown with "a" dirty: the drain still sends its snapshot
        slow.allow(10)
    assert describe(slow.records) == [("Book", "a", 1), ("Book", "a", 8)]
    assert_books_match(replay(slow.records), daemon)


def test_conflate_without_snapshot_source_is_a_config_error() -> None:
    with pytest.raises(SinkConfigError, match="snapshot source"):
        Fanout([SinkSpec(MemorySink(), policy=OverflowPolicy.CONFLATE)])


def test_conflate_is_accepted_by_spec_and_url() -> None:
    spec = SinkSpec(MemorySink(), policy="conflate")  # type: ignore[arg-type]
    assert spec.policy is OverflowPolicy.CONFLATE
    assert parse_sink_url("stdout:?policy=conflate").policy is OverflowPolicy.CONFLATE


# An operation: ("delta", market index) | ("status", 0) | ("step", writes allowed).
OPS = st.lists(
    st.one_of(
        st.tuples(st.just("delta"), st.integers(0, 3)),
        st.tuples(st.just("status"), st.just(0)),
        st.tuples(st.just("step"), st.integers(0, 3)),
    ),
    max_size=80,
)


@settings(max_examples=300, deadline=None)
@given(ops=OPS, queue_size=st.integers(1, 6), batch_max=st.integers(1, 4))
async def test_conflate_consumer_can_always_rebuild(
    ops: list[tuple[str, int]], queue_size: int, batch_max: int
) -> None:
    daemon = FakeDaemon()
    slow, fast = StepSink(), MemorySink("fast")
    fanout = Fanout([SinkSpec(slow, policy=OverflowPolicy.CONFLATE, queue_size=queue_size,
                              batch_max=batch_max), SinkSpec(fast)],
                    snapshot_source=daemon.snapshot)
    markets = [f"m{i}" for i in range(4)]
    published = 0
    statuses = 0
    async with anyio.create_task_group() as tg:
        await tg.start(fanout.run)
        for market in markets:
            fanout.publish_nowait(daemon.seed(market))
            published += 1
        for op, arg in ops:
            if op == "delta":
                fanout.publish_nowait(daemon.delta(markets[arg]))
                published += 1
            elif op == "status":
                statuses += 1
                fanout.publish_nowait(status(statuses))
                published += 1
            else:
                slow.allow(arg)
                for _ in range(4 * arg):  # some progress; the asserts hold for any amount
                    await anyio.lowlevel.checkpoint()
            assert fanout.stats["slow"].depth <= queue_size
        slow.allow(10**6)
        await fanout.wait_ready()
        with anyio.fail_after(5):
            await fast.wait_for(published)
        fanout.close()
    stats = fanout.stats["slow"]
    slow_replay = replay(slow.records)
    assert slow_replay.duplicates == 0
    assert_books_match(slow_replay, daemon)
    fast_replay = replay(fast.records)
    assert (fast_replay.gaps, fast_replay.duplicates) == ([], 0)
    assert_books_match(fast_replay, daemon)
    got_statuses = [r.recv_ts for r in slow.records if isinstance(r, Status)]
    assert got_statuses == sorted(got_statuses)
    assert statuses - len(got_statuses) == stats.dropped
    assert stats.written == len(slow.records)
    assert stats.snapshots == len(daemon.snapshot_calls)
