"""Partner allowances: the pure flow (table), the watcher and the one-shot command,
against the simulator's allowance model over loopback with real HMAC verification."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
import anyio.lowlevel
import httpx
import msgspec
import pytest

from sinks.records import Allowance, Record, decode_record, encode
from streamer.errors import ConfigError
from streamer.partner.allowances import (
    AllowanceResponse,
    AllowanceSettings,
    AllowanceWatcher,
    Decision,
    Outcome,
    TargetState,
    allowances_command,
    check_allowance_credentials,
    decide,
    retry_in_flight,
)
from streamer.partner.auth import ApiKey, HmacCredentials
from streamer.simulator import Simulator, SimulatorAddress, SimulatorAuth, SimulatorConfig
from streamer.transport.rest import RestClient

SECRET = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
TOKEN_ID = "tok-partner-000001"
HMAC = HmacCredentials(TOKEN_ID, SECRET)
PROFILE = 4543
S = AllowanceSettings(poll_interval_s=60, after_submit_s=5, conflict_wait_s=3,
                      auth_error_poll_s=300, retry_min_interval_s=30, default_retry_after_s=11,
                      max_retry_after_s=120)
SIM = SimulatorConfig(quirks=False, rate_hz=0, private_rate_hz=0,
                      auth=SimulatorAuth(token_id=TOKEN_ID, secret=SECRET))


# -- the pure flow ----------------------------------------------------------------------


def target(status: str, retryable: bool = True, label: str = "ctf-exchange") -> TargetState:
    return TargetState(status=status, retryable=retryable, label=label, type="USDC_ALLOWANCE")


def state(*targets: TargetState, ready: bool | None = None) -> AllowanceResponse:
    if ready is None:
        ready = all(t.status == "confirmed" for t in targets)
    return AllowanceResponse(ready=ready, profileId=PROFILE, targets=list(targets))


READY = state(target("confirmed"), target("confirmed", label="b"))
MISSING = state(target("missing"), target("confirmed", label="b"))
FAILED_RETRYABLE = state(target("failed"))
FAILED_FINAL = state(target("failed", retryable=False), target("confirmed", label="b"))
SUBMITTED = state(target("submitted"), target("missing", label="b"))

DECISIONS = [
    # (outcome, since_retry_s, expected decision)
    (Outcome("check", READY), None, Decision("check", 60)),
    (Outcome("retry", READY), 0.0, Decision("check", 60)),
    (Outcome("check", MISSING), None, Decision("retry", 0.0)),
    (Outcome("check", FAILED_RETRYABLE), None, Decision("retry", 0.0)),
    (Outcome("check", MISSING), 30.0, Decision("retry", 0.0)),
    (Outcome("check", MISSING), 29.0, Decision("check", 5)),  # our retry is still landing
    (Outcome("check", FAILED_FINAL), None, Decision("check", 60)),  # nothing retryable
    (Outcome("check", SUBMITTED), None, Decision("check", 5)),
    (Outcome("retry", SUBMITTED), 0.0, Decision("check", 5)),
    (Outcome("retry", MISSING), 0.0, Decision("check", 5)),  # after any accepted retry
    (Outcome("retry", status=429, retry_after_s=7), None, Decision("check", 7)),
    (Outcome("check", status=429, retry_after_s=0.5), None, Decision("check", 0.5)),
    (Outcome("retry", status=429), None, Decision("check", 11)),  # no hint: default
    (Outcome("retry", status=429, retry_after_s=1e6), None, Decision("check", 120)),  # capped
    (Outcome("retry", status=409), 0.0, Decision("check", 3)),
]


@pytest.mark.parametrize(("outcome", "since", "expected"), DECISIONS)
def test_decide_table(outcome: Outcome, since: float | None, expected: Decision) -> None:
    assert decide(outcome, S, since_retry_s=since) == expected


@pytest.mark.parametrize(("status", "word"), [(401, "credentials"), (403, "scopes"),
                                              (404, "not found"), (400, "not found")])
def test_decide_reports_persistent_problems_and_polls_slowly(status: int, word: str) -> None:
    decision = decide(Outcome("check", status=status), S, since_retry_s=None)
    assert (decision.op, decision.delay_s) == ("check", 300)
    assert decision.problem is not None and word in decision.problem
    assert str(status) in decision.problem


@pytest.mark.parametrize("status", [None, 500, 503])
def test_decide_transient_failures_poll_at_normal_pace(status: int | None) -> None:
    assert decide(Outcome("retry", status=status), S, since_retry_s=None) == Decision("check", 60)


def test_retry_in_flight_only_after_accepted_or_conflicting_retry() -> None:
    assert retry_in_flight(Outcome("retry", SUBMITTED))
    assert retry_in_flight(Outcome("retry", status=409))
    assert not retry_in_flight(Outcome("retry", status=429))
    assert not retry_in_flight(Outcome("check", SUBMITTED))


def test_response_counts_and_signature() -> None:
    assert SUBMITTED.counts() == {"confirmed": 0, "missing": 1, "submitted": 1, "failed": 0}
    summary_only = AllowanceResponse(ready=False, summary={"total": 3, "missing": 3})
    assert summary_only.counts()["missing"] == 3
    assert MISSING.signature() != READY.signature()
    reordered = state(target("confirmed", label="b"), target("missing"))
    assert reordered.signature() == MISSING.signature()


@pytest.mark.parametrize(
    "data",
    [{"profiles": [0]}, {"profiles": [1, 1]}, {"poll_interval_s": 0}, {"conflict_wait_s": -1},
     {"extra": True}],
)
def test_allowance_settings_reject_bad_values(data: dict[str, Any]) -> None:
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert(data, type=AllowanceSettings)


def test_check_allowance_credentials_needs_hmac() -> None:
    assert check_allowance_credentials(HMAC) is HMAC
    for creds in (None, ApiKey("lmts_key_123456")):
        with pytest.raises(ValueError) as info:
            check_allowance_credentials(creds)
        assert "LIMITLESS_HMAC_SECRET" in str(info.value) and "\n" not in str(info.value)


# -- the watcher against the simulator ------------------------------------------------------


class FakeTime:
    """Epoch seconds that move only when the code under test sleeps; records every wait."""

    def __init__(self, stop_when: Callable[[FakeTime], bool] = lambda _: False) -> None:
        self.now = 1_768_469_400.0
        self.waits: list[float] = []
        self.stop_when = stop_when
        self.done = anyio.Event()

    def clock(self) -> float:
        return self.now

    async def sleep(self, delay: float) -> None:
        self.waits.append(delay)
        self.now += delay
        if self.done.is_set() or self.stop_when(self):
            self.done.set()
            await anyio.sleep_forever()  # park every loop here until the test cancels
        await anyio.lowlevel.checkpoint()


@asynccontextmanager
async def simulator(config: SimulatorConfig) -> AsyncIterator[tuple[Simulator, SimulatorAddress]]:
    sim = Simulator(config)
    async with anyio.create_task_group() as tg:
        address = await tg.start(sim.run)
        try:
            yield sim, address
        finally:
            tg.cancel_scope.cancel()


async def watch(
    config: SimulatorConfig,
    stop_when: Callable[[FakeTime], bool],
    *,
    credentials: HmacCredentials = HMAC,
    profiles: tuple[int, ...] = (PROFILE,),
) -> tuple[Simulator, AllowanceWatcher, list[Record], FakeTime]:
    records: list[Record] = []
    time = FakeTime(stop_when)
    async with simulator(config) as (sim, address), httpx.AsyncClient() as http:
        rest = RestClient(http, base_url=address.api_url, credentials=credentials)
        watcher = AllowanceWatcher(rest, profiles, publish=records.append, settings=S,
                                   sleep=time.sleep, clock=time.clock)
        async with anyio.create_task_group() as tg:
            await tg.start(watcher.run)
            with anyio.fail_after(10):
                await time.done.wait()
            tg.cancel_scope.cancel()
    return sim, watcher, records, time


def statuses(record: Record) -> list[str]:
    assert isinstance(record, Allowance)
    return [t.status for t in record.targets]


@pytest.mark.integration
@pytest.mark.anyio
async def test_watcher_reaches_ready_through_retry_and_emits_only_on_change() -> None:
    sim, watcher, records, time = await watch(SIM, lambda t: t.waits.count(60) >= 5)
    assert time.waits[:3] == [5, 5, 60]  # after the retry, while it lands, then idle
    assert [statuses(r) for r in records] == [
        ["missing"] * 4, ["submitted"] * 4, ["missing"] * 4, ["confirmed"] * 4]
    assert [r.ready for r in records if isinstance(r, Allowance)] == [False, False, False, True]
    assert sim.account.allowances.posts[PROFILE] == 1
    assert sim.account.allowances.checks[PROFILE] == 3 + 4  # four idle polls, no new record
    state = watcher.state[PROFILE]
    assert state.ready is True and state.problem is None
    assert state.counts == {"confirmed": 4, "missing": 0, "submitted": 0, "failed": 0}
    assert watcher.stats.records == 4
    assert watcher.stats.calls == {"check:200": 7, "retry:200": 1}
    last = records[-1]
    assert isinstance(last, Allowance) and last.profile_id == PROFILE
    assert last.wallet is not None and last.chain_id == 8453
    assert decode_record(encode(last)) == last


@pytest.mark.integration
@pytest.mark.anyio
async def test_watcher_honours_429_retry_after_then_succeeds() -> None:
    config = msgspec.structs.replace(SIM, allowance_retry_429=2, allowance_retry_after_s=7)
    sim, watcher, records, time = await watch(config, lambda t: 60 in t.waits)
    assert time.waits == [7, 7, 5, 5, 60]
    assert sim.account.allowances.posts[PROFILE] == 3
    assert watcher.stats.calls["retry:429"] == 2
    assert records[-1].ready is True  # type: ignore[union-attr]
    assert len(records) == 4  # the 429s changed nothing


@pytest.mark.integration
@pytest.mark.anyio
async def test_watcher_after_409_waits_briefly_and_polls_before_retrying() -> None:
    config = msgspec.structs.replace(SIM, allowance_retry_409=1)
    sim, watcher, records, time = await watch(config, lambda t: 60 in t.waits)
    assert time.waits[0] == 3  # conflict_wait_s, then a GET
    # the 409 counts as a retry in flight: GETs every after_submit_s until 30 s passed
    assert time.waits[1:7] == [5] * 6
    assert sim.account.allowances.posts[PROFILE] == 2
    assert watcher.stats.calls["retry:409"] == 1
    assert records[-1].ready is True  # type: ignore[union-attr]


@pytest.mark.integration
@pytest.mark.anyio
async def test_watcher_unretryable_failure_never_ready_and_stays_quiet() -> None:
    config = msgspec.structs.replace(SIM, allowance_targets=3, allowance_unretryable_targets=1,
                                     allowance_confirm_polls=1)
    sim, watcher, records, _ = await watch(config, lambda t: t.waits.count(60) >= 6)
    assert [statuses(r) for r in records] == [
        ["failed", "missing", "missing"],
        ["failed", "submitted", "submitted"],
        ["failed", "confirmed", "confirmed"],
    ]
    assert sim.account.allowances.posts[PROFILE] == 1  # nothing retryable left
    assert watcher.state[PROFILE].ready is False
    assert watcher.state[PROFILE].counts["failed"] == 1


@pytest.mark.integration
@pytest.mark.anyio
async def test_watcher_bad_credentials_reported_once_polled_slowly(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = HmacCredentials(TOKEN_ID, "c3VwZXItc2VjcmV0LWtleQ==")
    sim, watcher, records, time = await watch(SIM, lambda t: len(t.waits) >= 4, credentials=wrong)
    assert time.waits == [300] * 4 and records == []
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "HTTP 401" in warnings[0] and str(PROFILE) in warnings[0]
    assert watcher.state[PROFILE].problem is not None and watcher.stats.problems == 1
    assert sim.stats.rest.auth_failures == {"bad_signature": 4}
    assert "c3VwZXItc2VjcmV0LWtleQ==" not in caplog.text and SECRET not in caplog.text


@pytest.mark.integration
@pytest.mark.anyio
async def test_watcher_runs_profiles_independently() -> None:
    config = msgspec.structs.replace(SIM, allowance_profiles=(PROFILE, 77))
    _, watcher, records, _ = await watch(config, lambda t: t.waits.count(60) >= 4,
                                         profiles=(PROFILE, 77, 404))
    ready = {r.profile_id for r in records if isinstance(r, Allowance) and r.ready}
    assert ready == {PROFILE, 77}
    assert watcher.state[404].problem is not None and watcher.state[404].ready is None


# -- the one-shot command ----------------------------------------------------------------------


async def command(
    config: SimulatorConfig,
    *,
    profiles: tuple[int, ...] = (PROFILE,),
    credentials: Any = HMAC,
    retry: bool = False,
    wait_s: float | None = None,
    as_json: bool = False,
) -> tuple[int, str, Simulator, FakeTime]:
    out = io.StringIO()
    time = FakeTime()
    async with simulator(config) as (sim, address):
        code = await allowances_command(
            address.api_url, profiles, credentials, retry=retry, wait_s=wait_s,
            as_json=as_json, out=out, settings=S, sleep=time.sleep, clock=time.clock,
        )
    return code, out.getvalue(), sim, time


@pytest.mark.integration
@pytest.mark.anyio
async def test_command_check_only_prints_table_and_exits_1() -> None:
    code, text, sim, time = await command(SIM)
    assert code == 1 and time.waits == []
    header, row = text.splitlines()
    assert header.split()[:7] == ["PROFILE", "READY", "WALLET", "CONFIRMED", "MISSING",
                                  "SUBMITTED", "FAILED"]
    assert row.split()[:2] == [str(PROFILE), "no"] and row.split()[3:7] == ["0", "4", "0", "0"]
    assert "ctf-exchange/BUY missing" in row
    assert sim.account.allowances.posts[PROFILE] == 0


@pytest.mark.integration
@pytest.mark.anyio
async def test_command_retry_once_rechecks_after_submit() -> None:
    config = msgspec.structs.replace(SIM, allowance_confirm_polls=1)
    code, text, sim, time = await command(config, retry=True)
    assert code == 0 and time.waits == [5]
    assert text.splitlines()[1].split()[:2] == [str(PROFILE), "yes"]
    assert sim.account.allowances.posts[PROFILE] == 1


@pytest.mark.integration
@pytest.mark.anyio
async def test_command_retry_with_wait_reaches_ready_through_429_as_json() -> None:
    config = msgspec.structs.replace(SIM, allowance_retry_429=1, allowance_retry_after_s=4,
                                     allowance_targets=3, allowance_failed_targets=1)
    code, text, _, time = await command(config, retry=True, wait_s=120, as_json=True)
    body = json.loads(text)
    assert code == 0 and body["ready"] is True
    assert body["profiles"][0]["counts"] == {"confirmed": 3, "missing": 0, "submitted": 0,
                                             "failed": 0}
    assert time.waits == [4, 5, 5]


@pytest.mark.integration
@pytest.mark.anyio
async def test_command_wait_without_retry_never_posts_and_times_out() -> None:
    code, text, sim, time = await command(SIM, wait_s=150, as_json=True)
    assert code == 1 and sim.account.allowances.posts[PROFILE] == 0
    assert sum(time.waits) == 150 and time.waits == [60, 60, 30]
    body = json.loads(text)
    failing = body["profiles"][0]["failing"]
    assert [f["status"] for f in failing] == ["missing"] * 4 and failing[0]["retryable"]


@pytest.mark.integration
@pytest.mark.anyio
async def test_command_errors_per_profile_without_secrets(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    code, text, _, _ = await command(SIM, profiles=(PROFILE, 999), retry=True, wait_s=30)
    assert code == 1
    rows = {line.split()[0]: line for line in text.splitlines()[1:]}
    assert rows["999"].split()[1] == "error" and "HTTP 404" in rows["999"]
    wrong = HmacCredentials(TOKEN_ID, "c3VwZXItc2VjcmV0LWtleQ==")
    code, text, _, time = await command(SIM, credentials=wrong, wait_s=600)
    assert code == 1 and time.waits == [] and "HTTP 401" in text
    for secret in (SECRET, "c3VwZXItc2VjcmV0LWtleQ=="):
        assert secret not in text and secret not in caplog.text


@pytest.mark.anyio
@pytest.mark.parametrize("credentials", [None, ApiKey("lmts_key_123456")])
async def test_command_without_hmac_is_a_config_error(credentials: Any) -> None:
    with pytest.raises(ConfigError, match="HMAC"):
        await allowances_command("http://127.0.0.1:9", [PROFILE], credentials, retry=False,
                                 wait_s=None, as_json=False, out=io.StringIO())


@pytest.mark.anyio
async def test_command_rejects_bad_profile_ids() -> None:
    with pytest.raises(ConfigError, match="profile"):
        await allowances_command("http://127.0.0.1:9", [0], HMAC, retry=False, wait_s=None,
                                 as_json=False, out=io.StringIO())
