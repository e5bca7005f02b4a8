"""Short-lived signed stream tokens: the webhook hands one out, the media websocket checks it.

A token is ``<expiry>.<nonce>.<mac>`` where the MAC (HMAC-SHA256, truncated to 128 bits) covers
the carrier, the call it was issued for (Twilio's CallSid, when known), the expiry and the
nonce. A token is accepted once, before its expiry, for the same carrier and call: a websocket
nobody was told about cannot start a call.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from collections.abc import Callable

__all__ = ["StreamTokenError", "StreamTokens"]


class StreamTokenError(ValueError):
    """A stream token that is missing, malformed, forged, expired, reused or for another call."""


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


class StreamTokens:
    """Issues and checks stream tokens with one secret (share it across workers of one service)."""

    def __init__(
        self,
        secret: bytes | None = None,
        *,
        ttl_s: float = 60.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        # Without a configured secret a random one is used: tokens then work only in this process.
        self._secret = secret if secret else secrets.token_bytes(32)
        self.ttl_s = ttl_s
        self._clock = clock
        self._used: dict[str, float] = {}  # nonce -> expiry, until it has expired anyway

    def _mac(self, carrier: str, call_ref: str, expiry: int, nonce: str) -> str:
        msg = f"voxpipe-stream|{carrier}|{call_ref}|{expiry}|{nonce}".encode()
        return _b64(hmac.new(self._secret, msg, hashlib.sha256).digest()[:16])

    def issue(self, carrier: str, call_ref: str = "") -> str:
        """A token for one stream of ``carrier`` for the call ``call_ref`` (may be empty)."""
        expiry = int(self._clock() + self.ttl_s) + 1
        nonce = _b64(secrets.token_bytes(9))
        return f"{expiry}.{nonce}.{self._mac(carrier, call_ref, expiry, nonce)}"

    def check(self, token: str | None, carrier: str, call_ref: str = "") -> None:
        """Accept ``token`` once, or raise StreamTokenError saying why it is refused."""
        if not token:
            raise StreamTokenError("no stream token: start calls through the voice webhook")
        parts = token.split(".")
        if len(parts) != 3 or not parts[0].isdigit() or len(token) > 200:
            raise StreamTokenError("malformed stream token")
        expiry, nonce, mac = int(parts[0]), parts[1], parts[2]
        expected = self._mac(carrier, call_ref, expiry, nonce)
        if not hmac.compare_digest(expected.encode(), mac.encode("ascii", "replace")):
            raise StreamTokenError("stream token signature does not match this call")
        now = self._clock()
        if now > expiry:
            raise StreamTokenError(f"stream token expired {now - expiry:.0f} s ago")
        self._forget_expired(now)
        if nonce in self._used:
            raise StreamTokenError("stream token was already used")
        self._used[nonce] = expiry

    def _forget_expired(self, now: float) -> None:
        if len(self._used) > 256:
            self._used = {n: e for n, e in self._used.items() if e >= now}
