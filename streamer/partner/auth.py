"""Credentials and request signing for the Limitless REST and WebSocket APIs.

Pure: no I/O and no clock. The caller passes ``now`` (epoch seconds) in.

Two auth modes (limitless-api.md §1.2); only one is sent per request and HMAC wins:

* legacy API key: one header, ``X-API-Key``;
* scoped HMAC token: ``lmts-api-key`` (token id), ``lmts-timestamp`` and
  ``lmts-signature``, where the signature is
  ``base64(HMAC-SHA256(base64decode(secret), TS \\n METHOD \\n PATH_WITH_QUERY \\n BODY))``
  (§1.3). ``PATH_WITH_QUERY`` is exactly what goes on the request line, and ``BODY``
  exactly the bytes sent.

Secrets never appear in a ``repr``, ``str`` or error message produced here.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final

ENV_API_KEY: Final = "LIMITLESS_API_KEY"
ENV_HMAC_TOKEN_ID: Final = "LIMITLESS_HMAC_TOKEN_ID"
ENV_HMAC_SECRET: Final = "LIMITLESS_HMAC_SECRET"

HEADER_API_KEY: Final = "X-API-Key"
HEADER_HMAC_KEY: Final = "lmts-api-key"
HEADER_HMAC_TIMESTAMP: Final = "lmts-timestamp"
HEADER_HMAC_SIGNATURE: Final = "lmts-signature"

_REDACTED: Final = "<redacted>"
_ID_PREFIX_CHARS: Final = 4


class InvalidSecretError(ValueError):
    """The HMAC secret is not strict, canonical, standard base64 with padding.

    The message never contains the secret itself.
    """


def decode_secret(secret_b64: str) -> bytes:
    """Decode an HMAC secret into the raw key bytes.

    Strict like the Rust SDK: standard alphabet, ``=`` padding, no whitespace, and the
    text must be the canonical encoding of the bytes it decodes to.

    Args:
        secret_b64: the secret as issued (base64 text).

    Returns:
        The raw key bytes (the HMAC key; the text itself is never the key).

    Raises:
        InvalidSecretError: empty, malformed or non-canonical base64.
    """
    try:
        key = base64.b64decode(secret_b64, validate=True)
    except (binascii.Error, ValueError):
        # ``from None``: keep the binascii detail (which may quote input) out of tracebacks.
        raise InvalidSecretError(
            "HMAC secret is not valid standard base64 (with padding)"
        ) from None
    if not key:
        raise InvalidSecretError("HMAC secret is empty")
    if base64.b64encode(key).decode("ascii") != secret_b64:
        raise InvalidSecretError("HMAC secret is not canonical base64")
    return key


def signing_message(timestamp: str, method: str, path_with_query: str, body: bytes | str) -> bytes:
    """Build the exact bytes that are signed (§1.3): four fields joined by LF.

    Args:
        timestamp: the ``lmts-timestamp`` header value.
        method: HTTP method; upper-cased here.
        path_with_query: path starting with ``/`` plus ``?query`` exactly as sent.
        body: the exact body bytes sent (``str`` is UTF-8 encoded); empty when none.

    Returns:
        ``TS\\nMETHOD\\nPATH\\nBODY`` as bytes.
    """
    body_bytes = body.encode("utf-8") if isinstance(body, str) else body
    head = f"{timestamp}\n{method.upper()}\n{path_with_query}\n".encode()
    return head + body_bytes


def sign(
    secret_b64: str, timestamp: str, method: str, path_with_query: str, body: bytes | str = b""
) -> str:
    """Compute the ``lmts-signature`` header value.

    Args:
        secret_b64: the HMAC secret (standard base64 with padding).
        timestamp: the ``lmts-timestamp`` value, see :func:`iso_timestamp`.
        method: HTTP method (any case).
        path_with_query: request path plus query string, exactly as on the request line.
        body: the exact body bytes sent, or ``b""``.

    Returns:
        The base64 (with padding) HMAC-SHA256 digest.

    Raises:
        InvalidSecretError: the secret is not valid base64.
    """
    return _sign_with_key(decode_secret(secret_b64), timestamp, method, path_with_query, body)


def _sign_with_key(
    key: bytes, timestamp: str, method: str, path_with_query: str, body: bytes | str
) -> str:
    message = signing_message(timestamp, method, path_with_query, body)
    digest = hmac.new(key, message, hashlib.sha256).digest()
    return base64.b64encode(digest).decode("ascii")


def iso_timestamp(epoch_s: float) -> str:
    """Format epoch seconds as ``2026-01-15T09:30:00.123Z`` (UTC, 3 decimals, 24 chars).

    Sub-millisecond digits are truncated, as JavaScript ``toISOString()`` and Python
    ``isoformat(timespec="milliseconds")`` do.
    """
    moment = datetime.fromtimestamp(epoch_s, tz=UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _redact_id(value: str) -> str:
    return f"{value[:_ID_PREFIX_CHARS]}…"


@dataclass(frozen=True, repr=False)
class ApiKey:
    """Legacy API-key credentials (``X-API-Key``; deprecated by the venue).

    Attributes:
        key: the ``lmts_…`` key. Never shown by ``repr``/``str``.
    """

    key: str

    def __post_init__(self) -> None:
        if not self.key:
            raise ValueError("API key is empty")

    def __repr__(self) -> str:
        return f"ApiKey(key={_REDACTED})"

    __str__ = __repr__


@dataclass(frozen=True, repr=False)
class HmacCredentials:
    """Scoped-token credentials for HMAC signing.

    The secret is validated (strict base64) at construction, so a bad secret fails at
    startup rather than on the first request.

    Attributes:
        token_id: the token id, sent as ``lmts-api-key``. Only a prefix is shown by ``repr``.
        secret: the base64 secret. Never shown by ``repr``/``str``.
    """

    token_id: str
    secret: str

    def __post_init__(self) -> None:
        if not self.token_id:
            raise ValueError("HMAC token id is empty")
        decode_secret(self.secret)

    def __repr__(self) -> str:
        return f"HmacCredentials(token_id={_redact_id(self.token_id)!r}, secret={_REDACTED})"

    __str__ = __repr__


Credentials = ApiKey | HmacCredentials


def auth_headers(
    creds: Credentials | None, method: str, path_with_query: str, body: bytes, now: float
) -> dict[str, str]:
    """Return the auth headers for one request (a fresh signature each call).

    Args:
        creds: the credentials, or ``None`` for public requests.
        method: HTTP method.
        path_with_query: path plus query exactly as on the request line.
        body: exact body bytes sent (``b""`` when none).
        now: current time in epoch seconds (the caller's clock).

    Returns:
        ``{"X-API-Key": …}``, the three ``lmts-*`` headers, or ``{}``.
    """
    if creds is None:
        return {}
    if isinstance(creds, ApiKey):
        return {HEADER_API_KEY: creds.key}
    timestamp = iso_timestamp(now)
    signature = sign(creds.secret, timestamp, method, path_with_query, body)
    return {
        HEADER_HMAC_KEY: creds.token_id,
        HEADER_HMAC_TIMESTAMP: timestamp,
        HEADER_HMAC_SIGNATURE: signature,
    }


def credentials_from_env(env: Mapping[str, str]) -> Credentials | None:
    """Pick credentials from environment variables.

    HMAC (``LIMITLESS_HMAC_TOKEN_ID`` + ``LIMITLESS_HMAC_SECRET``) is preferred, then
    ``LIMITLESS_API_KEY``, else ``None``. Values are stripped of surrounding whitespace
    and an empty value counts as unset.

    Args:
        env: the environment (``os.environ`` or a test dict).

    Returns:
        The credentials, or ``None`` when none are configured.

    Raises:
        ValueError: only one of the two HMAC variables is set (the message names the
            missing one), or the secret is not valid base64 (:class:`InvalidSecretError`).
    """
    token_id = env.get(ENV_HMAC_TOKEN_ID, "").strip()
    secret = env.get(ENV_HMAC_SECRET, "").strip()
    if token_id and secret:
        return HmacCredentials(token_id=token_id, secret=secret)
    if token_id:
        raise ValueError(f"{ENV_HMAC_SECRET} is not set but {ENV_HMAC_TOKEN_ID} is")
    if secret:
        raise ValueError(f"{ENV_HMAC_TOKEN_ID} is not set but {ENV_HMAC_SECRET} is")
    api_key = env.get(ENV_API_KEY, "").strip()
    return ApiKey(api_key) if api_key else None
