"""Bearer tokens of the records API: created once, stored as SHA-256, revoked by name."""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass

from voxpipe.records.db import RecordsDB

__all__ = ["ROLES", "Principal", "TokenError", "TokenStore", "hash_token"]

ROLES = ("admin", "auditor", "agent")
_PREFIX = "vxr_"


class TokenError(ValueError):
    """A token command that cannot be done (unknown role, name taken, no such token)."""


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling the API: the token's (or JWT subject's) name and role."""

    name: str
    role: str


def hash_token(token: str) -> str:
    """What is stored: SHA-256 hex. Tokens carry 256 random bits, so no salt or stretching is
    needed: there is nothing to guess."""
    return hashlib.sha256(token.encode()).hexdigest()


class TokenStore:
    """The ``records_tokens`` table."""

    def __init__(self, db: RecordsDB) -> None:
        self.db = db

    async def create(self, name: str, role: str) -> str:
        """A new token for ``name`` with ``role``; returned once, only its hash is kept."""
        if role not in ROLES:
            raise TokenError(f"unknown role {role!r}: choose one of {', '.join(ROLES)}")
        if not name or len(name) > 100:
            raise TokenError("a token name is 1 to 100 characters")
        token = _PREFIX + secrets.token_urlsafe(32)
        async with self.db.transaction() as tx:
            rows = await tx.fetch("SELECT revoked_at FROM records_tokens WHERE name = ?", (name,))
            if rows and rows[0][0] is None:
                raise TokenError(f"a token named {name!r} exists: revoke it first")
            if rows:
                await tx.execute("DELETE FROM records_tokens WHERE name = ?", (name,))
            await tx.execute(
                "INSERT INTO records_tokens (name, role, token_hash, created_at) "
                "VALUES (?, ?, ?, ?)",
                (name, role, hash_token(token), time.time()),
            )
        return token

    async def revoke(self, name: str) -> None:
        """Revoke the token named ``name`` (kept, marked revoked)."""
        async with self.db.transaction() as tx:
            n = await tx.execute(
                "UPDATE records_tokens SET revoked_at = ? WHERE name = ? AND revoked_at IS NULL",
                (time.time(), name),
            )
        if n == 0:
            raise TokenError(f"no active token named {name!r}")

    async def resolve(self, token: str) -> Principal | None:
        """The principal of a presented token, or None (unknown or revoked)."""
        rows = await self.db.fetch(
            "SELECT name, role FROM records_tokens WHERE token_hash = ? AND revoked_at IS NULL",
            (hash_token(token),),
        )
        return Principal(str(rows[0][0]), str(rows[0][1])) if rows else None
