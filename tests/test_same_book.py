"""``same_book``: the REST comparison of probes and audits reads levels as ``replace`` does."""

from __future__ import annotations

from orderbook import OrderBook, PriceLevel
from streamer.feed.feed import same_book
from streamer.protocol.messages import OrderbookPayload


def held(bids: list[tuple[str, str]], asks: list[tuple[str, str]]) -> OrderBook:
    book = OrderBook()
    book.replace([PriceLevel(p, s) for p, s in bids], [PriceLevel(p, s) for p, s in asks])
    return book


def rest(bids: list[tuple[object, object]], asks: list[tuple[object, object]]) -> OrderbookPayload:
    return OrderbookPayload([PriceLevel(p, s) for p, s in bids],
                            [PriceLevel(p, s) for p, s in asks])


def test_same_book_duplicate_prices_last_wins_like_replace() -> None:
    book = held([("0.5", "2")], [("0.6", "1")])
    assert same_book(book, rest([("0.5", "9"), ("0.5", "2")], [("0.6", "1"), ("0.7", "0")]))
    assert not same_book(book, rest([("0.5", "2"), ("0.5", "9")], [("0.6", "1")]))
    assert same_book(held([], []), rest([("0.5", "3"), ("0.50", "0")], []))


def test_same_book_compares_numbers_not_spelling() -> None:
    book = held([("0.50", "100")], [])
    assert same_book(book, rest([("0.5", 100)], []))
    assert not same_book(book, rest([("0.5", "100.5")], []))
    assert not same_book(book, rest([("0.5", "100"), ("0.4", "1")], []))


def test_same_book_invalid_rest_level_is_a_difference() -> None:
    assert not same_book(held([("0.5", "1")], []), rest([("0.5", "1"), ("1e9999", "1")], []))
