"""``--depth``: the top-N view of one side."""

from __future__ import annotations

import msgspec

from orderbook.types import PriceLevel
from streamer.feed.depth import top_levels


def lv(price: str, size: str) -> PriceLevel:
    return PriceLevel(price, size)  # wire text, as the decoders hand it over


def test_top_levels_picks_the_best_live_prices_last_occurrence_winning() -> None:
    bids = [lv("0.1", "1"), lv("0.5", "2"), lv("0.4", "0"), lv("0.3", "3"), lv("0.5", "7"),
            lv("0.2", "1")]
    assert top_levels(bids, 2, bids=True) == [lv("0.5", "7"), lv("0.3", "3")]
    assert top_levels(bids, 2, bids=False) == [lv("0.1", "1"), lv("0.2", "1")]
    short = [lv("0.9", "1")]
    assert top_levels(short, 3, bids=True) is short


def test_top_levels_leaves_incomparable_levels_to_the_book_core() -> None:
    bad = [lv("0.1", "1"), lv("NaN", "1"), lv("0.2", "1")]
    assert top_levels(bad, 1, bids=True) is bad


def test_top_levels_orders_by_number_not_text_and_decodes_raw_sides() -> None:
    bids = msgspec.Raw(b'[{"price":0.5,"size":1},{"price":"0.45","size":2},'
                       b'{"price":0.500,"size":"0"},{"price":0.05,"size":3},{"price":1,"size":4}]')
    # 0.500 repeats 0.5 (last wins, size 0: gone); "1" > "0.45" > "0.05" as numbers
    # JSON numbers arrive as their text, JSON integers as ints (the book core's wire types)
    assert top_levels(bids, 2, bids=True) == [PriceLevel(1, 4), PriceLevel("0.45", 2)]
    assert top_levels(bids, 2, bids=False) == [PriceLevel("0.05", 3), PriceLevel("0.45", 2)]
