"""The simulator's side of authentication: verifying what a client sent.

Written from the API reference (§1.2–§1.4, §3.1) independently of the client's
:mod:`streamer.partner.auth`, so the tests compare two implementations of the signing rules:

* HMAC scoped token: ``lmts-api-key`` is the token id, ``lmts-timestamp`` an ISO-8601
  UTC time with exactly three fractional digits and ``Z`` (24 characters) that must lie
  within :attr:`SimulatorAuth.window_s` (30 s) of the server clock, and
  ``lmts-signature`` is ``base64(HMAC-SHA256(base64decode(secret), message))`` with
  ``message = TS + "\\n" + METHOD + "\\n" + PATH_WITH_QUERY + "\\n" + BODY``, where
  PATH_WITH_QUERY is the request target exactly as received and BODY the exact bytes;
* legacy API key: ``X-API-Key`` equal to the configured key.

Pure: the caller passes the headers, the request and ``now`` (epoch seconds).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Final, Literal

import msgspec

__all__ = ["AuthResult", "Identity", "SimulatorAuth", "verify_request"]

TIMESTAMP_FORMAT: Final = "%Y-%m-%dT%H:%M:%S.%fZ"
TIMESTAMP_CHARS: Final = 24
DEFAULT_WINDOW_S: Final = 30.0

Identity = Literal["hmac", "api_key"]


class SimulatorAuth(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Credentials the simulator accepts.

    Attributes:
        token_id: the HMAC token id (``lmts-api-key``).
        secret: the HMAC secret as issued (standard base64 with padding).
        api_key: a legacy ``X-API-Key`` value that is also accepted, or ``None``.
        window_s: how far ``lmts-timestamp`` may be from the server clock.
        account: the wallet address of the authenticated user (private payloads).
    """

    token_id: str
    secret: str
    api_key: str | None = None
    window_s: float = DEFAULT_WINDOW_S
    account: str = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed"

    def __post_init__(self) -> None:
        if not self.token_id:
            raise ValueError("auth.token_id must not be empty")
        try:
            key = base64.b64decode(self.secret, validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("auth.secret is not standard base64") from None
        if not key:
            raise ValueError("auth.secret must not be empty")
        if self.window_s <= 0:
            raise ValueError("auth.window_s must be > 0")

    def __repr__(self) -> str:  # never show the secret or the key
        return f"SimulatorAuth(token_id={self.token_id[:4]!r}…, secret=<redacted>)"


class AuthResult(msgspec.Struct, frozen=True):
    """The verdict on one request.

    Attributes:
        identity: how the caller authenticated, or ``None`` when it did not.
        reason: why not (``missing``, ``bad_signature``, ``stale_timestamp`` …), or
            ``None`` when accepted. Never contains a credential.
    """

    identity: Identity | None
    reason: str | None = None

    @property
    def ok(self) -> bool:
        """Whether the request is authenticated."""
        return self.identity is not None


def _header(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    if value is None:
        value = headers.get(name.lower())
    return value


def _same(given: str, expected: str) -> bool:
    # Bytes: compare_digest refuses non-ASCII str, and a header may carry anything.
    return hmac.compare_digest(given.encode("utf-8", "surrogateescape"), expected.encode())


def _parse_timestamp(text: str) -> float | None:
    if len(text) != TIMESTAMP_CHARS:
        return None
    try:
        moment = datetime.strptime(text, TIMESTAMP_FORMAT).replace(tzinfo=UTC)
    except ValueError:
        return None
    return moment.timestamp()


def expected_signature(
    secret: str, timestamp: str, method: str, path_with_query: str, body: bytes
) -> str:
    """The signature the server expects (§1.3)."""
    key = base64.b64decode(secret)
    message = b"\n".join(
        (timestamp.encode(), method.upper().encode(), path_with_query.encode(), body)
    )
    return base64.b64encode(hmac.new(key, message, hashlib.sha256).digest()).decode()


def verify_request(
    auth: SimulatorAuth,
    headers: Mapping[str, str],
    method: str,
    path_with_query: str,
    body: bytes,
    now_s: float,
) -> AuthResult:
    """Check one request's credentials. HMAC headers win over ``X-API-Key`` (§1.2).

    Args:
        auth: what the simulator accepts.
        headers: request headers (any case-insensitive mapping, or lower-case keys).
        method: HTTP method.
        path_with_query: the request target exactly as received.
        body: the exact body bytes received.
        now_s: the simulator's clock, epoch seconds.

    Returns:
        The verdict.
    """
    token = _header(headers, "lmts-api-key")
    if token is not None:
        return _verify_hmac(auth, headers, token, method, path_with_query, body, now_s)
    api_key = _header(headers, "X-API-Key")
    if api_key is not None:
        if auth.api_key is not None and _same(api_key, auth.api_key):
            return AuthResult("api_key")
        return AuthResult(None, "bad_api_key")
    return AuthResult(None, "missing")


def _verify_hmac(
    auth: SimulatorAuth,
    headers: Mapping[str, str],
    token: str,
    method: str,
    path_with_query: str,
    body: bytes,
    now_s: float,
) -> AuthResult:
    timestamp = _header(headers, "lmts-timestamp")
    signature = _header(headers, "lmts-signature")
    if timestamp is None or signature is None:
        return AuthResult(None, "incomplete_hmac_headers")
    if not _same(token, auth.token_id):
        return AuthResult(None, "unknown_token")
    moment = _parse_timestamp(timestamp)
    if moment is None:
        return AuthResult(None, "bad_timestamp")
    if abs(now_s - moment) > auth.window_s:
        return AuthResult(None, "stale_timestamp")
    expected = expected_signature(auth.secret, timestamp, method, path_with_query, body)
    if not _same(signature, expected):
        return AuthResult(None, "bad_signature")
    return AuthResult("hmac")
