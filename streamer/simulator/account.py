"""The simulator's authenticated user: private events, portfolio and partner allowances.

:class:`Account` models the one authenticated user: its private events
(:meth:`Account.step`: ``orderEvent``, ``positions``, ``tx``) and its portfolio;
:class:`Allowances` models the allowance targets of its partner sub-accounts. Pure, like
:mod:`streamer.simulator.exchange`: seeded randomness, time passed in.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, Final, NamedTuple

from streamer.simulator.exchange import HUNDRED, TICKS_D, Exchange, Market, SimulatorConfig

__all__ = ["Account", "AllowanceReply", "Allowances", "PrivateEvent"]

PARTNER_PROFILE_ID: Final = 4430
CHAIN_ID: Final = 8453
USER_ID: Final = 101
USDC_ADDRESS: Final = "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913"
CTF_ADDRESS: Final = "0x4D97DCd97eC945f40cF65F87097ACe5EA0476045"
DEFAULT_ACCOUNT: Final = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed"
FEE_RATE_BPS: Final = 30
_RAW6: Final = Decimal(1_000_000)
_CENT: Final = Decimal("0.01")
_TARGET_KINDS: Final = (
    ("USDC_ALLOWANCE", USDC_ADDRESS, "ctf-exchange", "BUY"),
    ("CTF_APPROVAL", CTF_ADDRESS, "ctf-exchange", "SELL"),
    ("USDC_ALLOWANCE", USDC_ADDRESS, "neg-risk-exchange", "BUY"),
    ("CTF_APPROVAL", CTF_ADDRESS, "neg-risk-exchange", "SELL"),
    ("CTF_APPROVAL", CTF_ADDRESS, "neg-risk-adapter", "SELL"),
    ("USDC_ALLOWANCE", USDC_ADDRESS, "neg-risk-adapter", "BUY"),
)
_EPOCH_DT: Final = datetime(1970, 1, 1, tzinfo=UTC)


def _iso(epoch_ms: int) -> str:
    moment = _EPOCH_DT + timedelta(milliseconds=epoch_ms)
    return f"{moment:%Y-%m-%dT%H:%M:%S}.{epoch_ms % 1000:03d}Z"


class PrivateEvent(NamedTuple):
    """A private event for the authenticated user (``orderEvent``, ``positions``, ``tx``)."""

    name: str
    payload: Any
    """A JSON object, except ``positions`` in the list-of-rows shape."""


class AllowanceReply(NamedTuple):
    """``(HTTP status, JSON body)`` of an allowance endpoint."""

    status: int
    payload: dict[str, Any]


class _Target:
    """One allowance target. ``pending`` counts checks since a retry submitted it."""

    __slots__ = ("error_code", "kind", "label", "pending", "required_for", "retryable",
                 "spender", "status", "token")

    def __init__(self, kind: tuple[str, str, str, str], spender: str) -> None:
        self.kind, self.token, self.label, self.required_for = kind
        self.spender = spender
        self.status = "missing"
        self.retryable = True
        self.error_code: str | None = None
        self.pending: int | None = None

    def payload(self, shown: str, tx: str | None) -> dict[str, Any]:
        out: dict[str, Any] = {
            "type": self.kind,
            "tokenAddress": self.token,
            "spenderOrOperator": self.spender,
            "label": self.label,
            "requiredFor": self.required_for,
            "confirmed": shown == "confirmed",
            "status": shown,
            "retryable": self.retryable,
        }
        if tx is not None:
            out.update(transactionId=f"tx_{tx}", txHash=f"0x{tx}", userOperationHash=f"0x{tx}ee")
        if self.error_code is not None:
            out.update(errorCode=self.error_code, errorMessage=f"simulated {self.error_code}")
        return out


class Allowances:
    """Delegated-trading allowance targets of partner sub-accounts (API reference §2.6).

    Each profile starts with ``allowance_targets`` targets, ``missing`` (retryable),
    some ``failed`` as configured. A retry POST submits every retryable missing/failed
    target (shown ``submitted`` in its reply); each such target is confirmed after
    ``allowance_confirm_polls`` further checks, and reads ``missing`` until then (a live
    chain read). A retry while one is in flight answers 409; the first
    ``allowance_retry_429`` retries answer 429 and the next ``allowance_retry_409`` 409.
    Pure and deterministic.

    Args:
        config: the allowance knobs.
        rng: source of wallet addresses and transaction hashes.
    """

    def __init__(self, config: SimulatorConfig, rng: random.Random) -> None:
        self._config = config
        self._rng = rng
        self._targets: dict[int, list[_Target]] = {}
        self._wallets: dict[int, str] = {}
        self.posts: dict[int, int] = {}
        self.checks: dict[int, int] = {}
        for profile_id in config.allowance_profiles:
            self._add(profile_id)

    def _add(self, profile_id: int) -> None:
        c = self._config
        spender = f"0x{self._rng.getrandbits(160):040x}"
        targets = [_Target(_TARGET_KINDS[i % len(_TARGET_KINDS)], spender)
                   for i in range(c.allowance_targets)]
        for target in targets[: c.allowance_failed_targets]:
            target.status, target.error_code = "failed", "RPC_READ_FAILED"
        unretryable = targets[c.allowance_failed_targets :][: c.allowance_unretryable_targets]
        for target in unretryable:
            target.status, target.retryable = "failed", False
            target.error_code = "PRIVY_SPONSORSHIP_UNAVAILABLE"
        self._targets[profile_id] = targets
        self._wallets[profile_id] = f"0x{self._rng.getrandbits(160):040x}"
        self.posts[profile_id] = 0
        self.checks[profile_id] = 0

    def has(self, profile_id: int) -> bool:
        """Whether the profile is a known sub-account."""
        return profile_id in self._targets

    def ready(self, profile_id: int) -> bool:
        """Whether every target of the profile is confirmed."""
        return all(t.status == "confirmed" for t in self._targets[profile_id])

    def check(self, profile_id: int) -> AllowanceReply:
        """``GET …/allowances``: advance pending targets, then report.

        Raises:
            KeyError: unknown profile.
        """
        targets = self._targets[profile_id]
        self.checks[profile_id] += 1
        for target in targets:
            if target.pending is None:
                continue
            target.pending += 1
            if target.pending >= self._config.allowance_confirm_polls:
                target.status, target.pending, target.error_code = "confirmed", None, None
        return AllowanceReply(200, self._body(profile_id, {}))

    def retry(self, profile_id: int) -> AllowanceReply:
        """``POST …/allowances/retry``: submit retryable targets (or a fault).

        Raises:
            KeyError: unknown profile.
        """
        targets = self._targets[profile_id]
        self.posts[profile_id] += 1
        n, c = self.posts[profile_id], self._config
        if n <= c.allowance_retry_429:
            return AllowanceReply(429, {"statusCode": 429, "message": "Too Many Requests",
                                        "retryAfterSeconds": c.allowance_retry_after_s})
        if n <= c.allowance_retry_429 + c.allowance_retry_409 or any(
            t.pending is not None for t in targets
        ):
            return AllowanceReply(409, {"statusCode": 409, "error": "Conflict",
                                        "message": "Allowance retry already running"})
        submitted: dict[int, str] = {}
        for i, target in enumerate(targets):
            if target.retryable and target.status in ("missing", "failed"):
                target.pending, target.status, target.error_code = 0, "missing", None
                submitted[i] = f"{self._rng.getrandbits(64):016x}"
        return AllowanceReply(200, self._body(profile_id, submitted))

    def _body(self, profile_id: int, submitted: dict[int, str]) -> dict[str, Any]:
        targets = self._targets[profile_id]
        shown = ["submitted" if i in submitted else t.status for i, t in enumerate(targets)]
        summary = {s: shown.count(s) for s in ("confirmed", "missing", "submitted", "failed")}
        return {
            "profileId": profile_id,
            "partnerProfileId": PARTNER_PROFILE_ID,
            "chainId": CHAIN_ID,
            "walletAddress": self._wallets[profile_id],
            "ready": all(s == "confirmed" for s in shown),
            "summary": {"total": len(targets), **summary},
            "targets": [t.payload(s, submitted.get(i))
                        for i, (t, s) in enumerate(zip(targets, shown, strict=True))],
        }


class _Order:
    __slots__ = ("client_id", "id", "market", "price", "remaining", "side", "token")

    def __init__(self, order_id: str, market: Market, side: str, token: str, price: Decimal,
                 size: Decimal) -> None:
        self.id = order_id
        self.client_id = f"c-{order_id[:8]}"
        self.market = market
        self.side = side
        self.token = token
        self.price = price
        self.remaining = size


class Account:
    """The authenticated user: open orders, fills, holdings and allowances.

    :meth:`step` produces the private events the venue would push (§3.5, §6): OME
    ``PLACEMENT``/``UPDATE``/``CANCELLATION``/``EXECUTION`` and SETTLEMENT
    ``MATCHED``/``MINED``/``FAILED`` order events, ``tx`` and ``positions``, and now and
    then an ``orderEvent`` re-sent verbatim. With quirks on, OME numbers are sometimes
    strings, ids sometimes numbers, timestamps sometimes epoch ms. Pure and
    deterministic (own random source, time passed in).

    Args:
        config: seed, quirks, duplicate probability, allowance knobs.
        exchange: the markets orders are placed on.
    """

    def __init__(self, config: SimulatorConfig, exchange: Exchange) -> None:
        self._config = config
        self._exchange = exchange
        self._rng = random.Random(f"account-{config.seed}")
        self._quirky = config.quirks
        self.address = config.auth.account if config.auth is not None else DEFAULT_ACCOUNT
        self.allowances = Allowances(config, random.Random(f"allowances-{config.seed}"))
        self._next_event = 1000
        self._orders: dict[str, _Order] = {}
        self._holdings: dict[str, tuple[Decimal, Decimal]] = {}
        self._last_order_event: dict[str, Any] | None = None
        self.duplicates = 0
        for slug in exchange.book_slugs()[:2]:
            self._holdings[slug] = (Decimal("25.5"), Decimal("0.42"))

    # -- private events ------------------------------------------------------------------

    def step(self, now_ms: int) -> list[PrivateEvent]:
        """One burst of account activity (one to five private events)."""
        last = self._last_order_event
        if last is not None and self._rng.random() < self._config.private_duplicate_p:
            self.duplicates += 1
            return [PrivateEvent("orderEvent", last)]
        markets = [m for m in (self._exchange.market(s) for s in self._exchange.book_slugs())
                   if m is not None]
        if not markets:
            return []
        roll = self._rng.random()
        if not self._orders or roll < 0.3:
            return self._place(self._rng.choice(markets), now_ms)
        order = self._orders[self._rng.choice(sorted(self._orders))]
        if roll < 0.45:
            return self._cancel(order, now_ms)
        if roll < 0.9:
            return self._fill(order, now_ms)
        return self._fak(self._rng.choice(markets), now_ms)

    def _new_order(self, market: Market) -> _Order:
        order_id = f"{self._rng.getrandbits(128):032x}"
        price = Decimal(self._rng.randint(100, 900)) / TICKS_D
        size = Decimal(self._rng.randint(100, 50_000)) * _CENT
        side = self._rng.choice(("BUY", "SELL"))
        token = self._rng.choice(("YES", "NO"))
        return _Order(order_id, market, side, token, price, size)

    def _place(self, market: Market, now_ms: int) -> list[PrivateEvent]:
        order = self._new_order(market)
        self._orders[order.id] = order
        return [self._ome(order, "PLACEMENT", now_ms)]

    def _cancel(self, order: _Order, now_ms: int) -> list[PrivateEvent]:
        del self._orders[order.id]
        return [self._ome(order, "CANCELLATION", now_ms)]

    def _fak(self, market: Market, now_ms: int) -> list[PrivateEvent]:
        order = self._new_order(market)
        status = self._rng.choice(("FILLED", "PARTIALLY_FILLED", "KILLED"))
        filled = {"FILLED": order.remaining, "KILLED": Decimal(0)}.get(
            status, (order.remaining / 2).quantize(_CENT))
        order.remaining -= filled
        event = self._ome(order, "EXECUTION", now_ms)
        event.payload["eventId"] = f"terminal:{order.id}"
        event.payload["status"] = status
        events = [event]
        if filled:
            events += self._settle(order, filled, now_ms)
        return events

    def _fill(self, order: _Order, now_ms: int) -> list[PrivateEvent]:
        portion = Decimal(self._rng.randint(10, 100)) / HUNDRED
        filled = max((order.remaining * portion).quantize(_CENT), _CENT)
        filled = min(filled, order.remaining)
        order.remaining -= filled
        if not order.remaining:
            del self._orders[order.id]
        return [self._ome(order, "UPDATE", now_ms), *self._settle(order, filled, now_ms)]

    def _settle(self, order: _Order, filled: Decimal, now_ms: int) -> list[PrivateEvent]:
        trade = f"{self._rng.getrandbits(64):016x}"
        tx_hash = f"0x{self._rng.getrandbits(256):064x}"
        fee_bps = self._rng.choice((0, FEE_RATE_BPS))  # a maker pays none
        matched = self._settlement(order, "MATCHED", (filled, fee_bps), trade, now_ms)
        matched.payload["isEstimate"] = True
        mined = self._rng.random() < 0.9
        kind = "MINED" if mined else "FAILED"
        final = self._settlement(order, kind, (filled, fee_bps), trade, now_ms)
        final.payload["txHash"] = tx_hash
        events = [matched, final, self._tx(order, filled, tx_hash, mined, now_ms)]
        if mined and order.token == "YES":
            events.append(self._position(order, filled, now_ms))
        return events

    def _event_id(self) -> int:
        self._next_event += 1
        return self._next_event

    def _ome(self, order: _Order, kind: str, now_ms: int) -> PrivateEvent:
        event_id = self._event_id()
        payload: dict[str, Any] = {
            "type": kind,
            "source": "OME",
            "eventId": str(event_id) if self._chance(0.15) else event_id,
            "orderId": order.id,
            "clientOrderId": order.client_id,
            "marketId": order.market.id if self._chance(0.3) else str(order.market.id),
            "price": self._number(order.price),
            "remainingSize": self._number(order.remaining),
            "side": order.side,
            "token": order.token,
            "timestamp": self._timestamp(now_ms),
            "userId": USER_ID,
        }
        self._last_order_event = payload
        return PrivateEvent("orderEvent", payload)

    def _settlement(
        self, order: _Order, kind: str, fill: tuple[Decimal, int], trade: str, now_ms: int
    ) -> PrivateEvent:
        filled, fee_bps = fill
        collateral = filled * order.price
        fee = (collateral * fee_bps / 10_000).quantize(Decimal("0.000001"))
        token_id = order.market.yes_token if order.token == "YES" else order.market.no_token
        payload: dict[str, Any] = {
            "type": kind,
            "source": "SETTLEMENT",
            "eventId": f"{kind.lower()}:{trade}",
            "price": str(order.price),
            "amountContracts": str(filled),
            "amountCollateral": str(collateral),
            "feeAmountContracts": "0",
            "feeAmountCollateral": str(fee),
            "configuredFeeRateBps": FEE_RATE_BPS,
            "effectiveFeeBps": fee_bps,
            "side": order.side,
            "token": order.token,
            "tokenId": token_id,
            "marketSlug": order.market.slug,
            "orderId": order.id,
            "clientOrderId": order.client_id,
            "takerOrderId": order.id,
            "tradeEventId": trade,
            "timestamp": self._timestamp(now_ms),
        }
        self._last_order_event = payload
        return PrivateEvent("orderEvent", payload)

    def _tx(
        self, order: _Order, filled: Decimal, tx_hash: str, mined: bool, now_ms: int
    ) -> PrivateEvent:
        token_id = order.market.yes_token if order.token == "YES" else order.market.no_token
        return PrivateEvent("tx", {
            "userId": USER_ID,
            "txHash": tx_hash,
            "status": "CONFIRMED" if mined else "FAILED",
            "source": "SETTLEMENT",
            "timestamp": self._timestamp(now_ms),
            "marketSlug": order.market.slug,
            "tokenId": token_id,
            "conditionId": order.market.condition_id,
            "amountContracts": str(filled),
            "amountCollateral": str(filled * order.price),
            "price": str(order.price),
            "side": order.side,
        })

    def _position(self, order: _Order, filled: Decimal, now_ms: int) -> PrivateEvent:
        shares, avg = self._holdings.get(order.market.slug, (Decimal(0), Decimal(0)))
        delta = filled if order.side == "BUY" else -filled
        new = max(shares + delta, Decimal(0))
        if order.side == "BUY" and new:
            avg = ((shares * avg + filled * order.price) / new).quantize(Decimal("0.000001"))
        self._holdings[order.market.slug] = (new, avg)
        row = {"marketSlug": order.market.slug, "tokenId": order.market.yes_token,
               "yesPosition": str(new), "noPosition": "0", "value": str(new * order.price)}
        if self._chance(0.3):  # the Python SDK example's shape: a list of rows
            return PrivateEvent("positions", [row])
        return PrivateEvent("positions", {
            "account": self.address,
            "marketAddress": None,
            "positions": [{**row, "timestamp": self._timestamp(now_ms)}],
        })

    def _chance(self, p: float) -> bool:
        return self._quirky and self._rng.random() < p

    def _number(self, value: Decimal) -> Decimal | str:
        return str(value) if self._chance(0.2) else value

    def _timestamp(self, now_ms: int) -> str | int:
        return now_ms if self._chance(0.3) else _iso(now_ms)

    # -- REST ------------------------------------------------------------------------------

    def portfolio(self) -> dict[str, Any]:
        """The body of ``GET /portfolio/positions`` (§2.5) for the current holdings."""
        clob = []
        for slug, (shares, avg) in sorted(self._holdings.items()):
            market = self._exchange.market(slug)
            if market is None or not shares:
                continue
            clob.append(self._clob_position(market, shares, avg))
        return {
            "amm": [], "clob": clob, "group": [], "points": "0", "accumulativePoints": "0",
            "rewards": {"todaysRewards": "0", "rewardsByEpoch": [], "rewardsChartData": [],
                        "totalUnpaidRewards": "0", "totalUserRewardsLastEpoch": "0"},
        }

    def _clob_position(self, market: Market, shares: Decimal, avg: Decimal) -> dict[str, Any]:
        zero = {"cost": "0", "fillPrice": "0", "marketValue": "0", "realisedPnl": "0",
                "unrealizedPnl": "0"}
        raw = int(shares * _RAW6)
        yes = {"cost": str(int(shares * avg * _RAW6)), "fillPrice": str(int(avg * _RAW6)),
               "marketValue": str(raw // 2), "realisedPnl": "0", "unrealizedPnl": "0"}
        return {
            "market": {"id": market.id, "slug": market.slug, "title": market.title,
                       "status": market.status, "closed": not market.active,
                       "deadline": _iso(market.expiration_ms), "conditionId": market.condition_id},
            "makerAddress": self.address,
            "positions": {"yes": yes, "no": zero},
            "tokensBalance": {"yes": str(raw), "no": "0"},
            "latestTrade": {"latestYesPrice": 0.5, "latestNoPrice": 0.5, "outcomeTokenPrice": 0.5},
        }
