"""The held order book of one token: per side, parallel best-first lists.

Pure and synchronous: no I/O, no clock, only stdlib + msgspec (and the optional C
fast path below).

The venue sends the *whole* book on every ``orderbookUpdate`` (limitless-api.md
§3.6), so the hot path is :meth:`OrderBook.replace`: make the held book equal to
the received one and report the minimal set of changed levels, which is what the
daemon publishes as a ``book_delta``. Consumers rebuild the book from those
records with :meth:`OrderBook.apply_delta`.

Numbers (no Decimal on the hot path)
------------------------------------
A price or size is kept as its **wire text** (``"0.515"``), which is also what
goes out, and compared through an exact integer **key**: the number scaled by
10**18 (``"0.515"`` -> ``515 * 10**15``). Text with more than 18 decimal places
gets a :class:`~decimal.Decimal` key of the same scale instead (ints and Decimals
compare exactly), so no number is ever rounded. Keys are cached per text, so a
price seen before costs one dict lookup. The only accepted spelling is a plain
decimal, ``DIGITS[.DIGITS]`` (a JSON number decoded with ``float_hook=str``, an
integer, or a numeric string of that form). Anything else (an exponent as in
``1e9999``, a sign, ``NaN``, ``Infinity``, spaces, more than
:data:`MAX_SIGNIFICANT_DIGITS` significant digits, a price outside (0, 1]) makes
the level invalid: :class:`~orderbook.errors.InvalidLevel`, and the book is not
touched.

Why not a SortedDict: every update is a whole, already ordered side, so building
the new best-first lists straight from the payload and merge-walking them against
the held lists beats keeping a sorted map up to date level by level (measured by
``python -m streamer.bench``; see the README's Performance section).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from decimal import Context, Decimal
from itertools import compress, count
from operator import ne
from typing import Final, Literal, TypeAlias

import msgspec

from orderbook.errors import InvalidLevel
from orderbook.types import Level, PriceLevel

Side = Literal["bid", "ask"]
"""Which side of the book: ``"bid"`` (buy) or ``"ask"`` (sell)."""

Key: TypeAlias = int | Decimal
"""An exact numeric key: the number times 10**18 (an int unless that would round)."""

ZERO: Final = "0"
"""Size text of a removed level in a delta."""

SCALE_PLACES: Final = 18
"""Decimal places an int key holds exactly; text with more places gets a Decimal key."""

MAX_SIGNIFICANT_DIGITS: Final = 30
"""A price or size with more significant digits than this is invalid."""

ONE: Final = 10**SCALE_PLACES
"""The key of the price ``1``, the highest valid price."""

CACHE_MAX: Final = 1 << 16
"""Entries of the price cache before it is cleared (a hostile feed cannot grow it)."""

SIZE_CACHE_MAX: Final = 1 << 12
"""Entries of the size cache before it is cleared. Sizes take ever new values (a price
grid is small), so a big size cache mostly holds sizes never seen again, and its lookups
miss the CPU caches: 4,096 entries measured ~5% (typical) to ~7% (stress) faster per
update than 65,536, and each clear is small."""

_SCALES: Final = tuple(10 ** (SCALE_PLACES - places) for places in range(SCALE_PLACES + 1))
"""``_SCALES[places]`` turns the digits of a number with ``places`` decimals into its key."""
_INT_LIMIT: Final = 10**MAX_SIGNIFICANT_DIGITS
"""An ``int`` below this has at most :data:`MAX_SIGNIFICANT_DIGITS` digits."""
_WIDE: Final = Context(prec=2 * MAX_SIGNIFICANT_DIGITS + SCALE_PLACES)
NUMBER_TEXT: Final = str.strip
"""The ``float_hook`` that keeps a JSON number's wire text: msgspec hands the hook the
number's text, and ``str.strip`` returns that very string (a JSON number has no
whitespace), like ``str`` does, but is a cheaper call: decoding a 20-level side is ~25%
faster (measured: 2.4 vs 3.1 us)."""
LEVELS_DECODER: Final = msgspec.json.Decoder(list[PriceLevel], float_hook=NUMBER_TEXT)
"""One side's levels from raw JSON, numbers as wire text (``0.515`` -> ``"0.515"``)."""

Entry: TypeAlias = tuple[Key, str]

PURE_ENV: Final = "LIMITLESS_STREAMER_PURE_PYTHON"
"""Set to ``1`` to run the pure-Python path even where the C fast path is built."""
C_PLAN: Callable[[msgspec.Raw, list[Level], list[Key], list[Key], bool],
                 tuple[list[Level], list[Key], list[Key], list[Level]] | tuple[()] | None] | None
"""The C fast path (``orderbook/_cside.c``): plans a raw side it can prove the Python path
would plan the same way, and returns None for anything else. None when it is not built
(no C compiler at install) or :data:`PURE_ENV` is set; the records are the same either way
(tests/orderbook/test_cside.py checks it against this module), only the CPU differs."""
BOOK_CORE: str
"""Which path plans the sides, and why: what the start-up log and the benchmark print."""
if os.environ.get(PURE_ENV, "") not in ("", "0"):
    C_PLAN = None
    BOOK_CORE = f"pure Python ({PURE_ENV} is set)"
else:
    try:
        from orderbook._cside import plan as C_PLAN
        BOOK_CORE = "C fast path"
    except ImportError:  # not built: the pure-Python path
        C_PLAN = None
        BOOK_CORE = "pure Python (the C fast path is not built)"
_WIRE_TYPES: Final = frozenset((str, int))
"""What a decoded number can be. A cache hit for anything else (``True == 1``,
``1.0 == 1``) is not trusted: it goes through :func:`parse_number`, which refuses it."""
_PRICES: dict[object, Entry] = {}
_SIZES: dict[object, Entry] = {}


def parse_number(value: object) -> Entry | str:
    """Parse one wire number into ``(key, text)``, or return why it is invalid.

    Args:
        value: a ``str`` (a JSON number decoded with ``float_hook=str``, or a numeric
            string) or an ``int``; anything else is invalid.

    Returns:
        ``(key, text)`` where ``text`` is the wire text and ``key`` the exact number
        times 10**18, or a short reason string.
    """
    if type(value) is str:
        text = value
    elif type(value) is int:
        if 0 <= value < _INT_LIMIT:  # no sign, at most MAX_SIGNIFICANT_DIGITS digits
            return value * ONE, str(value)
        text = str(value)  # invalid: the general path says why
    else:
        return f"not a number: {type(value).__name__}"
    # One isdigit/isascii on all digits at once: with ``whole`` non-empty and a dot
    # followed by at least one digit, that is exactly DIGITS[.DIGITS] (the text after
    # the first dot holding another dot fails isdigit).
    whole, dot, frac = text.partition(".")
    digits = whole + frac
    if not (whole and (frac or not dot) and digits.isdigit() and digits.isascii()):
        return "not a plain decimal number (no sign, exponent, NaN or Infinity)"
    # Leading zeros are not significant; only text that long can have too many digits.
    if len(digits) > MAX_SIGNIFICANT_DIGITS and (
        len(digits.lstrip("0")) > MAX_SIGNIFICANT_DIGITS
    ):
        return f"more than {MAX_SIGNIFICANT_DIGITS} significant digits"
    places = len(frac)
    if places <= SCALE_PLACES:
        return int(digits) * _SCALES[places], text
    return Decimal(text).scaleb(SCALE_PLACES, _WIDE), text


def price_entry(value: object) -> Entry | str:
    """``(key, text)`` of a price (cached), or why it is invalid (not in (0, 1], ...)."""
    return _cached_entry(value, _PRICES, CACHE_MAX, price=True)


def size_entry(value: object) -> Entry | str:
    """``(key, text)`` of a size (cached), or why it is invalid."""
    return _cached_entry(value, _SIZES, SIZE_CACHE_MAX, price=False)


def _cached_entry(value: object, cache: dict[object, Entry], limit: int, *,
                  price: bool) -> Entry | str:
    """``value`` looked up in ``cache``, or parsed (and a price range-checked) and cached;
    the cache is cleared when it holds ``limit`` entries."""
    entry = cache.get(value)
    if entry is not None and type(value) in _WIRE_TYPES:
        return entry
    return _parse_and_cache(value, cache, limit, price=price)


def _parse_and_cache(value: object, cache: dict[object, Entry], limit: int, *,
                     price: bool) -> Entry | str:
    """``value`` parsed (and a price range-checked) and cached, or why it is invalid."""
    parsed = parse_number(value)
    if isinstance(parsed, str):
        return parsed
    if price and not 0 < parsed[0] <= ONE:
        return "price is not in (0, 1]"
    if len(cache) >= limit:
        cache.clear()
    cache[value] = parsed
    return parsed


class _Side:
    """One side of a book, best first: level texts, price keys and size keys in step.

    ``last_in`` is the last decoded input the lists were built from, one to one (so an
    unchanged stretch is found by Struct comparisons in C), or None; ``raw`` is raw JSON
    of the side that the lists equal (so an unchanged side is skipped before decoding),
    or None. Both are ``None`` after any other edit; after the C fast path changed the
    side, only ``last_in`` is (nothing was decoded).
    """

    __slots__ = ("descending", "levels", "keys", "sizes", "last_in", "raw")

    def __init__(self, descending: bool) -> None:
        self.descending = descending
        self.levels: list[Level] = []
        self.keys: list[Key] = []
        self.sizes: list[Key] = []
        self.last_in: Sequence[PriceLevel] | None = None
        self.raw: msgspec.Raw | None = None

    def set(self, levels: list[Level], keys: list[Key], sizes: list[Key]) -> None:
        self.levels = levels
        self.keys = keys
        self.sizes = sizes


_Plan: TypeAlias = tuple[list[Level], list[Key], list[Key], list[Level],
                        Sequence[PriceLevel] | None, msgspec.Raw | None]
"""How one side changes, decided before anything is mutated: the new levels, price keys
and size keys, the changes that lead there, and the new ``last_in`` and ``raw``. A plain
tuple: it is built for nearly every update, and a tuple costs a fraction of an instance
with ``__init__``."""


Levels: TypeAlias = Sequence[PriceLevel] | msgspec.Raw
"""One side as input: decoded levels, or the side's raw JSON array (decoded lazily)."""


class OrderBook:
    """Bids and asks of one token; prices and sizes are wire text with exact keys.

    Storage: per side three parallel lists, best first (bids by descending price,
    asks ascending): the ``(price, size)`` texts, the price keys and the size keys
    (see the module docstring). No Decimal is made for plain prices and sizes.

    Hot path (:meth:`replace`): a side whose raw JSON equals the last one applied is
    skipped before decoding; else the C fast path (:data:`C_PLAN`) plans it when it can.
    Otherwise the positions that differ from the last decoded input are found by Struct
    comparisons in C (none: the side is unchanged; skipped when a side may hold a JSON
    boolean, which Struct equality would take for ``1`` or ``0``), and with as many
    levels as before only those are looked at (sizes changed in place, the commonest
    update); else only the stretch between the common prefix and suffix is merge-walked
    against the held levels. Input that is not strictly sorted best first, repeats a
    price, or carries a size-0 level takes a dict-based path with the same result.

    Two prices with equal keys (``0.5`` and ``0.50``) are the same level; the held
    level keeps the price text it was first inserted with, and every output level
    (deltas included) carries that text, so a consumer keying levels by the price
    text stays consistent. Sizes compare by key too: ``100`` and ``100.0`` are the
    same size, so replacing one with the other is not a change (a changed size is
    reported with the text that arrived).

    A held book never contains a level with size 0.
    """

    __slots__ = ("_bids", "_asks")

    def __init__(self) -> None:
        self._bids = _Side(descending=True)
        self._asks = _Side(descending=False)

    # ------------------------------------------------------------------ writers

    def replace(self, bids: Levels, asks: Levels) -> tuple[list[Level], list[Level]]:
        """Make the held book equal to a full book and return what changed.

        Input levels may come in any order (best first is the fast path). A level with
        size 0 is treated as absent. When a price occurs more than once on one side,
        the **last** occurrence wins (so ``[(p, 5), (p, 0)]`` means "no level at p").

        Every level of both sides is validated before anything is mutated, so on
        :class:`~orderbook.errors.InvalidLevel` the held book is untouched. Levels
        equal to the last input's were validated then and are not checked again.

        Args:
            bids: the complete bid side, any order, decoded or as raw JSON.
            asks: the complete ask side, any order, decoded or as raw JSON.

        Returns:
            ``(bid_changes, ask_changes)``: the minimal changed levels, best first
            (bids by descending price, asks ascending). A changed level carries its
            new size; a removed level carries size ``"0"``. Both lists are empty when
            the given book equals the held one. The lists are owned by the caller.

        Raises:
            InvalidLevel: a price or size is not a plain decimal number, has too many
                significant digits, or a price is outside (0, 1]; or a raw side is
                not a list of levels.
        """
        bid_plan = _plan(self._bids, bids, "bid")
        ask_plan = _plan(self._asks, asks, "ask")
        return _carry_out(self._bids, bid_plan), _carry_out(self._asks, ask_plan)

    def apply_delta(self, bids: Sequence[Level], asks: Sequence[Level]) -> None:
        """Apply changed levels, as published in a ``book`` or ``book_delta`` record.

        This is the consumer side of :meth:`replace`: size 0 removes the level (a
        missing level is ignored), any other size sets it. To load a full ``book``
        record, call :meth:`clear` first.

        Args:
            bids: ``(price, size)`` bid levels, any order.
            asks: ``(price, size)`` ask levels, any order.

        Raises:
            InvalidLevel: a price or size is not a valid number.
        """
        _apply(self._bids, bids, "bid")
        _apply(self._asks, asks, "ask")

    def clear(self) -> None:
        """Remove every level of both sides."""
        for side in (self._bids, self._asks):
            side.set([], [], [])
            side.last_in = side.raw = None

    # ------------------------------------------------------------------ readers

    def best_bid(self) -> str | None:
        """Return the highest bid price (its text), or ``None`` when there are no bids."""
        levels = self._bids.levels
        return levels[0][0] if levels else None

    def best_ask(self) -> str | None:
        """Return the lowest ask price (its text), or ``None`` when there are no asks."""
        levels = self._asks.levels
        return levels[0][0] if levels else None

    def is_crossed(self) -> bool:
        """Return whether best bid >= best ask (False when a side is empty)."""
        bids, asks = self._bids.keys, self._asks.keys
        return bool(bids and asks and bids[0] >= asks[0])

    def bids_best_first(self) -> list[Level]:
        """Return all bid levels, highest price first (a new list)."""
        return list(self._bids.levels)

    def asks_best_first(self) -> list[Level]:
        """Return all ask levels, lowest price first (a new list)."""
        return list(self._asks.levels)

    def levels(self) -> tuple[list[Level], list[Level]]:
        """Return ``(bids_best_first(), asks_best_first())``, handy for comparisons."""
        return self.bids_best_first(), self.asks_best_first()

    def keyed(self) -> tuple[dict[Key, Key], dict[Key, Key]]:
        """Return ``(bids, asks)`` as price key -> size key maps (numeric comparisons)."""
        return (dict(zip(self._bids.keys, self._bids.sizes, strict=True)),
                dict(zip(self._asks.keys, self._asks.sizes, strict=True)))

    def depth(self, side: Side, n: int) -> list[Level]:
        """Return the best ``n`` levels of one side, best first.

        Args:
            side: ``"bid"`` or ``"ask"``.
            n: how many levels at most; ``n <= 0`` gives an empty list.

        Raises:
            ValueError: ``side`` is neither ``"bid"`` nor ``"ask"``.
        """
        if side == "bid":
            held = self._bids
        elif side == "ask":
            held = self._asks
        else:
            raise ValueError(f"side must be 'bid' or 'ask', not {side!r}")
        return held.levels[: max(n, 0)]

    @property
    def n_bids(self) -> int:
        """Number of bid levels."""
        return len(self._bids.levels)

    @property
    def n_asks(self) -> int:
        """Number of ask levels."""
        return len(self._asks.levels)

    def __len__(self) -> int:
        """Return the number of levels on both sides together."""
        return len(self._bids.levels) + len(self._asks.levels)

    def __eq__(self, other: object) -> bool:
        """Two books are equal when both sides hold equal prices with equal sizes."""
        if not isinstance(other, OrderBook):
            return NotImplemented
        return all(
            mine.keys == theirs.keys and mine.sizes == theirs.sizes
            for mine, theirs in ((self._bids, other._bids), (self._asks, other._asks))
        )

    __hash__ = None  # type: ignore[assignment]  # mutable

    def copy(self) -> OrderBook:
        """Return an independent copy of this book."""
        clone = OrderBook()
        for mine, theirs in ((self._bids, clone._bids), (self._asks, clone._asks)):
            theirs.set(list(mine.levels), list(mine.keys), list(mine.sizes))
        return clone

    def __repr__(self) -> str:
        return (
            f"OrderBook(bids={self.n_bids}, asks={self.n_asks}, "
            f"best_bid={self.best_bid()}, best_ask={self.best_ask()})"
        )


# ---------------------------------------------------------------------- planning


def _plan(side: _Side, levels: Levels, name: Side) -> _Plan | None:
    """How ``side`` must change to become ``levels``; None when it is unchanged.

    Raises:
        InvalidLevel: a new or changed level is invalid.
    """
    raw: msgspec.Raw | None = None
    if type(levels) is msgspec.Raw:
        if levels == side.raw:
            return None
        if C_PLAN is not None:
            fast = C_PLAN(levels, side.levels, side.keys, side.sizes, side.descending)
            if fast is not None:
                if not fast:  # equal to the held side: keep the lists, remember the bytes
                    return side.levels, side.keys, side.sizes, [], side.last_in, levels
                return fast[0], fast[1], fast[2], fast[3], None, levels
        raw = levels
        try:
            levels = LEVELS_DECODER.decode(levels)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise InvalidLevel(name, None, None, f"undecodable levels: {exc}") from None
    assert not isinstance(levels, msgspec.Raw)
    last_in = side.last_in
    if last_in is not None and not _bool_free(raw, levels):
        last_in = None  # Struct equality has true == 1: every level is looked at instead
    try:
        if last_in is None:
            plan = _merge(side, 0, len(side.levels), levels, name, None, levels, raw)
        else:
            n = len(levels)
            if n == len(last_in):
                # The positions that differ from the last input, found in C.
                changed = list(compress(range(n), map(ne, levels, last_in)))
                if not changed:  # equal to the last input
                    if raw is None:
                        return None
                    # only the bytes differ: keep the lists, remember the new bytes
                    return side.levels, side.keys, side.sizes, [], last_in, raw
                plan = _resized(side, levels, changed, name, raw)
                if plan is None:
                    p, q = changed[0], n - 1 - changed[-1]
                    plan = _merge(side, p, n - q, levels[p : n - q], name, last_in, levels, raw)
            else:
                plan = _merge_middle(side, last_in, levels, name, raw)
        return _dict_plan(side, levels, name) if plan is None else plan
    except TypeError:  # an unhashable value (a JSON object or array) as a number
        raise _first_invalid(levels, name) from None


def _bool_free(raw: msgspec.Raw | None, levels: Sequence[PriceLevel]) -> bool:
    """Whether no price or size is a JSON ``true``/``false`` (maybe: a false alarm is safe).

    The Struct comparisons with the last input would take ``true`` for ``1`` (and
    ``false`` for ``0``), so a boolean would pass as unchanged after a ``1`` and be
    refused otherwise: whether a book is invalid would depend on what came before it
    (and on whether the C fast path, which keeps no last input, planned it).
    """
    if raw is not None:
        text = bytes(raw)
        return b"true" not in text and b"false" not in text
    return not any(type(level.price) is bool or type(level.size) is bool for level in levels)


def _merge_middle(side: _Side, last_in: Sequence[PriceLevel], levels: Sequence[PriceLevel],
                  name: Side, raw: msgspec.Raw | None) -> _Plan | None:
    """Merge only what lies between the common prefix and suffix with the last input.

    For input with another number of levels than the last (with as many, :func:`_plan`
    finds the changed positions itself). The held lists match the last input one to
    one, so levels equal to the last input's at the same position are unchanged held
    levels; the common prefix and suffix are found by Struct comparisons in C
    (``map``/``compress``, no Python loop per level).
    """
    n, m = len(levels), len(last_in)
    shorter = min(n, m)
    p = next(compress(count(), map(ne, levels, last_in)), shorter)
    q = next(compress(count(), map(ne, reversed(levels), reversed(last_in))), shorter)
    q = min(q, shorter - p)
    return _merge(side, p, m - q, levels[p : n - q], name, last_in, levels, raw)


def _resized(side: _Side, levels: Sequence[PriceLevel], changed: list[int], name: Side,
             raw: msgspec.Raw | None) -> _Plan | None:
    """The commonest update: the same prices in the same places, some sizes changed.

    Only the ``changed`` positions are looked at; the price key list is shared with the
    held one. Returns None when a changed position holds another price (or size 0).
    A held size is never 0, so a size-0 level is always a changed size and is caught
    there.
    """
    old_keys = side.keys
    new_levels = side.levels[:]
    new_sizes = side.sizes[:]
    changes: list[Level] = []
    prices, sizes, wire = _PRICES, _SIZES, _WIRE_TYPES
    for j in changed:
        level = levels[j]
        pv = level.price
        pe = prices.get(pv)
        if pe is None or pe[0] != old_keys[j] or type(pv) not in wire:
            return None  # another price, or not seen yet: the merge validates it
        sv = level.size
        se = sizes.get(sv)
        if se is None or type(sv) not in wire:
            se = _new_size(sv, pv, name)
        skey = se[0]
        if skey != new_sizes[j]:
            if not skey:
                return None
            held = (new_levels[j][0], se[1])
            new_levels[j] = held
            new_sizes[j] = skey
            changes.append(held)
    if not changes:  # only the spelling changed (say 4438 and "4438"): keep the lists
        return side.levels, old_keys, side.sizes, changes, levels, raw
    return new_levels, old_keys, new_sizes, changes, levels, raw


def _new_size(value: object, price: object, name: Side) -> Entry:
    """The entry of a size the cache does not answer for, parsed and cached.

    Skips :func:`size_entry`'s lookup (the cache was just missed, or hit for a type a hit
    is not trusted for, which :func:`parse_number` refuses).

    Raises:
        InvalidLevel: the size is invalid.
    """
    parsed = _parse_and_cache(value, _SIZES, SIZE_CACHE_MAX, price=False)
    if type(parsed) is str:
        raise InvalidLevel(name, price, value, parsed)
    assert type(parsed) is tuple
    return parsed


def _merge(side: _Side, lo: int, hi: int, new: Sequence[PriceLevel], name: Side,
           old_in: Sequence[PriceLevel] | None, whole_in: Sequence[PriceLevel],
           raw: msgspec.Raw | None) -> _Plan | None:
    """Merge-walk best-first input against the held levels ``lo:hi``.

    ``whole_in`` (of which ``new`` is the stretch ``lo:``) and ``raw`` become the
    side's ``last_in`` and ``raw``. ``old_in`` is the last input, one to one with the
    held levels (or None): a new level equal
    to the held level's input (a level that only moved, say after an insert above it)
    is kept with one Struct comparison, without looking anything up.

    Returns the whole side's new lists (held ``:lo`` and ``hi:`` kept), or None (use
    the dict path) when the input is not strictly best first (also against the held
    neighbours) or has a size-0 level.

    Raises:
        InvalidLevel: a new or changed level is invalid.
    """
    old_levels, old_keys, old_sizes = side.levels, side.keys, side.sizes
    descending = side.descending
    prices, sizes = _PRICES, _SIZES
    out: list[Level] = []
    out_keys: list[Key] = []
    out_sizes: list[Key] = []
    changes: list[Level] = []
    prev = old_keys[lo - 1] if lo else None
    i = lo
    for level in new:
        if old_in is not None and i < hi and level == old_in[i]:
            key = old_keys[i]
            if prev is not None and (key >= prev if descending else key <= prev):
                return None
            prev = key
            out.append(old_levels[i])
            out_keys.append(key)
            out_sizes.append(old_sizes[i])
            i += 1
            continue
        pv = level.price
        sv = level.size
        pe = prices.get(pv)
        if pe is None or type(pv) not in _WIRE_TYPES:
            parsed = price_entry(pv)
            if isinstance(parsed, str):
                raise InvalidLevel(name, pv, sv, parsed)
            pe = parsed
        se = sizes.get(sv)
        if se is None or type(sv) not in _WIRE_TYPES:
            se = _new_size(sv, pv, name)
        key, ptext = pe
        skey, stext = se
        if prev is not None and (key >= prev if descending else key <= prev):
            return None  # not strictly best first: duplicates or another order
        if not skey:
            return None
        prev = key
        while i < hi:
            held_key = old_keys[i]
            if held_key == key:
                held = old_levels[i]
                if old_sizes[i] == skey:
                    out.append(held)
                    out_sizes.append(skey)
                else:
                    held = (held[0], stext)
                    changes.append(held)
                    out.append(held)
                    out_sizes.append(skey)
                out_keys.append(held_key)
                i += 1
                break
            if held_key > key if descending else held_key < key:
                changes.append((old_levels[i][0], ZERO))  # better than any new one: gone
                i += 1
                continue
            held = (ptext, stext)
            changes.append(held)
            out.append(held)
            out_keys.append(key)
            out_sizes.append(skey)
            break
        else:
            held = (ptext, stext)
            changes.append(held)
            out.append(held)
            out_keys.append(key)
            out_sizes.append(skey)
    if prev is not None and hi < len(old_keys):
        bound = old_keys[hi]
        if prev <= bound if descending else prev >= bound:
            return None
    while i < hi:
        changes.append((old_levels[i][0], ZERO))
        i += 1
    if not changes:
        return old_levels, old_keys, old_sizes, changes, whole_in, raw
    if lo == 0 and hi == len(old_keys):
        return out, out_keys, out_sizes, changes, whole_in, raw
    return (old_levels[:lo] + out + old_levels[hi:], old_keys[:lo] + out_keys + old_keys[hi:],
            old_sizes[:lo] + out_sizes + old_sizes[hi:], changes, whole_in, raw)


def _dict_plan(side: _Side, levels: Sequence[PriceLevel], name: Side) -> _Plan:
    """The general path: any order, repeated prices (last wins), size-0 levels.

    Every input level is validated here, even one a later repeat overrides.
    """
    new: dict[Key, tuple[str, str, Key]] = {}
    for level in levels:
        pe = price_entry(level.price)
        if isinstance(pe, str):
            raise InvalidLevel(name, level.price, level.size, pe)
        se = size_entry(level.size)
        if isinstance(se, str):
            raise InvalidLevel(name, level.price, level.size, se)
        new[pe[0]] = (pe[1], se[1], se[0])
    held = {key: (lv, skey) for key, lv, skey in zip(side.keys, side.levels, side.sizes,
                                                       strict=True)}
    keep: list[tuple[Key, Level, Key]] = []
    changes: list[tuple[Key, Level]] = []
    for key, (ptext, stext, skey) in new.items():
        old = held.get(key)
        if not skey:
            continue
        if old is None:
            level_ = (ptext, stext)
            changes.append((key, level_))
        elif old[1] == skey:
            level_ = old[0]
        else:
            level_ = (old[0][0], stext)
            changes.append((key, level_))
        keep.append((key, level_, skey))
    for key, (level_, _) in held.items():
        entry = new.get(key)
        if entry is None or not entry[2]:
            changes.append((key, (level_[0], ZERO)))
    reverse = side.descending
    keep.sort(key=_first, reverse=reverse)
    changes.sort(key=_first, reverse=reverse)
    return ([lv for _, lv, _ in keep], [k for k, _, _ in keep], [s for _, _, s in keep],
            [lv for _, lv in changes], None, None)


def _first(item: tuple[Key, object] | tuple[Key, object, object]) -> Key:
    return item[0]


def _first_invalid(levels: Sequence[PriceLevel], name: Side) -> InvalidLevel:
    for level in levels:
        for value in (level.price, level.size):
            parsed = parse_number(value)
            if isinstance(parsed, str):
                return InvalidLevel(name, level.price, level.size, parsed)
    return InvalidLevel(name, None, None, "unhashable value")  # not reached


def _carry_out(side: _Side, plan: _Plan | None) -> list[Level]:
    """Apply a plan to the side; return its changes (best first)."""
    if plan is None:
        return []
    side.levels, side.keys, side.sizes, changes, side.last_in, side.raw = plan
    return changes


def _apply(side: _Side, levels: Sequence[Level], name: Side) -> None:
    """Set or (size 0) remove each level of one side (consumer side)."""
    if not levels:
        return
    held = {key: (lv, skey) for key, lv, skey in zip(side.keys, side.levels, side.sizes,
                                                       strict=True)}
    for price, size in levels:
        pe = price_entry(price)
        se = size_entry(size)
        if isinstance(pe, str) or isinstance(se, str):
            raise InvalidLevel(name, price, size, pe if isinstance(pe, str) else str(se))
        key, skey = pe[0], se[0]
        if not skey:
            held.pop(key, None)
        else:
            old = held.get(key)
            held[key] = ((old[0][0] if old is not None else price, size), skey)
    keys = sorted(held, reverse=side.descending)
    side.set([held[k][0] for k in keys], keys, [held[k][1] for k in keys])
    side.last_in = side.raw = None
