"""streamer.feed.clock: virtual time and per-task pins."""

from __future__ import annotations

import anyio
import anyio.lowlevel
import pytest

from streamer.feed import clock

pytestmark = pytest.mark.anyio


def test_virtual_source_and_a_fresh_pin_read_once() -> None:
    now = [1_000]
    with clock.use_source(lambda: now[0]):
        assert clock.now_ms() == 1_000
        clock.pin(990)
        now[0] = 1_005
        assert clock.now_ms() == 990  # the pinned receive time
        assert clock.now_ms() == 1_005  # consumed
        clock.pin(500)
        assert clock.now_ms() == 1_005  # stale: ignored
    assert abs(clock.now_ms() - clock.wall_ms()) < 1_000


async def test_a_pin_belongs_to_its_task() -> None:
    seen: dict[str, int] = {}
    with clock.use_source(lambda: 2_000):

        async def fetch() -> None:
            clock.pin(1_990)  # as the recording transport does for the awaiting task
            await anyio.lowlevel.checkpoint()
            seen["fetcher"] = clock.now_ms()

        async with anyio.create_task_group() as tg:
            tg.start_soon(fetch)
            await anyio.wait_all_tasks_blocked()
            seen["other"] = clock.now_ms()
    assert seen == {"fetcher": 1_990, "other": 2_000}
