"""The set of markets the daemon follows, and the metadata records it emits for them.

Pure bookkeeping (no I/O): discovery and bootstrap feed it venue ``Market`` objects,
it answers with ``market`` records to emit and keeps one
:class:`~orderbook.sync.BookSynchronizer` per followed CLOB market. A removed market's
state (book, synchronizer, metadata) is evicted, so weeks of short-lived markets do not
grow memory; only its last ``seq`` is kept, so its ``seq`` keeps counting if it comes
back, starting again with a full ``book``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field, fields

import msgspec

from orderbook.sync import BookSynchronizer, SyncStats
from orderbook.types import SCHEMA_VERSION
from sinks.records import MarketInfo
from streamer.protocol.messages import Market


@dataclass(slots=True)
class MarketEntry:
    """One followed CLOB market."""

    slug: str
    token: str
    sync: BookSynchronizer
    info: MarketInfo
    last_update_ms: int = 0
    """Monotonic ms of the last WebSocket book applied or REST seed (0: never)."""
    last_check_ms: int = 0
    """Monotonic ms of the last staleness probe."""


@dataclass(slots=True)
class Universe:
    """Followed markets: CLOB books by slug, AMM price feeds by address."""

    markets: dict[str, MarketEntry] = field(default_factory=dict)
    amm: dict[str, str] = field(default_factory=dict)
    """AMM market address -> slug (``newPriceData`` pass-through)."""
    version: int = 0
    """Bumped whenever the subscription set changes."""
    retired: dict[str, int] = field(default_factory=dict)
    """Removed market slug -> its last ``seq`` (all that is kept of it)."""
    removed_stats: SyncStats = field(default_factory=SyncStats)
    """The counters of every removed market's synchronizer, summed (metrics add them to
    the followed markets', so a counter never goes down when a market is removed)."""
    run: str = ""
    """The current run, given to every new market's synchronizer (the feed sets it)."""

    def slugs(self) -> list[str]:
        """Followed CLOB slugs, sorted (the ``marketSlugs`` of the subscription)."""
        return sorted(self.markets)

    def addresses(self) -> list[str]:
        """AMM addresses (the ``marketAddresses`` of the subscription)."""
        return sorted(self.amm)

    def active(self) -> list[MarketEntry]:
        """Followed CLOB market entries (a removed market's entry is gone)."""
        return list(self.markets.values())

    def get(self, slug: str) -> MarketEntry | None:
        """The entry for ``slug``, or None when it is not followed."""
        return self.markets.get(slug)

    def update(self, markets: Iterable[Market], now_ms: int, *, prune: bool) -> list[MarketInfo]:
        """Merge a discovery result; returns the ``market`` records to emit.

        Args:
            markets: leaf markets (groups already expanded) that should be followed.
            now_ms: local time for the records.
            prune: drop followed markets missing from ``markets`` (``--all-markets``).
        """
        out: list[MarketInfo] = []
        seen: set[str] = set()
        changed = False
        for market in markets:
            seen.add(market.slug)
            if (market.tradeType or "clob").lower() == "amm":
                changed |= self._update_amm(market)
                continue
            info = market_info(market, now_ms, "added")
            entry = self.markets.get(market.slug)
            if entry is None:
                token = info.token or ""
                sync = BookSynchronizer(market.slug, token, self.run)
                sync.seq = self.retired.pop(market.slug, 0)  # seq continues; a book comes first
                entry = MarketEntry(market.slug, token, sync, info)
                self.markets[market.slug] = entry
                out.append(info)
                changed = True
            elif _differs(entry.info, info):
                entry.info = market_info(market, now_ms, "updated")
                out.append(entry.info)
        if prune:
            for entry in self.active():
                if entry.slug not in seen:
                    out.append(self.remove(entry.slug, now_ms))
                    changed = True
        if changed:
            self.version += 1
        return out

    def remove(self, slug: str, now_ms: int, status: str | None = None) -> MarketInfo:
        """Stop following ``slug`` and evict its state; returns its ``removed`` record."""
        entry = self.markets.pop(slug)
        self.retired[slug] = entry.sync.seq
        removed, stats = self.removed_stats, entry.sync.stats
        for f in fields(SyncStats):
            setattr(removed, f.name, getattr(removed, f.name) + getattr(stats, f.name))
        self.version += 1
        return msgspec.structs.replace(
            entry.info, recv_ts=now_ms, event="removed", status=status or entry.info.status
        )

    def _update_amm(self, market: Market) -> bool:
        address = market.address
        if not address or address in self.amm:
            return False
        self.amm[address] = market.slug
        return True


def in_shard(slug: str, index: int, count: int) -> bool:
    """Whether ``slug`` belongs to shard ``index`` of ``count``.

    A stable hash (BLAKE2b of the slug's UTF-8), not Python's per-process ``hash()``:
    every daemon, on every machine, puts each market in the same shard, so N daemons
    with shards 0..N-1 cover every market exactly once.
    """
    digest = hashlib.blake2b(slug.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % count == index


def expand(markets: Iterable[Market]) -> list[Market]:
    """Replace group (NegRisk) markets by their child markets, where the books live."""
    out: list[Market] = []
    for market in markets:
        if market.markets:
            children = [
                c if c.groupSlug else msgspec.structs.replace(c, groupSlug=market.slug)
                for c in market.markets
            ]
            out.extend(expand(children))
        else:
            out.append(market)
    return out


def is_resolved(market: Market) -> bool:
    """The market has a winner (or says it is resolved)."""
    return (market.winningOutcomeIndex is not None
            or (market.status or "").upper() == "RESOLVED")


def is_live(market: Market, now_ms: int) -> bool:
    """False for expired or resolved markets."""
    if market.expired or market.winningOutcomeIndex is not None:
        return False
    status = (market.status or "").upper()
    if status in {"RESOLVED", "CLOSED", "EXPIRED"}:
        return False
    exp = market.expirationTimestamp
    return exp is None or exp > now_ms


def market_info(market: Market, now_ms: int, event: str) -> MarketInfo:
    """The ``market`` record for a venue market."""
    tokens: dict[str, str] = {}
    if market.yes_token is not None:
        tokens["yes"] = market.yes_token
    if market.no_token is not None:
        tokens["no"] = market.no_token
    venue = market.venue
    return MarketInfo(
        v=SCHEMA_VERSION,
        market=market.slug,
        recv_ts=now_ms,
        title=market.title or "",
        token=tokens.get("yes"),
        tokens=tokens,
        exchange=venue.exchange if venue is not None else None,
        adapter=venue.adapter if venue is not None else None,
        status=market.status,
        expiration=market.expirationTimestamp,
        trade_type=market.tradeType,
        group=market.groupSlug,
        event=event,
    )


def _differs(a: MarketInfo, b: MarketInfo) -> bool:
    return (a.title, a.tokens, a.exchange, a.adapter, a.status, a.expiration) != (
        b.title,
        b.tokens,
        b.exchange,
        b.adapter,
        b.status,
        b.expiration,
    )

