"""Tests for streamer.protocol.messages: venue payloads decode exactly and tolerantly."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import msgspec
import pytest

from orderbook.book import LEVELS_DECODER
from orderbook.types import PriceLevel
from streamer.protocol.messages import (
    ACTIVE_PAGE_DECODER,
    EVENT_DECODERS,
    MARKET_DECODER,
    ORDERBOOK_DECODER,
    MarketCreatedPayload,
    MarketResolvedPayload,
    NewPriceData,
    OrderbookPayload,
    OrderbookUpdate,
    Tokens,
    normalize_token,
    timestamp_ms,
)

# Literal copies of the limitless-api.md samples (tests never read /work/shared).
REST_ORDERBOOK = b"""{
  "bids": [{"price": 0.74, "size": 150, "side": "BUY"}],
  "asks": [{"price": 0.76, "size": 100, "side": "SELL"}],
  "tokenId": "19633204485790857949828516737993423758628930235371629943999544859324645414627",
  "adjustedMidpoint": 0.75,
  "maxSpread": "0.05",
  "minSize": "1",
  "lastTradePrice": 0.75
}"""

WS_ORDERBOOK_UPDATE = (
    b'{"marketSlug":"btc-above-100k","orderbook":{"bids":[{"price":0.51,"size":100.0,'
    b'"side":"buy"}],"asks":[{"price":0.52,"size":120.0,"side":"sell"}],"tokenId":"123",'
    b'"adjustedMidpoint":0.515,"maxSpread":"0.05","minSize":"100000000"},'
    b'"timestamp":"2026-03-17T00:00:00.000Z"}'
)

NEW_PRICE_DATA_SDK = (
    b'{"marketAddress":"0xabc","updatedPrices":[{"marketId":123,"marketAddress":"0xabc",'
    b'"yesPrice":0.65,"noPrice":0.35}],"blockNumber":12345678,'
    b'"timestamp":"2025-12-08T10:30:00Z"}'
)
NEW_PRICE_DATA_DOCS = (
    b'{"marketAddress":"0xabc","updatedPrices":{"yes":"0.65","no":"0.35"},'
    b'"blockNumber":12345678,"timestamp":"2025-12-08T10:30:00Z"}'
)

MARKET = b"""{
  "id": 1234,
  "slug": "btc-above-100k-jun-2026",
  "title": "BTC above 100k", "proxyTitle": null, "description": "d",
  "collateralToken": {"address": "0x8335", "decimals": 6, "symbol": "USDC"},
  "expirationDate": "Jun 30, 2026",
  "expirationTimestamp": 1798675200000,
  "expired": false,
  "createdAt": "2026-01-01T00:00:00.000Z",
  "categories": ["Crypto"], "tags": ["btc"],
  "status": "FUNDED",
  "creator": {"name": "x", "imageURI": null, "link": null},
  "tradeType": "clob",
  "marketType": "single",
  "metadata": {"fee": true, "isBannered": false},
  "volume": "1000", "conditionId": "0x01", "negRiskRequestId": null,
  "tokens": {"yes": "19633204485790857949828516737993423758628930235371629943999544859324645414627",
             "no": "92880203111422733669069431424233453123521391452116219452041113149245101411467"},
  "positionIds": ["19633204485790857949828516737993423758628930235371629943999544859324645414627",
                  "92880203111422733669069431424233453123521391452116219452041113149245101411467"],
  "prices": [0.51, 0.49],
  "settings": {"minSize": "1", "maxSpread": 0.05},
  "venue": {"exchange": "0xexchange", "adapter": null},
  "winningOutcomeIndex": null,
  "tradingEnabled": true
}"""

YES = "19633204485790857949828516737993423758628930235371629943999544859324645414627"
NO = "92880203111422733669069431424233453123521391452116219452041113149245101411467"


def test_rest_orderbook_sample_decodes_exactly() -> None:
    book = ORDERBOOK_DECODER.decode(REST_ORDERBOOK)
    assert book.bids == [PriceLevel("0.74", 150)]  # numbers as wire text, integers as int
    assert book.asks == [PriceLevel("0.76", 100)]
    assert book.token_id == YES
    assert book.adjustedMidpoint == Decimal("0.75")
    assert book.maxSpread == Decimal("0.05")
    assert book.minSize == Decimal("1")
    assert book.lastTradePrice == Decimal("0.75")


def test_ws_orderbook_update_sample_decodes() -> None:
    update = EVENT_DECODERS["orderbookUpdate"].decode(WS_ORDERBOOK_UPDATE)
    assert isinstance(update, OrderbookUpdate)
    assert update.marketSlug == "btc-above-100k"
    # The sides stay raw JSON until the book core finds them changed.
    assert isinstance(update.orderbook.bids, msgspec.Raw)
    assert LEVELS_DECODER.decode(update.orderbook.bids) == [PriceLevel("0.51", "100.0")]
    assert LEVELS_DECODER.decode(update.orderbook.asks) == [PriceLevel("0.52", "120.0")]
    assert update.orderbook.token_id == "123"
    assert update.ts_ms == 1773705600000


def test_orderbook_price_stays_exact_text() -> None:
    levels = LEVELS_DECODER.decode(b'[{"price":0.515,"size":1e2},{"price":"0.50","size":7}]')
    assert levels == [PriceLevel("0.515", "1e2"), PriceLevel("0.50", 7)]


def test_orderbook_numbers_as_strings_decode_exactly() -> None:
    raw = (
        b'{"bids":[{"price":"0.515","size":"12.5"}],"asks":[{"price":"0.52","size":"3"}],'
        b'"adjustedMidpoint":"0.5175","maxSpread":0.05,"minSize":1,"lastTradePrice":"0.51"}'
    )
    book = ORDERBOOK_DECODER.decode(raw)
    assert book.bids == [PriceLevel("0.515", "12.5")]
    assert book.adjustedMidpoint == Decimal("0.5175")
    assert book.maxSpread == Decimal("0.05")
    assert book.minSize == Decimal("1")
    assert book.lastTradePrice == Decimal("0.51")


@pytest.mark.parametrize("side", ['"side":"BUY",', '"side":"buy",', '"side":"Buy",', ""])
def test_orderbook_level_side_casing_or_absence_ignored(side: str) -> None:
    raw = f'{{"bids":[{{{side}"price":0.5,"size":1}}],"asks":[]}}'.encode()
    assert ORDERBOOK_DECODER.decode(raw).bids == [PriceLevel("0.5", 1)]


def test_orderbook_null_last_trade_price() -> None:
    book = ORDERBOOK_DECODER.decode(b'{"bids":[],"asks":[],"lastTradePrice":null}')
    assert book.lastTradePrice is None
    assert book.token_id is None


def test_orderbook_missing_side_is_an_error_not_an_empty_book() -> None:
    with pytest.raises(msgspec.ValidationError, match="asks"):
        ORDERBOOK_DECODER.decode(b'{"bids":[]}')


@pytest.mark.parametrize("value", ['"NaN"', '"Infinity"', '"-Infinity"'])
def test_orderbook_non_finite_scalar_rejected(value: str) -> None:
    raw = f'{{"bids":[],"asks":[],"adjustedMidpoint":{value}}}'.encode()
    with pytest.raises(msgspec.ValidationError, match="finite"):
        ORDERBOOK_DECODER.decode(raw)


def test_orderbook_big_token_id_as_json_number_becomes_decimal_string() -> None:
    raw = f'{{"bids":[],"asks":[],"tokenId":{YES}}}'.encode()
    book = ORDERBOOK_DECODER.decode(raw)
    assert book.tokenId == YES  # converted at decode time
    assert book.token_id == YES


def test_orderbook_big_token_id_as_string_kept() -> None:
    raw = f'{{"bids":[],"asks":[],"tokenId":"{YES}"}}'.encode()
    assert ORDERBOOK_DECODER.decode(raw).token_id == YES


def test_orderbook_float_token_id_rejected() -> None:
    with pytest.raises(msgspec.ValidationError):
        ORDERBOOK_DECODER.decode(b'{"bids":[],"asks":[],"tokenId":1.5}')


def test_normalize_token_normalises() -> None:
    assert normalize_token(None) is None
    assert normalize_token("007") == "007"
    assert normalize_token(int(NO)) == NO


def test_orderbook_update_epoch_ms_timestamp() -> None:
    raw = WS_ORDERBOOK_UPDATE.replace(b'"2026-03-17T00:00:00.000Z"', b"1773705600123")
    assert EVENT_DECODERS["orderbookUpdate"].decode(raw).ts_ms == 1773705600123


def test_orderbook_update_epoch_seconds_timestamp() -> None:
    raw = WS_ORDERBOOK_UPDATE.replace(b'"2026-03-17T00:00:00.000Z"', b"1773705600.123")
    assert EVENT_DECODERS["orderbookUpdate"].decode(raw).ts_ms == 1773705600123


def test_orderbook_update_iso_timestamp_with_millis() -> None:
    raw = WS_ORDERBOOK_UPDATE.replace(b"00.000Z", b"00.789Z")
    assert EVENT_DECODERS["orderbookUpdate"].decode(raw).ts_ms == 1773705600789


def test_orderbook_update_requires_timestamp() -> None:
    raw = b'{"marketSlug":"m","orderbook":{"bids":[],"asks":[]}}'
    with pytest.raises(msgspec.ValidationError, match="timestamp"):
        EVENT_DECODERS["orderbookUpdate"].decode(raw)


def test_orderbook_update_bad_timestamp_rejected() -> None:
    raw = WS_ORDERBOOK_UPDATE.replace(b'"2026-03-17T00:00:00.000Z"', b'"yesterday"')
    with pytest.raises(msgspec.ValidationError):
        EVENT_DECODERS["orderbookUpdate"].decode(raw)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (datetime(2026, 3, 17, tzinfo=UTC), 1773705600000),
        (datetime(2026, 3, 17, 0, 0, 0, 123999, tzinfo=UTC), 1773705600123),
        (datetime(2026, 3, 17), 1773705600000),  # naive → UTC
        (datetime(2026, 3, 17, 2, tzinfo=timezone(timedelta(hours=2))), 1773705600000),
        (1773705600000, 1773705600000),
        (1773705600, 1773705600000),
        (1773705600.5, 1773705600500),
        (1773705600000.0, 1773705600000),
    ],
)
def test_timestamp_ms_forms(value: datetime | int | float, expected: int) -> None:
    assert timestamp_ms(value) == expected


def test_timestamp_ms_rejects_non_finite() -> None:
    with pytest.raises(ValueError):
        timestamp_ms(float("nan"))


def test_market_sample_decodes_needed_fields() -> None:
    market = MARKET_DECODER.decode(MARKET)
    assert market.id == 1234
    assert market.slug == "btc-above-100k-jun-2026"
    assert market.status == "FUNDED"
    assert market.expired is False
    assert market.expirationTimestamp == 1798675200000
    assert market.tradeType == "clob"
    assert market.marketType == "single"
    assert market.yes_token == YES
    assert market.no_token == NO
    assert market.positionIds == [YES, NO]
    assert market.venue is not None
    assert market.venue.exchange == "0xexchange"
    assert market.venue.adapter is None
    assert market.winningOutcomeIndex is None
    assert market.markets is None
    assert market.categories == ["Crypto"]
    assert market.tags == ["btc"]


def test_market_legacy_address_and_group_slug() -> None:
    market = MARKET_DECODER.decode(b'{"slug":"amm","address":"0xabc","groupSlug":"g"}')
    assert market.address == "0xabc"
    assert market.groupSlug == "g"


def test_market_only_slug_required() -> None:
    market = MARKET_DECODER.decode(b'{"slug":"s"}')
    assert market.slug == "s"
    assert market.yes_token is None
    with pytest.raises(msgspec.ValidationError, match="slug"):
        MARKET_DECODER.decode(b'{"id":1}')


def test_market_token_ids_as_json_numbers() -> None:
    raw = f'{{"slug":"s","id":"abc","tokens":{{"yes":{YES},"no":{NO}}},"positionIds":[{YES}]}}'
    market = MARKET_DECODER.decode(raw.encode())
    assert market.id == "abc"
    assert market.yes_token == YES
    assert market.no_token == NO
    assert market.tokens == Tokens(yes=YES, no=NO)
    assert market.positionIds == [YES]


def test_group_market_with_children_decodes_recursively() -> None:
    raw = (
        b'{"slug":"election","marketType":"group","negRiskMarketId":"0x9",'
        b'"venue":{"exchange":"0xneg","adapter":"0xadapter"},'
        b'"markets":[{"slug":"election-a","tokens":{"yes":"1","no":"2"},'
        b'"venue":{"exchange":"0xneg","adapter":"0xadapter"}},'
        b'{"slug":"election-b","markets":[]}]}'
    )
    group = MARKET_DECODER.decode(raw)
    assert group.marketType == "group"
    assert group.markets is not None
    assert [child.slug for child in group.markets] == ["election-a", "election-b"]
    assert group.markets[0].yes_token == "1"
    assert group.markets[0].venue is not None
    assert group.markets[0].venue.adapter == "0xadapter"
    assert group.markets[1].markets == []


def test_active_markets_page_decodes() -> None:
    raw = b'{"data":[' + MARKET + b',{"slug":"other"}],"totalMarketsCount":412}'
    page = ACTIVE_PAGE_DECODER.decode(raw)
    assert [m.slug for m in page.data] == ["btc-above-100k-jun-2026", "other"]
    assert page.totalMarketsCount == 412
    assert ACTIVE_PAGE_DECODER.decode(b'{"data":[]}').totalMarketsCount is None


@pytest.mark.parametrize(
    ("raw", "prices"),
    [
        (
            NEW_PRICE_DATA_SDK,
            b'[{"marketId":123,"marketAddress":"0xabc","yesPrice":0.65,"noPrice":0.35}]',
        ),
        (NEW_PRICE_DATA_DOCS, b'{"yes":"0.65","no":"0.35"}'),
    ],
)
def test_new_price_data_both_shapes_keep_raw_prices(raw: bytes, prices: bytes) -> None:
    data = EVENT_DECODERS["newPriceData"].decode(raw)
    assert isinstance(data, NewPriceData)
    assert data.marketAddress == "0xabc"
    assert data.blockNumber == 12345678
    assert data.timestamp is not None
    assert timestamp_ms(data.timestamp) == 1765189800000
    assert bytes(data.updatedPrices) == prices  # raw JSON: no float conversion happened


def test_new_price_data_minimal() -> None:
    data = EVENT_DECODERS["newPriceData"].decode(b'{"marketAddress":"0xabc"}')
    assert bytes(data.updatedPrices) == b"null"
    assert data.blockNumber is None
    assert data.timestamp is None


def test_market_created_payload() -> None:
    raw = (
        b'{"slug":"new-m","title":"New","type":"CLOB","groupSlug":"g",'
        b'"categoryIds":[1],"createdAt":"2026-01-01T00:00:00.000Z"}'
    )
    assert EVENT_DECODERS["marketCreated"].decode(raw) == MarketCreatedPayload(
        slug="new-m", title="New", type="CLOB", groupSlug="g"
    )


def test_market_resolved_payload() -> None:
    raw = (
        b'{"slug":"m","type":"CLOB","winningOutcome":"YES","winningIndex":0,'
        b'"resolutionDate":"2026-01-01T00:00:00.000Z"}'
    )
    assert EVENT_DECODERS["marketResolved"].decode(raw) == MarketResolvedPayload(
        slug="m", type="CLOB", winningOutcome="YES", winningIndex=0
    )


def test_event_decoders_cover_known_events_only() -> None:
    assert set(EVENT_DECODERS) == {
        "orderbookUpdate",
        "newPriceData",
        "marketCreated",
        "marketResolved",
    }


def test_orderbook_payload_is_frozen() -> None:
    book = ORDERBOOK_DECODER.decode(REST_ORDERBOOK)
    assert isinstance(book, OrderbookPayload)
    with pytest.raises(AttributeError):
        book.minSize = Decimal(2)  # type: ignore[misc]
