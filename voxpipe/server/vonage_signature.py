"""Vonage signed webhooks: an HS256 JWT in ``Authorization: Bearer``, signed with the account's
signature secret (``VONAGE_SIGNATURE_SECRET``).

The claims carry ``iat`` (checked against the replay window), ``jti`` (a token id: accepted
once), and, when Vonage includes it, ``payload_hash``: the hex SHA-256 of the request body for
a POST, or of the query parameters as a JSON object without whitespace (in their order) for a
GET. A token whose hash does not match was not made for this request.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Iterable
from typing import Any

import jwt

__all__ = ["VonageSignatureError", "payload_hash", "verify_vonage_jwt"]


class VonageSignatureError(ValueError):
    """A Vonage webhook with a missing, forged, stale or mismatched signed JWT."""


def payload_hash(method: str, body: bytes, query: Iterable[tuple[str, str]]) -> str:
    """The ``payload_hash`` Vonage puts in the JWT for this request."""
    if method.upper() == "GET":
        data = json.dumps(dict(query), separators=(",", ":"), ensure_ascii=False).encode()
    else:
        data = body
    return hashlib.sha256(data).hexdigest()


def verify_vonage_jwt(
    secret: str,
    authorization: str | None,
    *,
    method: str,
    body: bytes,
    query: Iterable[tuple[str, str]] = (),
    window_s: float = 300.0,
    now: float | None = None,
) -> dict[str, Any]:
    """The verified claims of the request's signed JWT; VonageSignatureError when refused."""
    if not authorization or not authorization.lower().startswith("bearer "):
        raise VonageSignatureError("missing Authorization: Bearer <signed JWT>")
    token = authorization[len("bearer ") :].strip()
    try:
        claims: dict[str, Any] = jwt.decode(
            token,
            secret,
            algorithms=["HS256"],  # never trust the token's own "alg"
            options={"require": ["iat"], "verify_iat": False},
        )
    except jwt.PyJWTError as exc:
        raise VonageSignatureError(f"signed webhook JWT refused: {exc}") from exc
    try:
        iat = float(claims["iat"])
    except (TypeError, ValueError) as exc:
        raise VonageSignatureError("signed webhook JWT has a malformed iat") from exc
    age = (time.time() if now is None else now) - iat
    if abs(age) > window_s:
        raise VonageSignatureError(
            f"signed webhook JWT issued {age:.0f} s ago, outside the {window_s:.0f} s window"
        )
    declared = claims.get("payload_hash")
    if declared is not None:
        actual = payload_hash(method, body, query)
        if not hmac.compare_digest(actual.encode(), str(declared).lower().encode()):
            raise VonageSignatureError("payload_hash does not match the request")
    return claims
