"""Telnyx webhook signatures: Ed25519 over ``<telnyx-timestamp>|<raw body>``.

Telnyx signs every webhook (TeXML included) with its account key; the public key is shown in
Mission Control (Keys & Credentials) and given to voxpipe as ``TELNYX_PUBLIC_KEY`` (base64).
The signature arrives base64-encoded in ``telnyx-signature-ed25519``, the Unix time it was
signed at in ``telnyx-timestamp``; a timestamp outside the replay window is refused.
"""

from __future__ import annotations

import base64
import binascii
import time

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

__all__ = [
    "SIGNATURE_HEADER",
    "TIMESTAMP_HEADER",
    "TelnyxSignatureError",
    "verify_telnyx_signature",
]

SIGNATURE_HEADER = "telnyx-signature-ed25519"
TIMESTAMP_HEADER = "telnyx-timestamp"


class TelnyxSignatureError(ValueError):
    """A Telnyx webhook whose signature is missing, wrong, or too old (a replay)."""


def verify_telnyx_signature(
    public_key_b64: str,
    body: bytes,
    signature_b64: str | None,
    timestamp: str | None,
    *,
    window_s: float = 300.0,
    now: float | None = None,
) -> None:
    """Return if ``body`` was signed by Telnyx within ``window_s`` of ``now``; raise otherwise."""
    if not signature_b64 or not timestamp:
        raise TelnyxSignatureError(f"missing {SIGNATURE_HEADER} or {TIMESTAMP_HEADER} header")
    ts = timestamp.strip()
    if not ts.isdigit() or len(ts) > 12:
        raise TelnyxSignatureError(f"malformed {TIMESTAMP_HEADER}")
    try:
        signature = base64.b64decode(signature_b64.strip(), validate=True)
        key = Ed25519PublicKey.from_public_bytes(base64.b64decode(public_key_b64))
    except (binascii.Error, ValueError) as exc:
        raise TelnyxSignatureError(f"malformed {SIGNATURE_HEADER}") from exc
    try:
        key.verify(signature, ts.encode("ascii") + b"|" + body)
    except InvalidSignature as exc:
        raise TelnyxSignatureError("Telnyx signature does not match the body") from exc
    # Checked after the signature, so the timestamp is known to be Telnyx's own.
    age = (time.time() if now is None else now) - int(ts)
    if abs(age) > window_s:
        raise TelnyxSignatureError(
            f"Telnyx signature is {age:.0f} s old, outside the {window_s:.0f} s replay window"
        )
