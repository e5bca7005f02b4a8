"""OIDC / JWT bearer tokens for the records API, verified against the issuer's JWKS (PyJWT).

A JWT signed by a key of ``RECORDS_JWKS_URL`` (RS256, PS256, ES256 or EdDSA; HS* never, so a
public key cannot be used as a shared secret) with an ``exp`` and a ``sub`` is accepted; its role
is the claim named by ``RECORDS_JWT_ROLE_CLAIM`` (a string, or a list whose first known role
wins) and its audience must be ``RECORDS_JWT_AUDIENCE`` when that is set.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

import jwt

from voxpipe.records.tokens import ROLES, Principal

if TYPE_CHECKING:
    from voxpipe.config.settings import VoxpipeSettings

__all__ = ["JwtVerifier", "looks_like_jwt"]

logger = logging.getLogger(__name__)
_ALGORITHMS = ["RS256", "RS384", "RS512", "PS256", "ES256", "ES384", "EdDSA"]


def looks_like_jwt(token: str) -> bool:
    """Three base64url parts: a JWT rather than a ``vxr_`` token."""
    return token.count(".") == 2 and not token.startswith("vxr_")


class JwtVerifier:
    """Resolves a JWT to a principal (``jwt:<sub>``, its role), or None when it is not valid."""

    def __init__(
        self, jwks_url: str, *, audience: str | None = None, role_claim: str = "role"
    ) -> None:
        self._jwks = jwt.PyJWKClient(jwks_url, cache_keys=True, lifespan=300, timeout=5)
        self.audience = audience
        self.role_claim = role_claim

    @classmethod
    def from_settings(cls, settings: VoxpipeSettings) -> JwtVerifier | None:
        if not settings.records_jwks_url:
            return None
        return cls(
            settings.records_jwks_url,
            audience=settings.records_jwt_audience,
            role_claim=settings.records_jwt_role_claim,
        )

    async def resolve(self, token: str) -> Principal | None:
        try:
            # PyJWKClient fetches (and caches) the key set with blocking I/O: off the loop.
            key = await asyncio.to_thread(self._jwks.get_signing_key_from_jwt, token)
            claims: dict[str, Any] = jwt.decode(
                token,
                key.key,
                algorithms=_ALGORITHMS,
                audience=self.audience,
                options={"require": ["exp", "sub"], "verify_aud": self.audience is not None},
            )
        except (jwt.PyJWTError, OSError) as exc:
            logger.info("records API JWT refused: %s", exc)
            return None
        value = claims.get(self.role_claim)
        roles = value if isinstance(value, list) else [value]
        role = next((r for r in ROLES if r in roles), "none")
        return Principal(f"jwt:{claims['sub']}", role)
