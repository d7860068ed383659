"""Types of the optional C fast path (``orderbook/_cside.c``; see ``orderbook.book``)."""

from decimal import Decimal

import msgspec

MAX_LEVELS: int

def plan(raw: msgspec.Raw, levels: list[tuple[str, str]], keys: list[int | Decimal],
         sizes: list[int | Decimal], descending: bool,
         /) -> tuple[list[tuple[str, str]], list[int | Decimal], list[int | Decimal],
                     list[tuple[str, str]]] | tuple[()] | None: ...
