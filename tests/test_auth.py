"""Tests for streamer.partner.auth: §1.4 signing vectors, timestamps, redaction, env selection."""

from __future__ import annotations

import base64
import hashlib
import hmac
from datetime import UTC, datetime

import pytest

from streamer.partner.auth import (
    ApiKey,
    HmacCredentials,
    InvalidSecretError,
    auth_headers,
    credentials_from_env,
    decode_secret,
    iso_timestamp,
    sign,
    signing_message,
)

# limitless-api.md §1.4: secret = base64 of bytes 0x00..0x1f.
SECRET = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
TS = "2026-01-15T09:30:00.123Z"
TS_EPOCH_S = datetime(2026, 1, 15, 9, 30, 0, 123000, tzinfo=UTC).timestamp()


@pytest.mark.parametrize(
    ("method", "path", "body", "expected"),
    [
        pytest.param(
            "GET",
            "/markets/active?limit=25&page=2&sortBy=newest",
            b"",
            "HijQ8f2/1aWSIUOlnLzopr0f2r9nIw1QmEH2u5Hqnf0=",
            id="A",
        ),
        pytest.param(
            "POST",
            "/profiles/partner-accounts/4543/allowances/retry",
            b"{}",
            "vnN0AcizoxZruTZ3IBeeGJtYOXTpyksXNUwsai6BIYw=",
            id="B",
        ),
        pytest.param(
            "GET",
            "/socket.io/?EIO=4&transport=websocket",
            b"",
            "06OyE1eRZqH/pA2RV/toqV2FhAFgRRD9maEbvhY3Y+M=",
            id="C",
        ),
        pytest.param(
            "GET",
            "/markets/active",
            b"",
            "RK5tuky+OELawd3YwSqHxKBv2mWhrxS0SAa7gjCuwSE=",
            id="D",
        ),
    ],
)
def test_sign_matches_reference_vectors(method: str, path: str, body: bytes, expected: str) -> None:
    assert sign(SECRET, TS, method, path, body) == expected


def test_sign_matches_ts_sdk_regression_vector() -> None:
    signature = sign(
        "c3VwZXItc2VjcmV0LWtleQ==",
        "2026-03-23T12:34:56.789Z",
        "PATCH",
        "/orders?market=btc",
        '{"foo":"bar"}',
    )
    assert signature == "mgMUpOd7FH4sOSti2MF30YKF9yDq+67VjFksPa5I5eE="


def test_signing_message_matches_reference_bytes() -> None:
    assert signing_message(TS, "GET", "/markets/active?limit=25&page=2&sortBy=newest", b"") == (
        b"2026-01-15T09:30:00.123Z\nGET\n/markets/active?limit=25&page=2&sortBy=newest\n"
    )
    assert signing_message(TS, "post", "/p", "{}") == b"2026-01-15T09:30:00.123Z\nPOST\n/p\n{}"


def test_sign_uppercases_method() -> None:
    assert sign(SECRET, TS, "get", "/markets/active") == sign(SECRET, TS, "GET", "/markets/active")


def test_sign_encodes_str_body_as_utf8() -> None:
    body = '{"title":"café"}'
    assert sign(SECRET, TS, "POST", "/x", body) == sign(SECRET, TS, "POST", "/x", body.encode())


def test_sign_keys_with_decoded_bytes_not_text() -> None:
    message = f"{TS}\nGET\n/markets/active\n".encode()
    with_text = base64.b64encode(hmac.new(SECRET.encode(), message, hashlib.sha256).digest())
    assert sign(SECRET, TS, "GET", "/markets/active") != with_text.decode()


def test_iso_timestamp_format_is_24_chars_with_millis() -> None:
    assert iso_timestamp(TS_EPOCH_S) == TS
    assert len(iso_timestamp(TS_EPOCH_S)) == 24
    assert iso_timestamp(0) == "1970-01-01T00:00:00.000Z"


def test_iso_timestamp_truncates_sub_millisecond_digits() -> None:
    assert iso_timestamp(TS_EPOCH_S + 0.0009) == TS


@pytest.mark.parametrize(
    "bad",
    [
        "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8",  # missing padding
        "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwd-h8=",  # url-safe alphabet
        "AAECAwQF BgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",  # whitespace
        "AAF=",  # non-canonical trailing bits
        "",
        "not-base64!!",
        "sécret==",
    ],
)
def test_decode_secret_rejects_malformed_without_leaking(bad: str) -> None:
    with pytest.raises(InvalidSecretError) as info:
        decode_secret(bad)
    assert isinstance(info.value, ValueError)
    if bad:
        assert bad not in str(info.value)
    # No chained binascii error (its text may quote input) is shown in a traceback.
    assert info.value.__cause__ is None
    assert info.value.__context__ is None or info.value.__suppress_context__


def test_sign_with_bad_secret_raises_value_error() -> None:
    with pytest.raises(ValueError, match="base64"):
        sign("zz-secret-value", TS, "GET", "/")


def test_hmac_credentials_reject_bad_secret_at_construction() -> None:
    with pytest.raises(InvalidSecretError) as info:
        HmacCredentials(token_id="token-id-123", secret="my-plain-secret")
    assert "my-plain-secret" not in str(info.value)


def test_hmac_credentials_repr_redacts_secret() -> None:
    creds = HmacCredentials(token_id="abcdef-123456", secret=SECRET)
    for text in (repr(creds), str(creds), f"{creds}", repr([creds])):
        assert SECRET not in text
        assert "abcdef-123456" not in text
        assert "<redacted>" in text
    assert repr(creds) == "HmacCredentials(token_id='abcd…', secret=<redacted>)"


def test_api_key_repr_redacts_key() -> None:
    creds = ApiKey("lmts_supersecretkey")
    assert "lmts_supersecretkey" not in repr(creds)
    assert "lmts_supersecretkey" not in str(creds)
    assert repr(creds) == "ApiKey(key=<redacted>)"


def test_credentials_are_frozen() -> None:
    creds = HmacCredentials(token_id="tok", secret=SECRET)
    with pytest.raises(AttributeError):
        creds.secret = "x"  # type: ignore[misc]


def test_auth_headers_hmac_signs_request() -> None:
    creds = HmacCredentials(token_id="tok-1", secret=SECRET)
    headers = auth_headers(creds, "get", "/markets/active", b"", TS_EPOCH_S)
    assert headers == {
        "lmts-api-key": "tok-1",
        "lmts-timestamp": TS,
        "lmts-signature": "RK5tuky+OELawd3YwSqHxKBv2mWhrxS0SAa7gjCuwSE=",
    }


def test_auth_headers_hmac_fresh_timestamp_changes_signature() -> None:
    creds = HmacCredentials(token_id="tok-1", secret=SECRET)
    first = auth_headers(creds, "GET", "/markets/active", b"", TS_EPOCH_S)
    second = auth_headers(creds, "GET", "/markets/active", b"", TS_EPOCH_S + 1.5)
    assert second["lmts-timestamp"] == "2026-01-15T09:30:01.623Z"
    assert first["lmts-signature"] != second["lmts-signature"]


def test_auth_headers_api_key_mode() -> None:
    assert auth_headers(ApiKey("lmts_k"), "GET", "/x", b"", 0.0) == {"X-API-Key": "lmts_k"}


def test_auth_headers_none_is_empty() -> None:
    assert auth_headers(None, "GET", "/x", b"", 0.0) == {}


def test_credentials_from_env_prefers_hmac() -> None:
    env = {
        "LIMITLESS_HMAC_TOKEN_ID": "tok",
        "LIMITLESS_HMAC_SECRET": SECRET,
        "LIMITLESS_API_KEY": "lmts_k",
    }
    assert credentials_from_env(env) == HmacCredentials(token_id="tok", secret=SECRET)


def test_credentials_from_env_api_key() -> None:
    assert credentials_from_env({"LIMITLESS_API_KEY": " lmts_k\n"}) == ApiKey("lmts_k")


def test_credentials_from_env_none() -> None:
    assert credentials_from_env({}) is None
    assert credentials_from_env({"LIMITLESS_API_KEY": ""}) is None


def test_credentials_from_env_missing_secret_names_variable() -> None:
    with pytest.raises(ValueError, match="LIMITLESS_HMAC_SECRET is not set"):
        credentials_from_env({"LIMITLESS_HMAC_TOKEN_ID": "tok", "LIMITLESS_API_KEY": "k"})


def test_credentials_from_env_missing_token_id_names_variable() -> None:
    with pytest.raises(ValueError, match="LIMITLESS_HMAC_TOKEN_ID is not set") as info:
        credentials_from_env({"LIMITLESS_HMAC_SECRET": SECRET})
    assert SECRET not in str(info.value)


def test_credentials_from_env_bad_secret_does_not_leak() -> None:
    env = {"LIMITLESS_HMAC_TOKEN_ID": "tok", "LIMITLESS_HMAC_SECRET": "plain-text-secret"}
    with pytest.raises(InvalidSecretError) as info:
        credentials_from_env(env)
    assert "plain-text-secret" not in str(info.value)
