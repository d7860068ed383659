"""The lease's fencing logic, with a scripted backend and a fake monotonic clock."""

from __future__ import annotations

import pytest

from sinks.gate import PublishGate
from sinks.records import SCHEMA_VERSION, Status
from streamer.errors import ConfigError
from streamer.ha.lease import Lease, LeaseUnavailable, parse_lease_url

pytestmark = pytest.mark.anyio


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Backend:
    """Answers from a script; the clock advances by ``latency`` during each call."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.owner: str | None = None
        self.latency = 0.0
        self.fail = False
        self.released = 0

    async def acquire(self, holder: str) -> bool:
        self.clock.now += self.latency
        if self.fail:
            raise LeaseUnavailable("down")
        if self.owner is None:
            self.owner = holder
            return True
        return False

    async def renew(self, holder: str) -> bool:
        self.clock.now += self.latency
        if self.fail:
            raise LeaseUnavailable("down")
        return self.owner == holder

    async def release(self, holder: str) -> None:
        if self.owner == holder:
            self.owner = None
            self.released += 1

    async def aclose(self) -> None:
        pass


def make(ttl: str = "3s") -> tuple[Lease, Backend, PublishGate, Clock, list[str]]:
    clock = Clock()
    backend = Backend(clock)
    gate = PublishGate(clock)
    runs: list[str] = []
    lease = Lease(parse_lease_url(f"redis://h:1/0?key=k&ttl={ttl}"), backend, gate,
                  on_acquired=runs.append, clock=clock)
    return lease, backend, gate, clock, runs


def status(run: str) -> Status:
    return Status(v=SCHEMA_VERSION, state="connected", recv_ts=1, run=run)


async def test_acquire_opens_the_gate_for_a_new_run_only() -> None:
    lease, _, gate, _, runs = make()
    assert not gate.allows(status("anything"))
    assert await lease._acquire()
    assert len(runs) == 1 and gate.run == runs[0] and lease.stats.takeovers == 1
    assert gate.allows(status(runs[0])) and not gate.allows(status("an-older-run"))


async def test_renewal_moves_the_deadline_to_two_thirds_of_ttl_after_sending() -> None:
    lease, _, gate, clock, _ = make()
    await lease._acquire()
    assert gate.deadline == pytest.approx(102.0)
    clock.now = 101.0
    await lease._renew()
    assert gate.deadline == pytest.approx(103.0) and lease.stats.held


async def test_a_frozen_holder_is_fenced_by_the_clock_alone() -> None:
    lease, backend, gate, clock, runs = make()
    await lease._acquire()
    clock.now += 5.0  # SIGSTOP longer than the ttl: no task ran meanwhile
    assert not gate.holding and not gate.allows(status(runs[0]))
    backend.owner = "another daemon"  # which took the lease meanwhile
    await lease._renew()
    assert not lease.stats.held and lease.stats.lost["late"] == 1
    assert not await lease._acquire() and not gate.holding
    backend.owner = None  # the other one died: acquiring again starts a NEW run
    assert await lease._acquire()
    assert len(runs) == 2 and runs[0] != runs[1] and not gate.allows(status(runs[0]))


async def test_a_renewal_refused_or_late_closes_the_gate_at_once() -> None:
    lease, backend, gate, clock, _ = make()
    await lease._acquire()
    backend.owner = "someone else"
    await lease._renew()
    assert not gate.holding and lease.stats.lost["taken"] == 1
    lease, backend, gate, clock, _ = make()
    await lease._acquire()
    backend.latency = 1.5  # answered after the deadline: unusable
    clock.now = 101.0
    await lease._renew()
    assert not gate.holding and lease.stats.lost["late"] == 1 and backend.released == 1


async def test_an_unanswered_renewal_retries_until_the_deadline_fences() -> None:
    lease, backend, gate, clock, _ = make()
    await lease._acquire()
    backend.fail = True
    clock.now = 101.0
    await lease._renew()
    assert gate.holding and lease.stats.errors == 1  # not late yet: retried soon
    clock.now = 102.5
    await lease._renew()
    assert not gate.holding and lease.stats.lost["late"] == 1


@pytest.mark.parametrize(("url", "message"), [
    ("http://h/x", "expected nats://"),
    ("nats://h:4222/", "bucket name"),
    ("nats://h:4222/b?ttl=fast", "ttl must look like"),
    ("nats://h:4222/b?ttl=0.1s", "between"),
    ("redis://h:6379/0", r"needs \?key="),
    ("redis://h:6379/zero?key=k", "database number"),
    ("nats://h:4222/b?color=red", "unknown option"),
])
def test_bad_lease_urls_name_the_field(url: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        parse_lease_url(url)
    assert str(info.value).startswith("lease:")


def test_lease_urls_parse_and_hide_the_password() -> None:
    spec = parse_lease_url("redis://u:s3cret@h:7000/2?key=ha&ttl=2500ms")
    assert (spec.kind, spec.host, spec.port, spec.bucket, spec.key, spec.ttl_s) == (
        "redis", "h", 7000, "2", "ha", 2.5)
    assert "s3cret" not in repr(spec) and "s3cret" not in spec.shown
    nats = parse_lease_url("nats://h/ha_bucket")
    assert (nats.port, nats.key, nats.ttl_s) == (4222, "leader", 3.0)
