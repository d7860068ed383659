"""Comparing the daemon's books (wire text) with the simulator's (Decimals)."""

from __future__ import annotations

from decimal import Decimal

Side = list[tuple[str, str]]


def numeric(levels: tuple[Side, Side]) -> tuple[list[tuple[Decimal, Decimal]],
                                                 list[tuple[Decimal, Decimal]]]:
    """Book levels (wire text) as Decimals, to compare with the simulator's books."""
    bids, asks = levels
    return ([(Decimal(p), Decimal(s)) for p, s in bids],
            [(Decimal(p), Decimal(s)) for p, s in asks])
