"""Errors raised by the state stores."""

from __future__ import annotations


class StoreUnavailableError(ConnectionError):
    """A backing server (Redis, Postgres) could not be reached or failed to answer."""


class TranscriptKeyError(ValueError):
    """A transcript cannot be decrypted: no TRANSCRIPT_KEY, or a different key wrote it."""
