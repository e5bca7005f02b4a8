"""Errors raised by the state stores."""

from __future__ import annotations


class StoreUnavailableError(ConnectionError):
    """A backing server (Redis, Postgres) could not be reached or failed to answer."""


class TranscriptKeyError(ValueError):
    """A transcript cannot be decrypted: no TRANSCRIPT_KEY, or a different key wrote it."""


class SessionDataLostError(StoreUnavailableError):
    """The shared store lost sessions it held (Redis restarted empty, or was flushed).

    Raised once per loss, by the first operation that notices; the store has then adopted the
    new generation, so the owner can write its in-memory state back.
    """
