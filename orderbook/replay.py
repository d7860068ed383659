"""Consumer side: rebuild books from ``book`` and ``book_delta`` records.

This is what a downstream consumer does with the daemon's stream, and what the tests
use to prove that replaying a market's records reproduces the daemon's book exactly.
The rules (the README's "consumer rules"), per market, in stream order:

- Follow the newest run. Every record carries ``run`` (one id per daemon run) and ``seq``
  counts per (run, market) from 1, the run's first record being a ``book``. A record of a
  run not seen before for this market starts that market over (a *restart*, counted, never
  a duplicate); a record of a run this market has already left is a straggler of an older
  run and is ignored (counted in ``stale_runs``). No clock is compared: "newest" is the
  run that appeared last.
- A ``book`` always replaces the book.
- Within a run, a ``seq`` lower than expected is a duplicate (counted, ignored) and a
  higher one is a gap: records were lost, reported and never papered over; the market's
  book is unknown until its next ``book``.
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
    run: str = ""


@dataclass(slots=True)
class Restart:
    """A market moved to a new run (daemon restart or failover)."""

    market: str
    old_run: str
    new_run: str


@dataclass(slots=True)
class ReplayState:
    """One market's rebuilt book, its current run and the next ``seq`` expected."""

    book: OrderBook = field(default_factory=OrderBook)
    next_seq: int = 1
    synced: bool = False
    """True once a full ``book`` arrived and no gap has broken the chain since."""
    run: str | None = None
    """The run followed; None before the market's first record."""
    left: set[str] = field(default_factory=set)
    """Runs this market has moved away from (their records are ignored)."""


class Replayer:
    """Applies records in arrival order; returns a :class:`Gap` when one is seen."""

    def __init__(self) -> None:
        self.markets: dict[str, ReplayState] = {}
        self.gaps: list[Gap] = []
        self.restarts: list[Restart] = []
        self.duplicates = 0
        self.stale_runs = 0
        """Records of a run the market had already left (ignored)."""

    @property
    def runs(self) -> set[str]:
        """Every run seen, over all markets."""
        out: set[str] = set()
        for state in self.markets.values():
            out |= state.left
            if state.run is not None:
                out.add(state.run)
        return out

    def apply(self, record: Book | BookDelta) -> Gap | None:
        """Apply one record by the rules in the module docstring.

        Returns:
            The gap, if this record revealed one.
        """
        state = self.markets.get(record.market)
        if state is None:
            state = self.markets[record.market] = ReplayState()
        run = record.run
        if run != state.run:
            if run in state.left:
                self.stale_runs += 1
                return None
            if state.run is not None:
                self.restarts.append(Restart(record.market, state.run, run))
                state.left.add(state.run)
                state.next_seq = 1  # the new run's records should start at 1 ...
                state.synced = False
            else:
                state.next_seq = record.seq  # ... but a late joiner starts anywhere
            state.run = run
        gap = None
        if record.seq < state.next_seq:
            self.duplicates += 1
            return None
        if record.seq > state.next_seq:
            gap = Gap(record.market, state.next_seq, record.seq, run)
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
