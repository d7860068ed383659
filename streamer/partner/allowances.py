"""Partner sub-account allowances: a continuous watcher and a one-shot command.

Server-wallet sub-accounts need delegated-trading approvals before they can trade
(limitless-api.md §2.6, seeds 001/002). The documented flow, which every partner
otherwise scripts by hand:

1. poll ``GET /profiles/partner-accounts/{id}/allowances``;
2. if ``ready``, done (keep polling slowly to notice regressions);
3. if some target is ``missing``/``failed`` with ``retryable``, ``POST …/allowances/retry``
   with body ``{}``;
4. after ``submitted`` targets, poll again after a short delay;
5. on 429, wait ``retryAfterSeconds`` (JSON body); on 409 (a retry is already running),
   wait briefly and poll; on 401/403, report a credentials or scope problem once and
   keep polling slowly.

:func:`decide` is that flow as a pure function (one outcome in, the next action out);
:class:`AllowanceWatcher` runs it per profile forever and emits an ``allowance`` record
only when a profile's readiness or a target's status changes;
:func:`allowances_command` runs it once for humans and scripts.

Both endpoints accept HMAC scoped tokens only (scopes ``account_creation`` and
``delegated_signing``); API keys are refused by the venue.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Final, Literal, NamedTuple, TextIO

import anyio
import httpx
import msgspec
from anyio.abc import TaskStatus

from orderbook.types import SCHEMA_VERSION
from sinks.records import Allowance, AllowanceTarget, Record
from streamer.errors import ConfigError, RestError
from streamer.ops.logutil import fields
from streamer.partner.auth import Credentials, HmacCredentials
from streamer.transport.rest import RestClient, RestStatusError

__all__ = [
    "AllowanceResponse",
    "AllowanceSettings",
    "AllowanceStats",
    "AllowanceWatcher",
    "CHECK_ENDPOINT",
    "Decision",
    "Op",
    "Outcome",
    "ProfileState",
    "RETRY_ENDPOINT",
    "STATUSES",
    "TargetState",
    "allowances_command",
    "call_allowances",
    "check_allowance_credentials",
    "decide",
    "retry_in_flight",
]

logger = logging.getLogger(__name__)

Op = Literal["check", "retry"]
"""``check`` = ``GET …/allowances``; ``retry`` = ``POST …/allowances/retry``."""

CHECK_ENDPOINT: Final = "/profiles/partner-accounts/{profileId}/allowances"
RETRY_ENDPOINT: Final = "/profiles/partner-accounts/{profileId}/allowances/retry"
RETRY_BODY: Final = b"{}"
"""The exact body the TS and Rust SDKs send and sign (§2.6)."""
STATUSES: Final = ("confirmed", "missing", "submitted", "failed")
RETRYABLE_STATUSES: Final = frozenset({"missing", "failed"})
CLIENT_RETRIED: Final = (500, 502, 503, 504)
"""Statuses the REST client retries itself; 409 and 429 come back to :func:`decide`."""
HTTP_TIMEOUT_S: Final = 30.0
_AUTH_PROBLEM: Final = (
    "credentials rejected or missing scopes (HMAC token with account_creation "
    "and delegated_signing required)"
)
_NOT_FOUND_PROBLEM: Final = "profile not found, or not a sub-account of this partner"


class AllowanceSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Allowance watcher knobs (``[allowances]`` in the config file).

    Attributes:
        profiles: partner sub-account (server-wallet child) profile ids to watch.
        poll_interval_s: poll period while nothing is pending (ready, or nothing to retry).
        after_submit_s: delay before polling again after a retry (submitted targets).
        conflict_wait_s: delay after a 409 (a retry is already running).
        auth_error_poll_s: slow poll period after 401/403/404 (reported once).
        retry_min_interval_s: at most one retry POST per profile in this period.
        default_retry_after_s: wait after a 429 that carries no ``retryAfterSeconds``.
        max_retry_after_s: cap on a server-requested wait.
    """

    profiles: tuple[int, ...] = ()
    poll_interval_s: float = 60.0
    after_submit_s: float = 5.0
    conflict_wait_s: float = 5.0
    auth_error_poll_s: float = 300.0
    retry_min_interval_s: float = 30.0
    default_retry_after_s: float = 10.0
    max_retry_after_s: float = 600.0

    def __post_init__(self) -> None:
        if any(pid < 1 for pid in self.profiles):
            raise ValueError("allowances.profiles: profile ids must be positive integers")
        if len(set(self.profiles)) != len(self.profiles):
            raise ValueError("allowances.profiles: a profile id is listed twice")
        for name in ("poll_interval_s", "after_submit_s", "conflict_wait_s",
                     "auth_error_poll_s", "default_retry_after_s", "max_retry_after_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"allowances.{name} must be > 0")
        if not self.retry_min_interval_s >= 0:
            raise ValueError("allowances.retry_min_interval_s must be >= 0")


def check_allowance_credentials(credentials: Credentials | None) -> HmacCredentials:
    """Return the HMAC credentials the allowance endpoints need.

    Raises:
        ValueError: none, or a legacy API key (the venue refuses it here); one line.
    """
    if isinstance(credentials, HmacCredentials):
        return credentials
    if credentials is None:
        raise ValueError(
            "allowances need HMAC credentials: set LIMITLESS_HMAC_TOKEN_ID and "
            "LIMITLESS_HMAC_SECRET (scopes account_creation + delegated_signing)"
        )
    raise ValueError(
        "allowances need an HMAC scoped token (LIMITLESS_HMAC_TOKEN_ID and "
        "LIMITLESS_HMAC_SECRET); the venue refuses API keys on these endpoints"
    )


# -- wire shapes ----------------------------------------------------------------------


class TargetState(msgspec.Struct, frozen=True):
    """One target of an allowance response (§2.6); unknown fields are ignored."""

    status: str
    type: str | None = None
    tokenAddress: str | None = None
    spenderOrOperator: str | None = None
    label: str | None = None
    requiredFor: str | None = None
    confirmed: bool | None = None
    retryable: bool = False
    transactionId: str | None = None
    txHash: str | None = None
    userOperationHash: str | None = None
    errorCode: str | None = None
    errorMessage: str | None = None

    @property
    def key(self) -> tuple[str, ...]:
        """What identifies the target across polls."""
        return (self.type or "", self.tokenAddress or "", self.spenderOrOperator or "",
                self.label or "", self.requiredFor or "")


class AllowanceResponse(msgspec.Struct, frozen=True):
    """The body of both allowance endpoints (§2.6)."""

    ready: bool
    profileId: int | None = None
    partnerProfileId: int | None = None
    chainId: int | None = None
    walletAddress: str | None = None
    summary: dict[str, int] | None = None
    targets: list[TargetState] = []

    def counts(self) -> dict[str, int]:
        """Targets per status; the four known statuses are always present."""
        counts = dict.fromkeys(STATUSES, 0)
        if self.targets:
            counts.update(Counter(t.status for t in self.targets))
        elif self.summary:
            counts.update({k: v for k, v in self.summary.items() if k != "total"})
        return counts

    def retryable_pending(self) -> bool:
        """Some target is ``missing`` or ``failed`` and may be retried."""
        return any(t.retryable and t.status in RETRYABLE_STATUSES for t in self.targets)

    def submitted(self) -> bool:
        """Some target was just submitted (a sponsored tx is on its way)."""
        return any(t.status == "submitted" for t in self.targets)

    def signature(self) -> tuple[object, ...]:
        """Readiness plus every target's status: a change here is worth a record."""
        return (self.ready, tuple(sorted((t.key, t.status) for t in self.targets)))


_RESPONSE_DECODER: Final = msgspec.json.Decoder(AllowanceResponse)


class Outcome(msgspec.Struct, frozen=True):
    """What one call returned: a state, or an error with its HTTP status.

    Attributes:
        op: the call made.
        state: the decoded body on success.
        status: the HTTP status of a failed call; ``None`` for success or no reply.
        retry_after_s: the server's requested wait (429), if any.
        error: a secret-free description of the failure.
    """

    op: Op
    state: AllowanceResponse | None = None
    status: int | None = None
    retry_after_s: float | None = None
    error: str | None = None


class Decision(NamedTuple):
    """The next step of the flow.

    Attributes:
        op: what to call next.
        delay_s: how long to wait before calling it.
        problem: a persistent problem worth reporting (once), e.g. bad credentials.
    """

    op: Op
    delay_s: float
    problem: str | None = None


def decide(
    outcome: Outcome, settings: AllowanceSettings, *, since_retry_s: float | None
) -> Decision:
    """The allowance flow (§2.6) as a pure function.

    Args:
        outcome: what the last call returned.
        settings: the delays.
        since_retry_s: seconds since this profile's last retry POST, ``None`` if never.

    Returns:
        The next call and the delay before it.
    """
    s = settings
    state = outcome.state
    if state is not None:
        if state.ready:
            return Decision("check", s.poll_interval_s)
        if outcome.op == "retry" or state.submitted():
            return Decision("check", s.after_submit_s)
        if state.retryable_pending():
            if since_retry_s is None or since_retry_s >= s.retry_min_interval_s:
                return Decision("retry", 0.0)
            return Decision("check", s.after_submit_s)  # our last retry is still landing
        return Decision("check", s.poll_interval_s)  # nothing we may retry: wait and see
    status = outcome.status
    if status == 429:
        wait = s.default_retry_after_s if outcome.retry_after_s is None else outcome.retry_after_s
        return Decision("check", min(max(wait, 0.0), s.max_retry_after_s))
    if status == 409:
        return Decision("check", s.conflict_wait_s)
    if status in (401, 403):
        return Decision("check", s.auth_error_poll_s, f"HTTP {status}: {_AUTH_PROBLEM}")
    if status in (400, 404):
        return Decision("check", s.auth_error_poll_s, f"HTTP {status}: {_NOT_FOUND_PROBLEM}")
    return Decision("check", s.poll_interval_s)  # 5xx after the client's retries, or no reply


def retry_in_flight(outcome: Outcome) -> bool:
    """Whether a retry is now running: ours was accepted, or the server says one is (409).

    A 429 or any other failure submitted nothing, so it does not start the
    ``retry_min_interval_s`` spacing.
    """
    return outcome.op == "retry" and (outcome.state is not None or outcome.status == 409)


async def call_allowances(rest: RestClient, profile_id: int, op: Op) -> Outcome:
    """Make one allowance call; never raises for HTTP or transport failures.

    Args:
        rest: a client with HMAC credentials.
        profile_id: the sub-account profile id.
        op: ``check`` (GET) or ``retry`` (POST ``{}``).

    Returns:
        The outcome (409 and 429 are never retried by the client, 5xx are).
    """
    path = f"/profiles/partner-accounts/{profile_id}/allowances"
    try:
        if op == "check":
            state = await rest.request("GET", path, endpoint=CHECK_ENDPOINT,
                                       decoder=_RESPONSE_DECODER, retry_statuses=CLIENT_RETRIED)
        else:
            state = await rest.request("POST", path + "/retry", endpoint=RETRY_ENDPOINT,
                                       body=RETRY_BODY, decoder=_RESPONSE_DECODER,
                                       retry_statuses=CLIENT_RETRIED)
    except RestStatusError as exc:
        return Outcome(op, status=exc.status, retry_after_s=exc.retry_after_s, error=str(exc))
    except RestError as exc:
        return Outcome(op, error=str(exc))
    return Outcome(op, state=state)


# -- the watcher ------------------------------------------------------------------------


@dataclass
class ProfileState:
    """What the watcher knows about one profile (read by the metrics layer).

    Attributes:
        ready: the last observed readiness; ``None`` before the first success.
        counts: targets per status at the last observation.
        wallet: the server-wallet address.
        problem: a persistent problem (credentials, unknown profile) or ``None``.
    """

    ready: bool | None = None
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(STATUSES, 0))
    wallet: str | None = None
    problem: str | None = None


@dataclass
class AllowanceStats:
    """Counters of the watcher (exported as metrics by the edge).

    Attributes:
        calls: calls made, by ``op`` and outcome (``check:200``, ``retry:429``,
            ``check:error`` for no reply).
        records: ``allowance`` records emitted.
        problems: persistent problems reported (each logged once).
    """

    calls: Counter[str] = field(default_factory=Counter)
    records: int = 0
    problems: int = 0


class AllowanceWatcher:
    """Runs the allowance flow for every profile, forever, in one task group.

    Args:
        rest: a REST client with HMAC credentials.
        profile_ids: sub-account profile ids.
        publish: receives each ``allowance`` record (never awaited).
        settings: delays.
        sleep: awaited between calls (tests inject a recorder).
        clock: epoch seconds (record ``recv_ts`` and the retry spacing).
    """

    def __init__(
        self,
        rest: RestClient,
        profile_ids: Sequence[int],
        *,
        publish: Callable[[Record], None],
        settings: AllowanceSettings,
        sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._rest = rest
        self._profiles = tuple(dict.fromkeys(profile_ids))
        self._publish = publish
        self._settings = settings
        self._sleep = sleep
        self._clock = clock
        self.state: dict[int, ProfileState] = {pid: ProfileState() for pid in self._profiles}
        self.stats = AllowanceStats()
        self._signatures: dict[int, tuple[object, ...]] = {}

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Watch every profile until cancelled; ready as soon as the loops are started."""
        async with anyio.create_task_group() as tg:
            for profile_id in self._profiles:
                tg.start_soon(self._watch, profile_id)
            task_status.started()

    async def _watch(self, profile_id: int) -> None:
        op: Op = "check"
        last_retry: float | None = None
        while True:
            outcome = await call_allowances(self._rest, profile_id, op)
            now = self._clock()
            if retry_in_flight(outcome):
                last_retry = now
            since = None if last_retry is None else now - last_retry
            decision = decide(outcome, self._settings, since_retry_s=since)
            self._observe(profile_id, outcome, decision, now)
            if decision.delay_s > 0:
                await self._sleep(decision.delay_s)
            op = decision.op

    def _observe(self, profile_id: int, outcome: Outcome, decision: Decision, now: float) -> None:
        label = "error" if outcome.status is None and outcome.state is None else (
            str(outcome.status) if outcome.status is not None else "200")
        self.stats.calls[f"{outcome.op}:{label}"] += 1
        state = self.state[profile_id]
        if decision.problem is not None and decision.problem != state.problem:
            self.stats.problems += 1
            logger.warning("allowances of profile %d: %s; polling every %.0fs",
                           profile_id, decision.problem, decision.delay_s,
                           extra=fields(profile=profile_id, delay_s=decision.delay_s,
                                        reason=decision.problem))
        if outcome.state is None:
            if decision.problem is not None:
                state.problem = decision.problem
            elif outcome.status not in (409, 429):
                logger.debug("allowances of profile %d: %s", profile_id, outcome.error,
                             extra=fields(profile=profile_id, reason=f"{outcome.op}:{label}"))
            return
        if state.problem is not None:
            logger.info("allowances of profile %d: reachable again", profile_id,
                        extra=fields(profile=profile_id, reason="reachable"))
            state.problem = None
        self._update(profile_id, state, outcome.state, now)

    def _update(
        self, profile_id: int, state: ProfileState, response: AllowanceResponse, now: float
    ) -> None:
        if state.ready is not None and response.ready != state.ready:
            readiness = "ready" if response.ready else "no longer ready"
            logger.info("allowances of profile %d: %s", profile_id, readiness,
                        extra=fields(profile=profile_id, reason=readiness))
        state.ready = response.ready
        state.counts = response.counts()
        state.wallet = response.walletAddress
        signature = response.signature()
        if self._signatures.get(profile_id) == signature:
            return
        self._signatures[profile_id] = signature
        self.stats.records += 1
        self._publish(allowance_record(profile_id, response, round(now * 1000)))


def allowance_record(profile_id: int, response: AllowanceResponse, recv_ts: int) -> Allowance:
    """The ``allowance`` record of one observation."""
    targets = [
        AllowanceTarget(t.type, t.label, t.requiredFor, t.status, t.retryable, t.tokenAddress,
                        t.spenderOrOperator, t.errorCode)
        for t in response.targets
    ]
    return Allowance(SCHEMA_VERSION, recv_ts, profile_id, response.ready, response.walletAddress,
                     response.chainId, response.counts(), targets)


# -- the one-shot command ----------------------------------------------------------------


class _Report(msgspec.Struct):
    """One profile's line of the command's output."""

    profile_id: int
    state: AllowanceResponse | None = None
    error: str | None = None

    @property
    def ready(self) -> bool:
        return self.state is not None and self.state.ready and self.error is None


class _Flow:
    """The command's run of :func:`decide` for one profile, bounded by a deadline."""

    def __init__(
        self,
        rest: RestClient,
        settings: AllowanceSettings,
        *,
        retry: bool,
        sleep: Callable[[float], Awaitable[None]],
        clock: Callable[[], float],
    ) -> None:
        self._rest = rest
        self._settings = settings
        self._retry = retry
        self._sleep = sleep
        self._clock = clock

    async def run(self, profile_id: int, deadline: float) -> _Report:
        report = _Report(profile_id)
        op: Op = "check"
        last_retry: float | None = None
        while True:
            outcome = await call_allowances(self._rest, profile_id, op)
            now = self._clock()
            last_retry = now if retry_in_flight(outcome) else last_retry
            if outcome.state is not None:
                report.state, report.error = outcome.state, None
            else:
                report.error = outcome.error
            if report.ready:
                return report
            since = None if last_retry is None else now - last_retry
            decision = decide(outcome, self._settings, since_retry_s=since)
            remaining = deadline - self._clock()
            if decision.problem is not None or remaining <= 0:
                return report
            if decision.op == "retry" and self._retry:
                op = "retry"
                continue
            await self._sleep(min(decision.delay_s if decision.op == "check" else
                                  self._settings.poll_interval_s, remaining))
            op = "check"


async def allowances_command(
    api_url: str,
    profile_ids: Sequence[int],
    credentials: Credentials | None,
    *,
    retry: bool,
    wait_s: float | None,
    as_json: bool,
    out: TextIO,
    settings: AllowanceSettings | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
    sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> int:
    """Print each profile's allowance state; ``limitless-streamer allowances``.

    Without ``retry`` and ``wait_s`` it checks once. With ``retry`` it POSTs a retry for
    profiles with retryable targets and checks again after ``after_submit_s``. With
    ``wait_s`` it keeps going (retrying only with ``retry``) until every profile is
    ready or the time is up. 401/403/404 end a profile's run at once.

    Args:
        api_url: REST base URL.
        profile_ids: sub-account profile ids (positive).
        credentials: must be HMAC credentials.
        retry: run the retry flow.
        wait_s: keep going for up to this many seconds.
        as_json: print JSON instead of a table.
        out: where to print.
        settings: delays (defaults to :class:`AllowanceSettings()`).
        transport: httpx transport override (tests).
        sleep: awaited between calls (tests).
        clock: monotonic seconds for the deadline and retry spacing (tests).

    Returns:
        0 when every profile is ready, else 1.

    Raises:
        ConfigError: no HMAC credentials, no profile, or a profile id < 1.
    """
    try:
        hmac_credentials = check_allowance_credentials(credentials)
        if not profile_ids or any(pid < 1 for pid in profile_ids):
            raise ValueError("allowances: give one or more positive profile ids")
        if wait_s is not None and not wait_s >= 0:
            raise ValueError("allowances: --wait must be >= 0")
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    settings = settings or AllowanceSettings()
    budget = wait_s if wait_s is not None else (settings.after_submit_s if retry else 0.0)
    deadline = clock() + budget
    profiles = list(dict.fromkeys(profile_ids))
    reports: dict[int, _Report] = {}
    async with httpx.AsyncClient(timeout=HTTP_TIMEOUT_S, transport=transport) as http:
        rest = RestClient(http, base_url=api_url, credentials=hmac_credentials, sleep=sleep)
        flow = _Flow(rest, settings, retry=retry, sleep=sleep, clock=clock)

        async def one(profile_id: int) -> None:
            reports[profile_id] = await flow.run(profile_id, deadline)

        async with anyio.create_task_group() as tg:
            for profile_id in profiles:
                tg.start_soon(one, profile_id)
    ordered = [reports[pid] for pid in profiles]
    out.write(_render_json(ordered) if as_json else _render_table(ordered))
    out.flush()
    return 0 if all(r.ready for r in ordered) else 1


# -- output ---------------------------------------------------------------------------

_COLUMNS: Final = ("PROFILE", "READY", "WALLET", "CONFIRMED", "MISSING", "SUBMITTED", "FAILED",
                   "FAILING")


def _failing(state: AllowanceResponse) -> list[TargetState]:
    return [t for t in state.targets if t.status != "confirmed"]


def _describe_target(t: TargetState) -> str:
    text = f"{t.label or t.type or '?'}"
    if t.requiredFor:
        text += f"/{t.requiredFor}"
    text += f" {t.status}"
    if t.errorCode:
        text += f" {t.errorCode}"
    if not t.retryable:
        text += " (not retryable)"
    return text


def _row(report: _Report) -> tuple[str, ...]:
    state = report.state
    if state is None:
        return (str(report.profile_id), "error", "-", "-", "-", "-", "-", report.error or "")
    counts = state.counts()
    failing = "; ".join(_describe_target(t) for t in _failing(state))
    if report.error:
        failing = f"{failing}; last call: {report.error}" if failing else report.error
    return (str(report.profile_id), "yes" if report.ready else "no", state.walletAddress or "-",
            *(str(counts[s]) for s in STATUSES), failing or "-")


def _render_table(reports: Sequence[_Report]) -> str:
    rows = [_COLUMNS, *(_row(r) for r in reports)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(_COLUMNS) - 1)]
    lines = []
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row[:-1], widths, strict=True)]
        lines.append("  ".join([*cells, row[-1]]).rstrip())
    return "\n".join(lines) + "\n"


class _JsonTarget(msgspec.Struct):
    type: str | None
    label: str | None
    requiredFor: str | None
    status: str
    retryable: bool
    errorCode: str | None
    errorMessage: str | None


class _JsonProfile(msgspec.Struct):
    profileId: int
    ready: bool
    walletAddress: str | None
    chainId: int | None
    counts: dict[str, int] | None
    failing: list[_JsonTarget]
    error: str | None


class _JsonReport(msgspec.Struct):
    ready: bool
    profiles: list[_JsonProfile]


def _json_profile(report: _Report) -> _JsonProfile:
    state = report.state
    if state is None:
        return _JsonProfile(report.profile_id, False, None, None, None, [], report.error)
    failing = [
        _JsonTarget(t.type, t.label, t.requiredFor, t.status, t.retryable, t.errorCode,
                    t.errorMessage)
        for t in _failing(state)
    ]
    return _JsonProfile(report.profile_id, report.ready, state.walletAddress, state.chainId,
                        state.counts(), failing, report.error)


def _render_json(reports: Sequence[_Report]) -> str:
    body = _JsonReport(all(r.ready for r in reports), [_json_profile(r) for r in reports])
    return msgspec.json.format(msgspec.json.encode(body).decode(), indent=2) + "\n"
