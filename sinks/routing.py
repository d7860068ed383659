"""Per-sink routing: which records a sink gets, by record type and by market slug.

A sink URL's ``types=book,book_delta`` keeps only those record types; ``markets=btc-*,eth-*``
keeps only records whose market slug matches one of the glob patterns (:mod:`fnmatch`
syntax, case-sensitive). Records that have no market (``status``, ``allowance`` …) describe
the feed as a whole and pass the ``markets`` filter; use ``types`` to leave them out. With
both, a record must pass both. A sink without either gets every record.

The fan-out applies the route before a record enters the sink's queue, so a filtered-out
record costs that sink nothing (it is neither queued nor counted).
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass, field
from typing import Final

from sinks.records import RECORD_TYPES, Record, record_type

__all__ = ["Route"]

MATCH_CACHE_MAX: Final = 65_536
"""Market slugs whose match result is remembered (the universe is far smaller)."""


@dataclass(frozen=True, slots=True)
class Route:
    """A record filter (see the module docstring).

    Attributes:
        types: record types kept, or ``None`` for all.
        markets: glob patterns of market slugs kept, or ``None`` for all.
    """

    types: frozenset[str] | None = None
    markets: tuple[str, ...] | None = None
    _pattern: re.Pattern[str] | None = field(default=None, init=False, repr=False,
                                             compare=False)
    _seen: dict[str, bool] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.types is not None:
            unknown = sorted(self.types - set(RECORD_TYPES))
            if unknown or not self.types:
                shown = ", ".join(unknown) or "''"
                raise ValueError(f"types: unknown record type {shown}; "
                                 f"known: {', '.join(RECORD_TYPES)}")
        if self.markets is not None:
            if not self.markets or not all(self.markets):
                raise ValueError("markets: an empty pattern; use e.g. markets=btc-*")
            joined = "|".join(fnmatch.translate(pattern) for pattern in self.markets)
            object.__setattr__(self, "_pattern", re.compile(joined))

    @classmethod
    def parse(cls, types: str | None, markets: str | None) -> Route | None:
        """From the URL options' text (comma-separated); ``None`` when neither is given.

        Raises:
            ValueError: an unknown record type or an empty pattern.
        """
        if types is None and markets is None:
            return None
        return cls(
            types=None if types is None else frozenset(t.strip() for t in types.split(",")),
            markets=None if markets is None else tuple(m.strip() for m in markets.split(",")),
        )

    def accepts(self, record: Record) -> bool:
        """Whether the sink gets ``record``."""
        if self.types is not None and record_type(record) not in self.types:
            return False
        pattern = self._pattern
        if pattern is None:
            return True
        market: str | None = getattr(record, "market", None)
        if market is None:
            return True
        seen = self._seen
        hit = seen.get(market)
        if hit is None:
            hit = pattern.match(market) is not None
            if len(seen) < MATCH_CACHE_MAX:
                seen[market] = hit
        return hit
