from __future__ import annotations

import itertools
import logging
from collections.abc import Iterator, Sequence

import anyio
import pytest

from sinks.base import SinkClosed, SinkConfigError, SinkRejected
from sinks.fanout import Fanout, OverflowPolicy, SinkSpec, SinkState
from sinks.gate import PublishGate
from sinks.memory import MemorySink
from sinks.records import SCHEMA_VERSION, Record, Status

pytestmark = pytest.mark.anyio


def status(i: int) -> Status:
    return Status(v=SCHEMA_VERSION, state="connected", recv_ts=i)


def statuses(n: int, start: int = 0) -> list[Record]:
    return [status(i) for i in range(start, start + n)]


def no_delay() -> Iterator[float]:
    return itertools.repeat(0.0)


class GatedSink:
    """A slow sink: every write waits until the test opens the gate."""

    def __init__(self, name: str = "gated") -> None:
        self.name = name
        self.records: list[Record] = []
        self.entered = anyio.Event()
        self.gate = anyio.Event()
        self.closed = False

    async def open(self) -> None:
        pass

    async def write(self, batch: Sequence[Record]) -> None:
        self.entered.set()
        await self.gate.wait()
        self.records.extend(batch)

    async def aclose(self) -> None:
        self.closed = True


class ScriptedSink(MemorySink):
    """Raises the given errors on successive writes, then stores."""

    def __init__(self, name: str, errors: list[Exception]) -> None:
        super().__init__(name)
        self.errors = errors

    async def write(self, batch: Sequence[Record]) -> None:
        if self.errors:
            raise self.errors.pop(0)
        await super().write(batch)


async def test_fanout_memory_sink_receives_everything_in_order() -> None:
    sink = MemorySink()
    fanout = Fanout([SinkSpec(sink, batch_max=64)])
    async with anyio.create_task_group() as tg:
        await tg.start(fanout.run)
        assert sink.opened
        for record in statuses(1000):
            await fanout.publish(record)
        fanout.close()
    assert sink.records == statuses(1000)
    assert max(len(batch) for batch in sink.batches) <= 64
    assert sink.closed
    stats = fanout.stats["memory"]
    assert (stats.enqueued, stats.written, stats.dropped, stats.depth) == (1000, 1000, 0, 0)
    assert stats.state is SinkState.STOPPED


@pytest.mark.parametrize(
    ("policy", "kept"),
    [(OverflowPolicy.DROP_NEWEST, [1, 2, 3]), (OverflowPolicy.DROP_OLDEST, [7, 8, 9])],
)
async def test_fanout_slow_sink_drops_per_policy_while_fast_sink_gets_all(
    policy: OverflowPolicy, kept: list[int]
) -> None:
    slow, fast = GatedSink(), MemorySink("fast")
    fanout = Fanout([SinkSpec(slow, policy=policy, queue_size=3), SinkSpec(fast)])
    async with anyio.create_task_group() as tg:
        await tg.start(fanout.run)
        await fanout.publish(status(0))
        with anyio.fail_after(5):
            await slow.entered.wait()  # record 0 is in flight, the queue is empty
        for record in statuses(9, start=1):
            await fanout.publish(record)
        with anyio.fail_after(5):
            await fast.wait_for(10)  # the fast sink is not held up by the slow one
        stats = fanout.stats["gated"]
        assert (stats.dropped, stats.depth, stats.max_depth, stats.in_flight) == (6, 3, 3, 1)
        slow.gate.set()
        fanout.close()
    assert slow.records == [status(0)] + [status(i) for i in kept]
    assert fast.records == statuses(10)
    assert (stats.written, stats.dropped, fanout.stats["fast"].dropped) == (4, 6, 0)


async def test_fanout_block_policy_applies_backpressure() -> None:
    slow = GatedSink()
    fanout = Fanout([SinkSpec(slow, policy=OverflowPolicy.BLOCK, queue_size=2)])
    published = anyio.Event()

    async def publish_fourth() -> None:
        await fanout.publish(status(3))
        published.set()

    async with anyio.create_task_group() as tg:
        await tg.start(fanout.run)
        await fanout.publish(status(0))
        with anyio.fail_after(5):
            await slow.entered.wait()
        await fanout.publish(status(1))
        await fanout.publish(status(2))
        tg.start_soon(publish_fourth)
        await anyio.wait_all_tasks_blocked()
        assert not published.is_set()
        assert fanout.stats["gated"].depth == 2
        slow.gate.set()
        with anyio.fail_after(5):
            await published.wait()
        fanout.close()
    assert slow.records == statuses(4)
    assert fanout.stats["gated"].dropped == 0


async def test_fanout_close_drains_queued_records() -> None:
    slow = GatedSink()
    fanout = Fanout([SinkSpec(slow, batch_max=10)])
    async with anyio.create_task_group() as tg:
        await tg.start(fanout.run)
        for record in statuses(50):
            await fanout.publish(record)
        with anyio.fail_after(5):
            await slow.entered.wait()
        fanout.close()
        await fanout.publish(status(99))  # after close: dropped and counted, not raised
        slow.gate.set()
    assert slow.records == statuses(50)
    assert slow.closed
    assert fanout.stats["gated"].dropped == 1


async def test_fanout_cancellation_drains_queued_records() -> None:
    sink = MemorySink()
    fanout = Fanout([SinkSpec(sink, batch_max=8)])
    async with anyio.create_task_group() as tg:
        await tg.start(fanout.run)
        for record in statuses(100):
            await fanout.publish(record)
        tg.cancel_scope.cancel()
    assert sink.records == statuses(100)
    assert sink.closed


async def test_fanout_cancellation_gives_up_after_drain_timeout(
    caplog: pytest.LogCaptureFixture,
) -> None:
    hung = GatedSink()  # the gate never opens
    fanout = Fanout([SinkSpec(hung)], drain_timeout_s=0.05)
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            await tg.start(fanout.run)
            for record in statuses(5):
                await fanout.publish(record)
            await hung.entered.wait()
            tg.cancel_scope.cancel()
    stats = fanout.stats["gated"]
    assert (stats.written, stats.dropped, stats.depth, stats.in_flight) == (0, 5, 0, 0)
    assert hung.closed
    assert "5 records not written before shutdown" in caplog.text


async def test_fanout_failing_sink_is_retried_and_recovers(
    caplog: pytest.LogCaptureFixture,
) -> None:
    flaky, healthy = MemorySink("flaky", fail_times=3), MemorySink("healthy")
    fanout = Fanout([SinkSpec(flaky), SinkSpec(healthy)], backoff=no_delay)
    with caplog.at_level(logging.INFO, logger="sinks.fanout"):
        async with anyio.create_task_group() as tg:
            await tg.start(fanout.run)
            for record in statuses(20):
                await fanout.publish(record)
            with anyio.fail_after(5):
                await flaky.wait_for(20)
            assert fanout.stats["flaky"].state is SinkState.OPEN
            fanout.close()
    assert flaky.records == statuses(20)
    assert healthy.records == statuses(20)
    stats = fanout.stats["flaky"]
    assert (stats.errors, stats.retries, stats.written, stats.dropped) == (3, 3, 20, 0)
    assert caplog.text.count("retrying with backoff") == 1  # once per state change
    assert "recovered after 3 retries" in caplog.text


async def test_fanout_open_failure_is_retried() -> None:
    sink = MemorySink(fail_open_times=2)
    fanout = Fanout([SinkSpec(sink)], backoff=no_delay)
    async with anyio.create_task_group() as tg:
        await tg.start(fanout.run)
        await fanout.publish(status(0))
        fanout.close()
    assert sink.records == [status(0)]
    assert (fanout.stats["memory"].errors, fanout.stats["memory"].retries) == (2, 2)
    assert sink.closed


async def test_fanout_unopenable_sink_does_not_hold_up_start_or_close() -> None:
    down, up = MemorySink("down", fail_open_times=10**9), MemorySink("up")
    fanout = Fanout([SinkSpec(down), SinkSpec(up)], drain_timeout_s=0.1,
                    backoff=lambda: itertools.repeat(0.01))
    with anyio.fail_after(2):
        async with anyio.create_task_group() as tg:
            await tg.start(fanout.run)
            assert fanout.stats["down"].state is SinkState.FAILING
            await fanout.publish(status(0))
            await up.wait_for(1)
            fanout.close()
    assert up.records == [status(0)]
    assert fanout.stats["down"].dropped == 1
    assert fanout.stats["down"].state is SinkState.STOPPED


async def test_fanout_unopenable_idle_sink_closes_without_drain_wait() -> None:
    down = MemorySink("down", fail_open_times=10**9)
    fanout = Fanout([SinkSpec(down)], backoff=lambda: itertools.repeat(0.01))
    with anyio.fail_after(1):  # well below the 3 s drain timeout: nothing is queued
        async with anyio.create_task_group() as tg:
            await tg.start(fanout.run)
            fanout.close()
    assert fanout.stats["down"].dropped == 0
    assert down.closed


async def test_fanout_sink_closed_sets_event_and_others_continue() -> None:
    gone = ScriptedSink("stdout", [SinkClosed("stdout", "EPIPE")])
    other = MemorySink("other")
    fanout = Fanout([SinkSpec(gone), SinkSpec(other)])
    async with anyio.create_task_group() as tg:
        await tg.start(fanout.run)
        await fanout.publish(status(0))
        with anyio.fail_after(5):
            await fanout.closed_sinks_event.wait()
        await fanout.publish(status(1))
        with anyio.fail_after(5):
            await other.wait_for(2)
        fanout.close()
    assert fanout.closed_sinks == {"stdout"}
    assert fanout.stats["stdout"].state is SinkState.CLOSED
    assert fanout.stats["stdout"].dropped == 2
    assert gone.records == []
    assert other.records == statuses(2)


async def test_fanout_rejected_batch_is_dropped_and_sink_goes_on() -> None:
    sink = ScriptedSink("picky", [SinkRejected("picky", "too big")])
    fanout = Fanout([SinkSpec(sink, batch_max=2)])
    async with anyio.create_task_group() as tg:
        await tg.start(fanout.run)
        for record in statuses(4):
            await fanout.publish(record)
        fanout.close()
    assert sink.records == statuses(2, start=2)
    stats = fanout.stats["picky"]
    assert (stats.errors, stats.dropped, stats.written) == (1, 2, 2)


async def test_fanout_on_error_disable_stops_only_that_sink() -> None:
    broken = MemorySink("broken", fail_times=1)
    other = MemorySink("other")
    fanout = Fanout([SinkSpec(broken, on_error="disable"), SinkSpec(other)])
    async with anyio.create_task_group() as tg:
        await tg.start(fanout.run)
        for record in statuses(3):
            await fanout.publish(record)
        with anyio.fail_after(5):
            await other.wait_for(3)
        fanout.close()
    assert broken.records == []
    assert other.records == statuses(3)
    stats = fanout.stats["broken"]
    assert (stats.state, stats.dropped, stats.retries) == (SinkState.DISABLED, 3, 0)
    assert broken.closed


async def test_fanout_on_error_crash_raises_out_of_run() -> None:
    sink = ScriptedSink("strict", [SinkRejected("strict", "schema mismatch")])
    other = MemorySink("other")
    fanout = Fanout([SinkSpec(sink, on_error="crash"), SinkSpec(other)])
    with pytest.raises(ExceptionGroup) as info:
        async with anyio.create_task_group() as tg:
            await tg.start(fanout.run)
            await fanout.publish(status(0))
            await anyio.sleep_forever()
    assert info.group_contains(SinkRejected, match="schema mismatch", depth=None)
    assert other.records == [status(0)]  # drained on the way out
    assert sink.closed and other.closed


async def test_fanout_publish_nowait_overshoots_block_queue_up_to_hard_bound() -> None:
    sink, lossy = MemorySink(), MemorySink("lossy")
    fanout = Fanout([SinkSpec(sink, queue_size=2),
                     SinkSpec(lossy, queue_size=2, policy=OverflowPolicy.DROP_NEWEST)])
    assert fanout.ready
    assert fanout.publish_nowait(status(0))
    assert fanout.publish_nowait(status(1))
    assert not fanout.ready
    assert fanout.publish_nowait(status(2))  # a burst after wait_ready() is not lost
    assert fanout.publish_nowait(status(3))
    assert not fanout.publish_nowait(status(4))  # past 2x the size: dropped
    assert (fanout.stats["memory"].dropped, fanout.stats["memory"].max_depth) == (1, 4)
    assert fanout.stats["lossy"].dropped == 3
    fanout.close()
    await fanout.run()
    assert sink.records == statuses(4)
    assert lossy.records == statuses(2)


async def test_fanout_wait_ready_waits_for_block_queue_space() -> None:
    slow = GatedSink()
    fanout = Fanout([SinkSpec(slow, queue_size=1),
                     SinkSpec(MemorySink(), queue_size=1, policy=OverflowPolicy.DROP_OLDEST)])
    became_ready = anyio.Event()

    async def wait() -> None:
        await fanout.wait_ready()
        became_ready.set()

    async with anyio.create_task_group() as tg:
        await tg.start(fanout.run)
        fanout.publish_nowait(status(0))
        with anyio.fail_after(5):
            await slow.entered.wait()
        fanout.publish_nowait(status(1))
        assert not fanout.ready
        tg.start_soon(wait)
        await anyio.wait_all_tasks_blocked()
        assert not became_ready.is_set()
        slow.gate.set()
        with anyio.fail_after(5):
            await became_ready.wait()
        assert fanout.ready
        fanout.close()
    assert slow.records == statuses(2)


async def test_fanout_gate_fences_queued_records_but_not_the_write_in_flight() -> None:
    """Hot standby: the lease deadline passes (a holder frozen by SIGSTOP) while a write is
    in flight and more records are queued. The write in flight completes (the residual
    window of streamer/lease.py); the queued records are fenced before their write."""
    now = 0.0
    gate = PublishGate(lambda: now)
    gate.open("run-1", 10.0)
    slow = GatedSink()
    fanout = Fanout([SinkSpec(slow)], gate=gate)
    records = [Status(v=SCHEMA_VERSION, state="connected", recv_ts=i, run="run-1")
               for i in range(3)]
    async with anyio.create_task_group() as tg:
        await tg.start(fanout.run)
        await fanout.publish(records[0])
        with anyio.fail_after(5):
            await slow.entered.wait()  # record 0 passed the gate: it is being written
        await fanout.publish(records[1])
        await fanout.publish(records[2])
        assert fanout.stats["gated"].depth == 2 and gate.fenced == 0
        now = 11.0  # the deadline passes before the queued records are written
        slow.gate.set()
        await anyio.wait_all_tasks_blocked()
        assert fanout.stats["gated"].depth == 0
        fanout.close()
    assert slow.records == records[:1]
    assert gate.fenced == 2


async def test_fanout_reopen_reaches_reopenable_sinks_only() -> None:
    class ReopenableSink(MemorySink):
        reopened = 0

        def reopen(self) -> None:
            self.reopened += 1

    file_like, plain = ReopenableSink("file"), MemorySink("plain")
    fanout = Fanout([SinkSpec(file_like), SinkSpec(plain)])
    fanout.reopen()
    assert file_like.reopened == 1
    assert fanout.closed is fanout.closed_sinks_event


async def test_fanout_run_twice_raises() -> None:
    fanout = Fanout([SinkSpec(MemorySink())])
    fanout.close()
    await fanout.run()
    with pytest.raises(RuntimeError, match="once"):
        await fanout.run()


def test_fanout_rejects_duplicate_sink_names() -> None:
    with pytest.raises(SinkConfigError, match="two sinks have this name"):
        Fanout([SinkSpec(MemorySink("a")), SinkSpec(MemorySink("a"))])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"queue_size": 0}, "queue_size"),
        ({"batch_max": 0}, "batch_max"),
        ({"on_error": "ignore"}, "on_error 'ignore'"),
    ],
)
def test_sink_spec_rejects_bad_values(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(SinkConfigError, match=message):
        SinkSpec(MemorySink(), **kwargs)  # type: ignore[arg-type]


def test_sink_spec_accepts_policy_string() -> None:
    spec = SinkSpec(MemorySink(), policy="drop-oldest")  # type: ignore[arg-type]
    assert spec.policy is OverflowPolicy.DROP_OLDEST
