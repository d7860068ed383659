"""Per-market synchronizer: which full book wins, and the record it implies.

Limitless has no sequence numbers and no checksums (limitless-api.md §3.6): every
``orderbookUpdate`` is the whole book of the market's YES token, stamped with an
exchange ``timestamp``; the REST book (§2.3) has no timestamp at all. So "sync"
here means (STYLE.md, "Limitless specifics"):

- seed from REST after every (re)subscribe: the edge sees ``needs_snapshot`` and
  calls :meth:`BookSynchronizer.on_rest_snapshot`;
- replace the held book wholesale on each WebSocket book and publish only the
  levels that changed (:meth:`BookSynchronizer.on_update`);
- drop a WebSocket book whose exchange timestamp is older than the latest one
  applied (equal timestamps are applied);
- ask for a REST re-seed (``needs_snapshot``) when the book crosses, and whenever
  the edge calls :meth:`BookSynchronizer.request_snapshot` (resubscribe, staleness,
  audit divergence).

Output: one :class:`~orderbook.types.Book` first (consumers always get a full book
before any delta), then :class:`~orderbook.types.BookDelta` records; after each
REST re-seed another ``Book``. Every emitted record gets ``seq = previous + 1``,
per market, never reused. Replaying them in seq order with
:meth:`OrderBook.clear` (on a ``Book``) and :meth:`OrderBook.apply_delta`
reproduces :attr:`BookSynchronizer.book` exactly.

Pure: no I/O, no clock. The edge owns fetching, timing and logging at INFO.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from orderbook.book import OrderBook
from orderbook.errors import InvalidLevel
from orderbook.types import SCHEMA_VERSION, Book, BookDelta, BookSnapshot, Level

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class SyncStats:
    """Counters of one :class:`BookSynchronizer`; the edge exports them as metrics.

    Attributes:
        updates: WebSocket books received (every :meth:`~BookSynchronizer.on_update` call).
        applied: WebSocket books applied to the held book (not stale, valid).
        deltas_emitted: ``BookDelta`` records emitted.
        books_emitted: ``Book`` records emitted (first WS book or REST seeds).
        identical_suppressed: WebSocket books equal to the held book (nothing emitted).
        stale_dropped: WebSocket books older than the latest one applied (dropped).
        crossed: applied books (WS or REST) whose best bid >= best ask.
        invalid: books rejected with :class:`~orderbook.errors.InvalidLevel`.
    """

    updates: int = 0
    applied: int = 0
    deltas_emitted: int = 0
    books_emitted: int = 0
    identical_suppressed: int = 0
    stale_dropped: int = 0
    crossed: int = 0
    invalid: int = 0


class BookSynchronizer:
    """Pure state machine for one market's book (STYLE.md §3).

    Call :meth:`on_rest_snapshot` with each REST book and :meth:`on_update` with
    each WebSocket book; publish whatever record they return. After every call,
    check :attr:`needs_snapshot`: when True the edge should fetch
    ``GET /markets/{slug}/orderbook`` (between reads, never inside this class) and
    pass the result to :meth:`on_rest_snapshot`, which clears it.

    Token: the synchronizer records the ``token`` of the latest applied book (REST
    or WS) and stamps it on the records; a different token is not treated
    specially (the edge's market metadata is authoritative for which token is the
    YES token; this class just reports what arrived).

    Attributes:
        market: market slug, stamped on every record.
        token: YES token id of the latest applied book.
        seq: seq of the last emitted record (0 before the first).
        needs_snapshot: a REST (re-)seed is wanted; True at start.
        snapshot_reason: why :attr:`needs_snapshot` was last set (``"initial"`` at
            start, ``"crossed"``, or what was passed to :meth:`request_snapshot`);
            ``None`` once a REST seed has been applied.
        last_ts: exchange timestamp (epoch ms) of the latest WebSocket book applied,
            ``None`` before the first, after a REST seed and after :meth:`reset_clock`.
        book: the held book.
        seeded: a full ``Book`` record has been emitted.
        stats: counters, see :class:`SyncStats`.
    """

    __slots__ = (
        "book",
        "last_ts",
        "market",
        "needs_snapshot",
        "run",
        "seeded",
        "seq",
        "snapshot_reason",
        "stats",
        "token",
    )

    def __init__(self, market: str, token: str, run: str = "") -> None:
        """Create the synchronizer of one market.

        Args:
            market: market slug.
            token: YES token id as known from the market metadata.
            run: the daemon run stamped on every record (see :meth:`new_run`).
        """
        self.market = market
        self.token = token
        self.run = run
        self.seq = 0
        self.needs_snapshot = True
        self.snapshot_reason: str | None = "initial"
        self.last_ts: int | None = None
        self.book = OrderBook()
        self.seeded = False
        self.stats = SyncStats()

    def on_rest_snapshot(self, snap: BookSnapshot) -> Book:
        """Seed or re-seed the book from a REST full book.

        The held book is replaced wholesale, :attr:`needs_snapshot` is cleared and
        a full ``Book`` record is emitted. A REST book carries no exchange time;
        :attr:`last_ts` is reset: the REST book is the new authority, and an exchange
        timestamp from before it (possibly a faulty one, far in the future) must not make
        every later WebSocket book look stale.

        A crossed REST book is counted in ``stats.crossed`` but does **not** set
        :attr:`needs_snapshot` again: the REST book is the authority being asked
        for, and re-requesting it would loop. The next WebSocket book that leaves
        the book crossed requests a re-seed.

        Args:
            snap: the REST book; ``snap.ts`` is normally ``None``.

        Returns:
            The ``Book`` record (``ts`` = ``snap.ts`` if given, else ``snap.recv_ts``).

        Raises:
            InvalidLevel: a level is invalid; counted in ``stats.invalid``, and the
                book, :attr:`seq`, :attr:`last_ts` and :attr:`needs_snapshot` are
                unchanged.
        """
        self._replace(snap)
        self.token = snap.token
        self.needs_snapshot = False
        self.snapshot_reason = None
        self.last_ts = None  # a fresh start: no exchange time from before it can freeze us
        if self.book.is_crossed():
            self.stats.crossed += 1
            logger.debug("%s: REST book is crossed", self.market)
        return self._emit_book(snap)

    def on_update(self, snap: BookSnapshot) -> Book | BookDelta | None:
        """Apply a WebSocket full book and return the record it implies.

        Order of checks:

        1. stale: ``snap.ts`` older than :attr:`last_ts` -> dropped, counted in
           ``stats.stale_dropped``, returns ``None`` (never a stale overwrite; equal
           timestamps are applied). A stale book is not validated.
        2. the book is validated and applied (see Raises).
        3. never seeded -> a full ``Book`` record.
        4. no level changed -> counted in ``stats.identical_suppressed``, returns
           ``None`` (:attr:`last_ts` still advances).
        5. otherwise a ``BookDelta`` with the changed levels, best first.

        If the applied book is crossed, ``stats.crossed`` is counted and a re-seed
        is requested (``snapshot_reason = "crossed"``); the record is still
        returned, because it is what the exchange sent.

        A book with ``snap.ts is None`` (no exchange time) skips the stale check,
        does not move :attr:`last_ts` and is stamped with ``snap.recv_ts``.

        Args:
            snap: the WebSocket book.

        Returns:
            ``Book``, ``BookDelta``, or ``None`` when nothing is to be published.

        Raises:
            InvalidLevel: a level is invalid; counted in ``stats.invalid``; book,
                :attr:`seq` and :attr:`last_ts` are unchanged.
        """
        stats = self.stats
        stats.updates += 1
        ts = snap.ts
        if ts is not None and self.last_ts is not None and ts < self.last_ts:
            stats.stale_dropped += 1
            logger.debug("%s: stale book dropped ts=%s held=%s", self.market, ts, self.last_ts)
            return None
        bids, asks = self._replace(snap)
        stats.applied += 1
        if ts is not None:
            self.last_ts = ts
        self.token = snap.token
        record: Book | BookDelta
        if not self.seeded:
            record = self._emit_book(snap)
        elif bids or asks:
            record = self._emit_delta(snap, bids, asks)
        else:
            stats.identical_suppressed += 1
            return None
        if self.book.is_crossed():
            stats.crossed += 1
            self.request_snapshot("crossed")
        return record

    def request_snapshot(self, reason: str) -> None:
        """Ask the edge for a REST re-seed.

        Used after every resubscribe, on staleness and on audit divergence. The
        request stays pending until :meth:`on_rest_snapshot`; a later request
        overwrites :attr:`snapshot_reason` with its own reason.

        Args:
            reason: short label for logs and metrics, e.g. ``"resubscribe"``.
        """
        if not self.needs_snapshot:
            logger.debug("%s: snapshot requested: %s", self.market, reason)
        self.needs_snapshot = True
        self.snapshot_reason = reason

    def reset_clock(self) -> None:
        """Forget the exchange time of the latest book (the stale check starts over).

        The edge calls this on every (re)subscribe: a new session owes nothing to the
        timestamps of the last one, and a faulty timestamp must not outlive its session.
        """
        self.last_ts = None

    def snapshot_record(self, recv_ts: int) -> Book | None:
        """A fresh ``Book`` of the held book with the next ``seq``, or None if unseeded.

        For a sink that conflated this market's records: it gets a full book it can
        rebuild from, and since the record takes a ``seq`` of its own, every other sink
        must be given it too (the fan-out does that), so no sink sees a hole in ``seq``.

        Args:
            recv_ts: local time, epoch ms; also ``ts`` when no exchange time is held.
        """
        if not self.seeded:
            return None
        self.seq += 1
        self.stats.books_emitted += 1
        bids, asks = self.book.levels()
        return Book(
            SCHEMA_VERSION,
            self.market,
            self.token,
            self.seq,
            self.last_ts if self.last_ts is not None else recv_ts,
            recv_ts,
            bids[0][0] if bids else None,
            asks[0][0] if asks else None,
            bids,
            asks,
            self.run,
        )

    def new_run(self, run: str, recv_ts: int) -> Book | None:
        """Start numbering a new run: ``seq`` restarts at 1 and the first record is a book.

        Returns the held book as that first record (``seq`` 1 of ``run``), or None when
        unseeded, in which case the market's first record of the run is its next ``Book``.
        """
        self.run = run
        self.seq = 0
        return self.snapshot_record(recv_ts)

    def snapshot_satisfied(self) -> None:
        """Withdraw a pending re-seed request without a REST book.

        The edge calls this when a WebSocket full book was applied while the REST
        fetch was in flight: that book is as fresh as anything REST could return, and
        any later change brings another update, whereas applying the REST book now
        could roll the market back to an older state. Not for a crossed book.
        """
        self.needs_snapshot = False
        self.snapshot_reason = None

    # ----------------------------------------------------------------- private

    def _replace(self, snap: BookSnapshot) -> tuple[list[Level], list[Level]]:
        """Replace the held book, counting an :class:`InvalidLevel` before re-raising."""
        try:
            return self.book.replace(snap.bids, snap.asks)
        except InvalidLevel:
            self.stats.invalid += 1
            raise

    def _emit_book(self, snap: BookSnapshot) -> Book:
        book = self.book
        self.seq += 1
        self.seeded = True
        self.stats.books_emitted += 1
        bids, asks = book.levels()
        return Book(
            v=SCHEMA_VERSION,
            market=self.market,
            token=self.token,
            seq=self.seq,
            ts=snap.recv_ts if snap.ts is None else snap.ts,
            recv_ts=snap.recv_ts,
            best_bid=bids[0][0] if bids else None,
            best_ask=asks[0][0] if asks else None,
            bids=bids,
            asks=asks,
            run=self.run,
        )

    def _emit_delta(
        self,
        snap: BookSnapshot,
        bids: list[Level],
        asks: list[Level],
    ) -> BookDelta:
        book = self.book
        self.seq += 1
        self.stats.deltas_emitted += 1
        # Positional: this runs for every update, and msgspec builds positionally faster.
        return BookDelta(
            SCHEMA_VERSION,
            self.market,
            self.token,
            self.seq,
            snap.recv_ts if snap.ts is None else snap.ts,
            snap.recv_ts,
            book.best_bid(),
            book.best_ask(),
            bids,
            asks,
            self.run,
        )
