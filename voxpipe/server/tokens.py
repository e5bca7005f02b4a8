"""Short-lived sealed stream tokens: the webhook hands one out, the media websocket redeems it.

A token seals (AES-256-GCM, key derived from the stream token secret) what the authenticated
webhook said about the call: the carrier, the call id (Twilio's CallSid, Telnyx's
call_control_id, Vonage's uuid, or an id the server made), the caller and called numbers and
the caller's country, and an expiry. Nobody without the secret can read or forge one, and the
stream that presents it gets exactly that identity (see ``voxpipe.server.call_start``).

A token is redeemed once, before its expiry, for the carrier it was issued for. "Once" holds
across workers when the used set is shared (``RedisUsedTokens``, with ``REDIS_URL``); the
in-process set (``MemoryUsedTokens``) covers one worker only.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from voxpipe.server.used_tokens import MemoryUsedTokens, UsedTokens

__all__ = ["StreamGrant", "StreamTokenError", "StreamTokens"]

logger = logging.getLogger(__name__)

MAX_TOKEN_CHARS = 1024
_NONCE_BYTES = 12


class StreamTokenError(ValueError):
    """A stream token that is missing, malformed, forged, expired, reused or for another carrier."""


@dataclass(frozen=True, slots=True)
class StreamGrant:
    """What a redeemed token says about the call its stream belongs to."""

    carrier: str
    call_id: str  # the id the call is stored under ("" when the token names none)
    carrier_signed: bool  # True: the carrier's signed webhook gave call_id; False: server-made
    caller: str = ""
    called: str = ""
    country: str = ""
    expires_at: int = 0
    token_id: str = ""  # the token's nonce: its entry in the used set


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class StreamTokens:
    """Issues and redeems stream tokens with one secret (share it across workers of a service)."""

    def __init__(
        self,
        secret: bytes | None = None,
        *,
        ttl_s: float = 60.0,
        clock: Callable[[], float] = time.time,
        used: UsedTokens | None = None,
    ) -> None:
        # Without a configured secret a random one is used: tokens then work only in this process.
        secret = secret if secret else secrets.token_bytes(32)
        key = hmac.new(secret, b"voxpipe stream tokens v2", hashlib.sha256).digest()
        self._aead = AESGCM(key)
        self.ttl_s = ttl_s
        self._clock = clock
        self.used: UsedTokens = used if used is not None else MemoryUsedTokens(clock=clock)

    def issue(
        self,
        carrier: str,
        call_id: str = "",
        *,
        carrier_signed: bool = True,
        caller: str = "",
        called: str = "",
        country: str = "",
    ) -> str:
        """A token for one stream of ``carrier`` for the call ``call_id``."""
        expiry = int(self._clock() + self.ttl_s) + 1
        payload: dict[str, Any] = {"e": expiry, "i": call_id[:128]}
        if not carrier_signed:
            payload["m"] = 1
        for key, value in (("f", caller), ("t", called), ("c", country)):
            if value:
                payload[key] = value[:64]
        nonce = secrets.token_bytes(_NONCE_BYTES)
        sealed = self._aead.encrypt(
            nonce, json.dumps(payload, separators=(",", ":")).encode(), carrier.encode()
        )
        return _b64(nonce + sealed)

    def open(self, token: str | None, carrier: str) -> StreamGrant:
        """The grant sealed in ``token`` (not yet redeemed), or StreamTokenError saying why not."""
        if not token:
            raise StreamTokenError("no stream token: start calls through the voice webhook")
        if len(token) > MAX_TOKEN_CHARS:
            raise StreamTokenError("malformed stream token")
        try:
            raw = _unb64(token)
        except (binascii.Error, ValueError) as exc:
            raise StreamTokenError("malformed stream token") from exc
        if len(raw) <= _NONCE_BYTES + 16:
            raise StreamTokenError("malformed stream token")
        nonce, sealed = raw[:_NONCE_BYTES], raw[_NONCE_BYTES:]
        try:
            plain = self._aead.decrypt(nonce, sealed, carrier.encode())
            payload = json.loads(plain)
            expiry = int(payload["e"])
        except (InvalidTag, ValueError, KeyError, TypeError) as exc:
            raise StreamTokenError(
                f"stream token was not issued by this service for a {carrier} call"
            ) from exc
        now = self._clock()
        if now > expiry:
            raise StreamTokenError(f"stream token expired {now - expiry:.0f} s ago")
        return StreamGrant(
            carrier=carrier,
            call_id=str(payload.get("i", "")),
            carrier_signed=not payload.get("m"),
            caller=str(payload.get("f", "")),
            called=str(payload.get("t", "")),
            country=str(payload.get("c", "")),
            expires_at=expiry,
            token_id=_b64(nonce),
        )

    async def redeem(self, token: str | None, carrier: str) -> StreamGrant:
        """Accept ``token`` once (across workers when the used set is shared)."""
        grant = self.open(token, carrier)
        ttl = max(1.0, grant.expires_at - self._clock() + 1.0)
        if not await self.used.claim(f"stream:{grant.token_id}", ttl):
            raise StreamTokenError("stream token was already used")
        return grant

    async def close(self) -> None:
        """Release the used set's connection, if any."""
        await self.used.close()
