"""Private channels: subscribe frames, normalisation, de-duplication, pass-through, snapshot."""

from __future__ import annotations

import logging
from decimal import Decimal
from typing import Any

import httpx
import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from sinks.records import OrderEvent, Position, PrivateRaw, Tx, decode_record, encode
from streamer.errors import RestError
from streamer.feed.retry import Backoff
from streamer.partner.auth import ApiKey, HmacCredentials
from streamer.partner.private import (
    EventIdWindow,
    PrivateChannels,
    PrivateSettings,
    check_private_config,
)
from streamer.transport.rest import RestClient, RetryPolicy

SECRET = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
ALL = PrivateSettings(channels=("positions", "order_events", "transactions"))
T0 = 1_768_469_400_123  # 2026-01-15T09:30:00.123Z


def raw(obj: Any) -> msgspec.Raw:
    return msgspec.Raw(msgspec.json.encode(obj))


def text(json_text: str) -> msgspec.Raw:
    return msgspec.Raw(json_text.encode())


def one(records: list[Any] | None) -> Any:
    assert records is not None and len(records) == 1
    return records[0]


# -- subscribe frames and ownership ---------------------------------------------------


def test_subscribe_frames_follow_configured_channels_in_order() -> None:
    channels = PrivateChannels(PrivateSettings(channels=("transactions", "order_events")))
    assert channels.subscribe_frames() == [
        ("subscribe_transactions", b"{}"),
        ("subscribe_order_events", b"{}"),
    ]
    assert channels.subscribe_frames() == channels.subscribe_frames()  # every reconnect
    assert channels.stats.subscriptions == 3


def test_subscribe_frames_empty_without_channels() -> None:
    channels = PrivateChannels(PrivateSettings())
    assert channels.subscribe_frames() == [] and not channels.enabled
    assert PrivateChannels(ALL).enabled


@pytest.mark.parametrize("name", ["orderbookUpdate", "system", "newPriceData", "marketCreated"])
def test_handle_returns_none_for_events_it_does_not_own(name: str) -> None:
    channels = PrivateChannels(ALL)
    assert channels.handle(name, raw({}), T0) is None
    assert not channels.stats.events


# -- order events -----------------------------------------------------------------------


def test_order_event_ome_placement_normalised_exactly() -> None:
    payload = text(
        '{"type":"PLACEMENT","source":"OME","eventId":1001,"orderId":"ord-1",'
        '"clientOrderId":"c-1","marketId":15,"price":0.297,"remainingSize":"288.330",'
        '"side":"SELL","token":"NO","timestamp":"2026-01-15T09:30:00.123Z","userId":101}'
    )
    record = one(PrivateChannels(ALL).handle("orderEvent", payload, T0 + 5))
    assert isinstance(record, OrderEvent)
    assert (record.source, record.event_type, record.event_id) == ("OME", "PLACEMENT", "1001")
    assert (record.order_id, record.client_order_id, record.market_id) == ("ord-1", "c-1", "15")
    assert record.price == Decimal("0.297") and type(record.price) is Decimal
    assert str(record.remaining_size) == "288.330"  # exact text, trailing zero kept
    assert (record.side, record.token, record.ts, record.recv_ts) == ("SELL", "NO", T0, T0 + 5)
    assert bytes(record.data) == bytes(payload)


def test_order_event_execution_terminal_shape() -> None:
    payload = raw({"type": "EXECUTION", "source": "OME", "eventId": "terminal:ord-9",
                   "status": "PARTIALLY_FILLED", "price": 0.5, "remainingSize": 12.25,
                   "token": "YES", "side": "BUY", "marketId": "7", "orderId": "ord-9",
                   "timestamp": T0})
    record = one(PrivateChannels(ALL).handle("orderEvent", payload, T0))
    assert (record.event_id, record.status, record.ts) == ("terminal:ord-9", "PARTIALLY_FILLED", T0)
    assert (record.price, record.remaining_size) == (Decimal("0.5"), Decimal("12.25"))


def test_order_event_settlement_matched_amounts_are_exact_decimals() -> None:
    payload = text(
        '{"type":"MATCHED","source":"SETTLEMENT","eventId":"m-1","price":"0.515",'
        '"amountContracts":"46.13","amountCollateral":"23.75695","feeAmountContracts":"0",'
        '"feeAmountCollateral":"0.071271","configuredFeeRateBps":30,"effectiveFeeBps":30,'
        '"side":"BUY","token":"YES","tokenId":' + str(2**256 - 1) + ','
        '"marketSlug":"btc-above-100k","orderId":"o-1","isEstimate":true,'
        '"timestamp":1768469400.5}'
    )
    record = one(PrivateChannels(ALL).handle("orderEvent", payload, T0))
    assert record.amount_collateral == Decimal("23.75695")
    assert record.amount_contracts * record.price == record.amount_collateral
    assert record.fee_amount_collateral == Decimal("0.071271")
    assert record.fee_amount_contracts == Decimal(0)
    assert record.token_id == str(2**256 - 1)  # uint256 JSON number kept exact
    assert (record.market, record.ts) == ("btc-above-100k", 1_768_469_400_500)


def test_order_event_mined_keeps_tx_hash_and_unknown_fields_in_data() -> None:
    payload = raw({"type": "MINED", "source": "SETTLEMENT", "eventId": "x", "txHash": "0xabc",
                   "makerMatches": [{"account": "0x1", "matchedSize": "1"}]})
    record = one(PrivateChannels(ALL).handle("orderEvent", payload, T0))
    assert record.tx_hash == "0xabc" and record.price is None and record.ts is None
    assert msgspec.json.decode(record.data)["makerMatches"][0]["matchedSize"] == "1"


@given(st.integers(0, 18).flatmap(
    lambda places: st.decimals(allow_nan=False, allow_infinity=False, places=places)))
def test_order_event_price_exact_as_number_or_string(value: Decimal) -> None:
    channels = PrivateChannels(ALL)
    as_number = text(f'{{"eventId":1,"price":{value}}}')
    as_string = text(f'{{"eventId":2,"price":"{value}"}}')
    assert one(channels.handle("orderEvent", as_number, T0)).price == value
    assert one(channels.handle("orderEvent", as_string, T0)).price == value


@pytest.mark.parametrize(
    "payload",
    ['{"eventId":1,"price":"NaN"}', '{"eventId":1,"remainingSize":"Infinity"}',
     '{"eventId":1,"amountCollateral":"-inf"}', '{"eventId":1,"price":"abc"}',
     '{"eventId":1,"timestamp":"yesterday"}', '{"eventId":1.5}', '[1,2,3]', '"text"', "null",
     '{"eventId":{"nested":true}}'],
)
def test_order_event_unknown_or_invalid_shape_passed_through(payload: str) -> None:
    channels = PrivateChannels(ALL)
    record = one(channels.handle("orderEvent", text(payload), T0))
    assert isinstance(record, PrivateRaw)
    assert (record.event, bytes(record.data)) == ("orderEvent", payload.encode())
    assert record.reason is not None and record.reason.startswith("undecodable")
    assert channels.stats.decode_errors["orderEvent"] == 1
    assert channels.stats.passthrough["orderEvent"] == 1


def test_order_event_unknown_source_and_type_still_normalised() -> None:
    record = one(PrivateChannels(ALL).handle("orderEvent", raw({"source": "NEW", "x": 1}), T0))
    assert isinstance(record, OrderEvent) and record.source == "NEW" and record.event_id is None


# -- de-duplication -----------------------------------------------------------------------


def settings(window_s: float = 60.0, max_ids: int = 100) -> PrivateSettings:
    return PrivateSettings(channels=("order_events",), dedupe_window_s=window_s,
                           dedupe_max_ids=max_ids)


def event(event_id: Any, source: str = "OME") -> msgspec.Raw:
    return raw({"source": source, "type": "UPDATE", "eventId": event_id})


def test_dedupe_drops_repeats_within_window_and_counts_them() -> None:
    channels = PrivateChannels(settings())
    assert len(channels.handle("orderEvent", event(7), T0) or []) == 1
    assert channels.handle("orderEvent", event(7), T0 + 1000) == []
    assert channels.handle("orderEvent", event("7"), T0 + 2000) == []  # number or string: one id
    assert channels.stats.duplicates == 2
    assert channels.stats.events["orderEvent"] == 3
    assert channels.stats.records["order_event"] == 1


def test_dedupe_is_time_bounded_by_recv_ts() -> None:
    channels = PrivateChannels(settings(window_s=10))
    channels.handle("orderEvent", event("a"), T0)
    assert channels.handle("orderEvent", event("a"), T0 + 10_000) == []  # at the edge
    again = channels.handle("orderEvent", event("a"), T0 + 10_001)
    assert again is not None and len(again) == 1
    assert channels.stats.duplicates == 1


def test_dedupe_is_count_bounded() -> None:
    channels = PrivateChannels(settings(max_ids=2))
    for event_id in ("a", "b", "c"):
        channels.handle("orderEvent", event(event_id), T0)
    assert len(channels.handle("orderEvent", event("a"), T0) or []) == 1  # forgotten
    assert channels.handle("orderEvent", event("c"), T0) == []
    assert channels.stats.duplicates == 1


def test_dedupe_keys_on_source_and_skips_events_without_id() -> None:
    channels = PrivateChannels(settings())
    channels.handle("orderEvent", event("1", "OME"), T0)
    assert len(channels.handle("orderEvent", event("1", "SETTLEMENT"), T0) or []) == 1
    no_id = raw({"source": "OME", "type": "UPDATE"})
    assert len(channels.handle("orderEvent", no_id, T0) or []) == 1
    assert len(channels.handle("orderEvent", no_id, T0) or []) == 1
    assert channels.stats.duplicates == 0


def test_event_id_window_bounds_memory_and_survives_clock_steps_back() -> None:
    window = EventIdWindow(max_ids=3, window_ms=1000)
    for i in range(10):
        assert not window.seen(str(i), T0 + i)
    assert len(window) == 3
    assert window.seen("9", T0 + 5)  # receive time stepped back: still a duplicate
    assert not window.seen("z", T0 + 5000) and len(window) == 1  # old ids expired
    with pytest.raises(ValueError):
        EventIdWindow(max_ids=0, window_ms=1)


# -- positions, tx, notices -------------------------------------------------------------


def test_positions_object_shape_one_record() -> None:
    payload = raw({"account": "0xabc", "marketAddress": "0xm",
                   "positions": [{"tokenId": "1", "balance": "5"}], "marketSlug": "s"})
    record = one(PrivateChannels(ALL).handle("positions", payload, T0))
    assert isinstance(record, Position)
    assert (record.origin, record.market, record.market_address) == ("stream", "s", "0xm")
    assert bytes(record.data) == bytes(payload) and record.snapshot_total is None


def test_positions_list_shape_one_record_per_row() -> None:
    rows = [{"marketSlug": "a", "yesPosition": "1"}, {"marketAddress": "0xb"}, 7]
    records = PrivateChannels(ALL).handle("positions", raw(rows), T0)
    assert records is not None
    assert [(r.market, r.market_address) for r in records] == [("a", None), (None, "0xb"),
                                                              (None, None)]
    assert msgspec.json.decode(records[2].data) == 7


def test_positions_other_shape_passed_through() -> None:
    channels = PrivateChannels(ALL)
    record = one(channels.handle("positions", text('"nope"'), T0))
    assert isinstance(record, PrivateRaw) and channels.stats.decode_errors["positions"] == 1


def test_tx_normalised_with_exact_amounts() -> None:
    payload = text(
        '{"userId":1,"txHash":"0xdef","status":"CONFIRMED","source":"SETTLEMENT",'
        '"timestamp":"2026-01-15T09:30:00.123Z","marketSlug":"m","tokenId":42,'
        '"conditionId":"0xc","amountContracts":"10.10","amountCollateral":"5.20200",'
        '"price":"0.515","side":"BUY"}'
    )
    record = one(PrivateChannels(ALL).handle("tx", payload, T0))
    assert isinstance(record, Tx)
    assert (record.status, record.tx_hash, record.token_id, record.ts) == (
        "CONFIRMED", "0xdef", "42", T0)
    assert str(record.amount_collateral) == "5.20200" and record.price == Decimal("0.515")
    bad = one(PrivateChannels(ALL).handle("tx", raw({"price": "NaN"}), T0))
    assert isinstance(bad, PrivateRaw)


def test_authenticated_and_exception_become_private_raw() -> None:
    channels = PrivateChannels(ALL)
    auth = one(channels.handle("authenticated", raw({"account": "0x1"}), T0))
    note = one(channels.handle("exception", raw({"message": "market not found"}), T0))
    assert (auth.event, auth.reason) == ("authenticated", "notice")
    assert (note.event, note.reason) == ("exception", "notice")
    assert (channels.stats.authenticated, channels.stats.exceptions) == (1, 1)
    assert channels.stats.auth_rejections == 0


def test_auth_exception_counted_every_time_logged_once_per_session(
    caplog: pytest.LogCaptureFixture,
) -> None:
    channels = PrivateChannels(ALL)
    rejected = raw({"status": "error", "message": "Unauthorized: subscribe_positions"})
    caplog.set_level(logging.WARNING, logger="streamer.partner.private")
    channels.subscribe_frames()
    for _ in range(3):
        assert one(channels.handle("exception", rejected, T0)).reason == "auth_rejected"
    channels.subscribe_frames()  # a new session
    channels.handle("exception", text('"Forbidden"'), T0)
    assert channels.stats.auth_rejections == 4
    warnings = [r for r in caplog.records if r.name == "streamer.partner.private"]
    assert len(warnings) == 2 and "Unauthorized" in warnings[0].getMessage()


# -- records on the wire ----------------------------------------------------------------


def test_private_records_encode_decimals_as_strings_and_round_trip() -> None:
    channels = PrivateChannels(ALL)
    payload = text('{"source":"SETTLEMENT","type":"MATCHED","eventId":"e","price":0.10}')
    record = one(channels.handle("orderEvent", payload, T0))
    line = encode(record)
    assert b'"type":"order_event"' in line and b'"price":"0.10"' in line
    assert b'"data":{"source":"SETTLEMENT","type":"MATCHED","eventId":"e","price":0.10}' in line
    back = decode_record(line)
    assert isinstance(back, OrderEvent) and back.price == Decimal("0.10")
    for other in (one(channels.handle("tx", raw({"status": "FAILED"}), T0)),
                  one(channels.handle("orderEvent", text("[]"), T0))):
        assert type(decode_record(encode(other))) is type(other)


# -- config ----------------------------------------------------------------------------


def test_check_private_config_requires_credentials_for_channels() -> None:
    with pytest.raises(ValueError) as info:
        check_private_config(ALL, None)
    message = str(info.value)
    assert "\n" not in message and "LIMITLESS_HMAC_SECRET" in message and "order_events" in message
    check_private_config(PrivateSettings(), None)
    check_private_config(ALL, HmacCredentials("tok-123456", SECRET))
    check_private_config(ALL, ApiKey("lmts_key_123456"))


@pytest.mark.parametrize(
    "data",
    [{"channels": ["positions", "positions"]}, {"channels": ["orders"]},
     {"dedupe_window_s": 0}, {"dedupe_max_ids": 0}, {"unknown": 1}],
)
def test_private_settings_reject_bad_values(data: dict[str, Any]) -> None:
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert(data, type=PrivateSettings)


def test_private_settings_from_toml_like_dict() -> None:
    parsed = msgspec.convert({"channels": ["order_events"], "dedupe_window_s": 30},
                             type=PrivateSettings)
    assert parsed.channels == ("order_events",) and parsed.dedupe_window_s == 30


# -- the portfolio snapshot -----------------------------------------------------------------


PORTFOLIO = (
    b'{"amm":[{"market":{"id":"0xamm","address":"0xamm","slug":"amm-1"},'
    b'"collateralAmount":"1000000"}],'
    b'"clob":[{"market":{"id":3,"slug":"btc-1"},"tokensBalance":{"yes":"25500000","no":"0"}},'
    b'{"market":"weird"}],"group":[],"points":"0"}'
)


def snapshot_client(body: bytes, status: int = 200) -> tuple[httpx.AsyncClient, list[Any]]:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(status, content=body)

    return httpx.AsyncClient(transport=httpx.MockTransport(handler)), seen


@pytest.mark.anyio
async def test_snapshot_one_position_record_per_entry(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    http, seen = snapshot_client(PORTFOLIO)
    channels = PrivateChannels(ALL, clock_ms=lambda: T0)
    async with http:
        rest = RestClient(http, base_url="https://api.test",
                          credentials=HmacCredentials("tok-123456", SECRET))
        records = await channels.snapshot(rest)
    assert seen[0].url.raw_path == b"/portfolio/positions"
    assert seen[0].headers["lmts-api-key"] == "tok-123456"
    assert [(r.kind, r.market, r.market_address) for r in records] == [
        ("clob", "btc-1", None), ("clob", None, None), ("amm", "amm-1", "0xamm")]
    assert all(r.origin == "snapshot" and r.snapshot_total == 3 and r.recv_ts == T0
               for r in records)
    assert msgspec.json.decode(records[0].data)["tokensBalance"]["yes"] == "25500000"
    assert channels.stats.snapshots == 1 and channels.stats.records["position"] == 3
    assert SECRET not in caplog.text


@pytest.mark.anyio
async def test_snapshot_empty_portfolio_is_one_marker_record() -> None:
    http, _ = snapshot_client(b'{"amm":[],"clob":[],"group":[],"points":"0"}')
    async with http:
        records = await PrivateChannels(ALL).snapshot(RestClient(http, base_url="https://a.test"))
    assert len(records) == 1
    assert (records[0].snapshot_total, records[0].kind, bytes(records[0].data)) == (0, None,
                                                                                   b"null")


@pytest.mark.anyio
async def test_snapshot_failure_raises_rest_error_and_counts() -> None:
    http, seen = snapshot_client(b'{"statusCode":401,"message":"Unauthorized"}', status=401)
    channels = PrivateChannels(ALL)
    async with http:
        rest = RestClient(http, base_url="https://a.test",
                          retry=RetryPolicy(backoff=Backoff(initial_s=0.001, jitter=0)))
        with pytest.raises(RestError) as info:
            await channels.snapshot(rest)
    assert info.value.status == 401 and len(seen) == 1
    assert channels.stats.snapshot_failures == 1 and channels.stats.snapshots == 0
