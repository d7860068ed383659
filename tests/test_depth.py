"""``--depth``: the top-N view of one side."""

from __future__ import annotations

from decimal import Decimal as D

from orderbook.types import PriceLevel
from streamer.depth import top_levels


def lv(price: str, size: str) -> PriceLevel:
    return PriceLevel(D(price), D(size))


def test_top_levels_picks_the_best_live_prices_last_occurrence_winning() -> None:
    bids = [lv("0.1", "1"), lv("0.5", "2"), lv("0.4", "0"), lv("0.3", "3"), lv("0.5", "7"),
            lv("0.2", "1")]
    assert top_levels(bids, 2, bids=True) == [lv("0.5", "7"), lv("0.3", "3")]
    assert top_levels(bids, 2, bids=False) == [lv("0.1", "1"), lv("0.2", "1")]
    short = [lv("0.9", "1")]
    assert top_levels(short, 3, bids=True) is short


def test_top_levels_leaves_incomparable_levels_to_the_book_core() -> None:
    bad = [lv("0.1", "1"), PriceLevel(D("NaN"), D("1")), lv("0.2", "1")]
    assert top_levels(bad, 1, bids=True) is bad
