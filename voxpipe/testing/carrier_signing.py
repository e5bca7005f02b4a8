"""Sign webhooks as Telnyx and Vonage do, for tests of a server that checks them.

``TelnyxSigner`` holds an Ed25519 key pair (its ``public_key_b64`` is what ``TELNYX_PUBLIC_KEY``
takes) and signs ``<timestamp>|<body>``; ``vonage_jwt`` makes the HS256 JWT Vonage puts in
``Authorization: Bearer`` with ``iat``, ``jti`` and the ``payload_hash`` of the request.
"""

from __future__ import annotations

import base64
import time
import uuid
from collections.abc import Iterable
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from voxpipe.server.telnyx_signature import SIGNATURE_HEADER, TIMESTAMP_HEADER
from voxpipe.server.vonage_signature import payload_hash

__all__ = ["TelnyxSigner", "vonage_jwt"]


class TelnyxSigner:
    """A Telnyx account key pair that signs webhook bodies."""

    def __init__(self) -> None:
        self._key = Ed25519PrivateKey.generate()
        raw = self._key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        self.public_key_b64 = base64.b64encode(raw).decode("ascii")

    def headers(self, body: bytes, *, timestamp: float | None = None) -> dict[str, str]:
        """The ``telnyx-signature-ed25519`` and ``telnyx-timestamp`` headers for ``body``."""
        ts = str(int(time.time() if timestamp is None else timestamp))
        signature = self._key.sign(ts.encode() + b"|" + body)
        return {SIGNATURE_HEADER: base64.b64encode(signature).decode(), TIMESTAMP_HEADER: ts}


def vonage_jwt(
    secret: str,
    *,
    method: str = "GET",
    body: bytes = b"",
    query: Iterable[tuple[str, str]] = (),
    iat: float | None = None,
    jti: str | None = None,
    with_hash: bool = True,
    **claims: Any,
) -> str:
    """A signed-webhook JWT for one request, as Vonage signs it (HS256, signature secret)."""
    payload: dict[str, Any] = {
        "iat": int(time.time() if iat is None else iat),
        "jti": jti or str(uuid.uuid4()),
        "iss": "Vonage",
        "api_key": "abcd1234",
        "application_id": str(uuid.uuid4()),
        **claims,
    }
    if with_hash:
        payload["payload_hash"] = payload_hash(method, body, query)
    return jwt.encode(payload, secret, algorithm="HS256")
