"""Server-side SIP digest authentication (RFC 3261 §22, RFC 7616): challenge and verify.

aiosipua computes digest responses for clients; the server reuses that computation to check
what a trunk sent. Nonces are stateless (an HMAC of their issue time), so any worker can check
them and a stale one is refused without keeping a table.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import time

from aiosipua import AuthChallenge, SipDigestAuth, build_credentials, parse_auth

__all__ = ["DigestGuard"]


class DigestGuard:
    """Issues ``WWW-Authenticate`` challenges and checks ``Authorization`` headers."""

    def __init__(
        self, username: str, password: str, *, realm: str = "voxpipe", nonce_ttl_s: float = 300.0
    ) -> None:
        self.realm = realm
        self._auth = SipDigestAuth(username, password)
        self._key = os.urandom(32)
        self._ttl = nonce_ttl_s

    def _nonce(self, issued: int) -> str:
        mac = hmac.new(self._key, str(issued).encode(), hashlib.sha256).hexdigest()[:32]
        return f"{issued:x}.{mac}"

    def _nonce_ok(self, nonce: str, now: float) -> bool:
        stamp, _, _ = nonce.partition(".")
        try:
            issued = int(stamp, 16)
        except ValueError:
            return False
        if not hmac.compare_digest(self._nonce(issued), nonce):
            return False
        return 0 <= now - issued <= self._ttl

    def challenge(self, now: float | None = None) -> str:
        """A fresh ``WWW-Authenticate`` value."""
        nonce = self._nonce(int(time.time() if now is None else now))
        return f'Digest realm="{self.realm}", nonce="{nonce}", algorithm=MD5, qop="auth"'

    def verify(self, header: str | None, method: str, now: float | None = None) -> bool:
        """True when ``header`` (an Authorization value) answers one of our challenges."""
        if not header:
            return False
        try:
            creds = parse_auth(header)
        except Exception:
            return False
        p = creds.params
        if creds.scheme.lower() != "digest" or p.get("username") != self._auth.username:
            return False
        if p.get("realm") != self.realm:
            return False
        nonce = p.get("nonce", "")
        if not self._nonce_ok(nonce, time.time() if now is None else now):
            return False
        qop = p.get("qop")
        challenge = AuthChallenge(
            scheme="Digest",
            params={"realm": self.realm, "nonce": nonce, **({"qop": "auth"} if qop else {})},
        )
        nc = p.get("nc", "00000001")
        try:
            count = int(nc, 16)
        except ValueError:
            return False
        expected = build_credentials(
            self._auth,
            challenge,
            method,
            p.get("uri", ""),
            nonce_count=count,
            cnonce=p.get("cnonce"),
        )
        if expected is None:
            return False
        return hmac.compare_digest(expected.params["response"], p.get("response", ""))
