"""Telling a Postgres DATABASE_URL from a SQLite one, without importing a driver."""

from __future__ import annotations


def is_postgres_url(url: str | None) -> bool:
    """True for postgres:// and postgresql:// URLs (DATABASE_URL may also be a SQLite path)."""
    if not url:
        return False
    return url.split("://", 1)[0].lower() in ("postgres", "postgresql")
