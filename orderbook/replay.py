"""Consumer side: rebuild books from ``book`` and ``book_delta`` records.

This is what a downstream consumer does with the daemon's stream, and what the tests
use to prove that replaying a market's records in ``seq`` order reproduces the
daemon's book exactly. Gaps in a market's ``seq`` are reported, never papered over:
after a gap the market's book is unknown until its next full ``book`` record.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from orderbook.book import OrderBook
from orderbook.types import Book, BookDelta


@dataclass(slots=True)
class Gap:
    """A hole in one market's ``seq``: records ``expected`` .. ``got - 1`` are missing."""

    market: str
    expected: int
    got: int


@dataclass(slots=True)
class ReplayState:
    """One market's rebuilt book and the next ``seq`` expected."""

    book: OrderBook = field(default_factory=OrderBook)
    next_seq: int = 1
    synced: bool = False
    """True once a full ``book`` arrived and no gap has broken the chain since."""


class Replayer:
    """Applies records in arrival order; returns a :class:`Gap` when one is seen."""

    def __init__(self) -> None:
        self.markets: dict[str, ReplayState] = {}
        self.gaps: list[Gap] = []
        self.duplicates = 0

    def apply(self, record: Book | BookDelta) -> Gap | None:
        """Apply one record.

        A ``seq`` lower than expected is a duplicate (counted, ignored). A higher one
        is a gap: the book is marked unsynced; a full ``book`` record re-syncs it.

        Returns:
            The gap, if this record revealed one.
        """
        state = self.markets.get(record.market)
        if state is None:
            state = self.markets[record.market] = ReplayState()
        gap = None
        if record.seq < state.next_seq:
            self.duplicates += 1
            return None
        if record.seq > state.next_seq and state.next_seq > 1:
            gap = Gap(record.market, state.next_seq, record.seq)
            self.gaps.append(gap)
            state.synced = False
        state.next_seq = record.seq + 1
        if isinstance(record, Book):
            state.book.clear()
            state.book.apply_delta(record.bids, record.asks)
            state.synced = True
        elif state.synced:
            state.book.apply_delta(record.bids, record.asks)
        return gap

    def book(self, market: str) -> OrderBook | None:
        """The rebuilt book of ``market`` if it is in sync, else None."""
        state = self.markets.get(market)
        return state.book if state is not None and state.synced else None
