"""Callback continuity: the conversation a caller continues when they call back.

When a call ends (or as its turns complete) the bot's conversation is saved as a
``ResumableConversation`` under a key derived from the caller id; a call from the same number
within ``SESSION_TTL_S`` of the last activity starts from it (``CALLBACK_CONTINUITY=on``).

What keeps this safe:
- The key is ``continuity:<HMAC-SHA256 of the normalised number>`` under a key derived from
  ``TRANSCRIPT_KEY`` (the derivation of ``voxpipe.state.consent``, with its own context label);
  without ``TRANSCRIPT_KEY`` the HMAC key is random per process, so the number is never
  recoverable from the store (continuity then holds within one worker only). Withheld and
  anonymous numbers (``identifiable_caller`` is None) have no key: they never continue.
- With ``TRANSCRIPT_KEY`` the record itself is sealed with AES-256-GCM, bound to its key.
- One live call owns a caller's record at a time: ``claim`` takes a lease (renewed while the
  call lives, expiring by itself if its worker dies). A second call from the same number while
  the first is live gets no lease: it starts fresh and saves nothing, so the two never share
  or overwrite one conversation.
- A record this version cannot read (an older or newer format, another key, damaged bytes) is
  ignored with a log line: the call starts fresh.

Stores: ``MemoryContinuityStore`` (one worker) and ``RedisContinuityStore`` (every worker,
``voxpipe.state.continuity_redis``); ``make_continuity_store(settings)`` picks one.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from voxpipe.state.consent import caller_key, identifiable_caller

if TYPE_CHECKING:
    from voxpipe.config.settings import VoxpipeSettings
    from voxpipe.state.crypto import TranscriptCipher

__all__ = [
    "FORMAT_VERSION",
    "MESSAGE_NOTE",
    "CallerContinuity",
    "ContinuityFormatError",
    "ContinuityStore",
    "MemoryContinuityStore",
    "PriorMessage",
    "ResumableConversation",
    "continuity_key",
    "continuity_secret",
    "decode_conversation",
    "encode_conversation",
    "make_continuity_store",
]

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
MESSAGE_NOTE = "message_taken"  # the note a message / callback number taken is carried under
_KEY_CONTEXT = b"voxpipe callback continuity caller key v1"
# Used when TRANSCRIPT_KEY is unset: never a plain (reversible) hash of a phone number.
_PROCESS_SECRET = os.urandom(32)


class ContinuityFormatError(ValueError):
    """A stored conversation this version cannot read (other format version, key or damage)."""


@dataclass(slots=True)
class PriorMessage:
    """One message of a saved conversation (OpenAI chat format) and whether it is sensitive.

    Sensitive messages (tool calls and results, what was read back from them, account numbers,
    addresses: what the bot marks) are withheld from a continuing call until it is verified.
    """

    message: dict[str, Any]
    sensitive: bool = False
    interrupted: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "message": self.message,
            "sensitive": self.sensitive,
            "interrupted": self.interrupted,
        }

    @classmethod
    def from_dict(cls, data: Any) -> PriorMessage:
        if not isinstance(data, dict) or not isinstance(data.get("message"), dict):
            raise ContinuityFormatError(f"not a saved message: {str(data)[:80]!r}")
        message = data["message"]
        if not isinstance(message.get("role"), str):
            raise ContinuityFormatError("a saved message has no role")
        return cls(
            message=dict(message),
            # Unknown sensitivity is treated as sensitive: withholding is the safe side.
            sensitive=bool(data.get("sensitive", True)),
            interrupted=bool(data.get("interrupted", False)),
        )


@dataclass(slots=True)
class ResumableConversation:
    """What a callback continues from: the last turns, the summary, the topic, the locale, the
    retention choice, an open escalation and the bot's notes (a message taken, ...)."""

    call_id: str
    saved_at: float
    messages: list[PriorMessage] = field(default_factory=list)
    summary: str | None = None  # always sensitive: made from everything, tool results included
    topic: str | None = None  # a bot-defined key ("order"); may be said before verification
    locale: str | None = None
    consent: str | None = None  # how retention was allowed on the saved call
    escalation: dict[str, Any] | None = None
    notes: dict[str, Any] = field(default_factory=dict)
    version: int = FORMAT_VERSION

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "call_id": self.call_id,
            "saved_at": self.saved_at,
            "messages": [m.to_dict() for m in self.messages],
            "summary": self.summary,
            "topic": self.topic,
            "locale": self.locale,
            "consent": self.consent,
            "escalation": self.escalation,
            "notes": self.notes,
        }

    @classmethod
    def from_dict(cls, data: Any) -> ResumableConversation:
        """Rebuild from ``to_dict()``; ContinuityFormatError for another version or a bad shape."""
        if not isinstance(data, dict):
            raise ContinuityFormatError("a saved conversation is not a JSON object")
        version = data.get("version")
        if version != FORMAT_VERSION:
            raise ContinuityFormatError(
                f"saved conversation has format version {version!r}; this voxpipe reads "
                f"version {FORMAT_VERSION}"
            )
        try:
            messages = [PriorMessage.from_dict(m) for m in data.get("messages") or []]
            escalation = data.get("escalation")
            notes = data.get("notes") or {}
            if escalation is not None and not isinstance(escalation, dict):
                raise ContinuityFormatError("escalation is not an object")
            if not isinstance(notes, dict):
                raise ContinuityFormatError("notes is not an object")
            return cls(
                call_id=str(data["call_id"]),
                saved_at=float(data["saved_at"]),
                messages=messages,
                summary=_opt_str(data.get("summary")),
                topic=_opt_str(data.get("topic")),
                locale=_opt_str(data.get("locale")),
                consent=_opt_str(data.get("consent")),
                escalation=escalation,
                notes=notes,
            )
        except (KeyError, TypeError, ValueError) as exc:
            if isinstance(exc, ContinuityFormatError):
                raise
            raise ContinuityFormatError(f"saved conversation is malformed: {exc!r}") from exc


def _opt_str(value: Any) -> str | None:
    return None if value is None else str(value)


def encode_conversation(
    conversation: ResumableConversation, key: str, cipher: TranscriptCipher | None = None
) -> bytes:
    """JSON, sealed with ``cipher`` (bound to ``key``) when one is given."""
    raw = json.dumps(conversation.to_dict(), separators=(",", ":")).encode()
    return raw if cipher is None else cipher.seal(raw, key)


def decode_conversation(
    data: bytes, key: str, cipher: TranscriptCipher | None = None
) -> ResumableConversation:
    """Inverse of ``encode_conversation``; ContinuityFormatError when it cannot be read."""
    from voxpipe.state.errors import TranscriptKeyError

    if cipher is not None:
        try:
            data = cipher.open(data, key)
        except TranscriptKeyError as exc:
            raise ContinuityFormatError(str(exc)) from exc
    try:
        parsed = json.loads(data)
    except (UnicodeDecodeError, ValueError) as exc:
        raise ContinuityFormatError(
            "saved conversation is not JSON (sealed under a TRANSCRIPT_KEY no longer set?)"
        ) from exc
    return ResumableConversation.from_dict(parsed)


def continuity_secret(settings: VoxpipeSettings) -> bytes:
    """The HMAC key for caller ids: derived from TRANSCRIPT_KEY, else random for this process."""
    key = settings.transcript_key_bytes()
    if key is None:
        return _PROCESS_SECRET
    # A key of its own (not TRANSCRIPT_KEY, nor the consent table's): one secret, several uses.
    return hmac.new(key, _KEY_CONTEXT, hashlib.sha256).digest()


def continuity_key(caller: str | None, secret: bytes) -> str | None:
    """The store key for a caller id, or None for a withheld or anonymous number."""
    number = identifiable_caller(caller)
    return None if number is None else caller_key(number, secret)


@runtime_checkable
class ContinuityStore(Protocol):
    """Where resumable conversations (opaque bytes) and the live-call leases are kept."""

    async def start(self) -> None:
        """Connect; a no-op for stores with nothing to connect to."""

    async def close(self) -> None:
        """Release connections."""

    async def claim(self, key: str, call_id: str, lease_s: float) -> bool:
        """Take the caller's lease for ``call_id`` unless another call holds it."""

    async def renew(self, key: str, call_id: str, lease_s: float) -> bool:
        """Extend the lease; False when ``call_id`` no longer holds it."""

    async def release(self, key: str, call_id: str) -> None:
        """Give the lease up if ``call_id`` holds it."""

    async def get(self, key: str) -> bytes | None:
        """The saved conversation, or None (never saved, forgotten or expired)."""

    async def put(self, key: str, data: bytes, ttl_s: float) -> None:
        """Save (replace) the conversation, expiring ``ttl_s`` from now."""

    async def forget(self, key: str) -> None:
        """Delete the saved conversation (the lease stays)."""


class MemoryContinuityStore:
    """Conversations and leases in dicts: continuity within one worker (the default)."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._data: dict[str, tuple[bytes, float]] = {}
        self._leases: dict[str, tuple[str, float]] = {}

    async def start(self) -> None:
        """Nothing to connect to."""

    async def close(self) -> None:
        """Nothing to release."""

    def _holder(self, key: str) -> str | None:
        lease = self._leases.get(key)
        if lease is None or lease[1] <= self._clock():
            self._leases.pop(key, None)
            return None
        return lease[0]

    async def claim(self, key: str, call_id: str, lease_s: float) -> bool:
        holder = self._holder(key)
        if holder is not None and holder != call_id:
            return False
        self._leases[key] = (call_id, self._clock() + lease_s)
        return True

    async def renew(self, key: str, call_id: str, lease_s: float) -> bool:
        if self._holder(key) != call_id:
            return False
        self._leases[key] = (call_id, self._clock() + lease_s)
        return True

    async def release(self, key: str, call_id: str) -> None:
        if self._holder(key) == call_id:
            del self._leases[key]

    async def get(self, key: str) -> bytes | None:
        found = self._data.get(key)
        if found is None:
            return None
        if found[1] <= self._clock():
            del self._data[key]
            return None
        return found[0]

    async def put(self, key: str, data: bytes, ttl_s: float) -> None:
        now = self._clock()
        # Expiry is otherwise lazy: drop what nobody called back for.
        for stale in [k for k, (_, at) in self._data.items() if at <= now]:
            del self._data[stale]
        self._data[key] = (data, now + ttl_s)

    async def forget(self, key: str) -> None:
        self._data.pop(key, None)


class CallerContinuity:
    """One call's handle on its caller's resumable conversation.

    ``begin()`` takes the caller's lease and loads what is there; only a call that holds the
    lease (``owner``) saves or forgets. Store failures are logged and never raised: without
    continuity the call simply starts fresh.
    """

    def __init__(
        self,
        store: ContinuityStore | None,
        key: str | None,
        call_id: str,
        *,
        ttl_s: float,
        lease_s: float = 60.0,
        cipher: TranscriptCipher | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.key = key
        self.call_id = call_id
        self.ttl_s = ttl_s
        self.lease_s = lease_s
        self.cipher = cipher
        self._clock = clock
        self.owner = False
        # Why this call does not continue (None when it did): logged, and for tests.
        self.fresh_reason: str | None = None

    @classmethod
    def for_call(
        cls,
        settings: VoxpipeSettings,
        store: ContinuityStore | None,
        caller: str | None,
        call_id: str,
        *,
        clock: Callable[[], float] = time.time,
    ) -> CallerContinuity:
        """The handle for a call from ``caller`` with CALLBACK_CONTINUITY and SESSION_TTL_S."""
        from voxpipe.state import make_transcript_cipher

        on = settings.callback_continuity == "on"
        return cls(
            store if on else None,
            continuity_key(caller, continuity_secret(settings)) if on else None,
            call_id,
            ttl_s=float(settings.session_ttl_s),
            lease_s=settings.heartbeat_timeout_s,
            cipher=make_transcript_cipher(settings),
            clock=clock,
        )

    @property
    def enabled(self) -> bool:
        """True when this call may continue a conversation and save its own."""
        return self.store is not None and self.key is not None

    async def begin(self) -> ResumableConversation | None:
        """Claim the caller's lease and return the conversation to continue, if any."""
        if self.store is None:
            self.fresh_reason = "continuity off"
            return None
        if self.key is None:
            self.fresh_reason = "caller id withheld"
            return None
        try:
            self.owner = await self.store.claim(self.key, self.call_id, self.lease_s)
            if not self.owner:
                self.fresh_reason = "another call from this caller id is live"
                logger.info("callback continuity: %s; this call starts fresh", self.fresh_reason)
                return None
            data = await self.store.get(self.key)
        except Exception as exc:
            self.fresh_reason = "store unavailable"
            logger.warning("callback continuity unavailable, the call starts fresh: %s", exc)
            return None
        if data is None:
            self.fresh_reason = "no earlier conversation"
            return None
        try:
            conversation = decode_conversation(data, self.key, self.cipher)
        except ContinuityFormatError as exc:
            self.fresh_reason = "unreadable earlier conversation"
            logger.warning("callback continuity: earlier conversation ignored: %s", exc)
            return None
        age = self._clock() - conversation.saved_at
        if age > self.ttl_s:
            # The store's own expiry normally removed it; the clock decides, not the store.
            self.fresh_reason = "earlier conversation older than SESSION_TTL_S"
            return None
        logger.info(
            "callback continuity: continuing call %s (%.0f s ago, %d message(s))",
            conversation.call_id,
            age,
            len(conversation.messages),
        )
        return conversation

    async def save(self, conversation: ResumableConversation) -> bool:
        """Save the conversation (owner only); True when written."""
        if not self.owner or self.store is None or self.key is None:
            return False
        try:
            data = encode_conversation(conversation, self.key, self.cipher)
            await self.store.put(self.key, data, self.ttl_s)
        except Exception as exc:
            logger.warning("callback continuity: saving the conversation failed: %s", exc)
            return False
        return True

    async def forget(self) -> None:
        """Delete the saved conversation (owner only): start over, or retention declined."""
        if not self.owner or self.store is None or self.key is None:
            return
        try:
            await self.store.forget(self.key)
        except Exception as exc:
            logger.warning("callback continuity: forgetting the conversation failed: %s", exc)

    async def renew(self) -> bool:
        """Keep the lease while the call lives; False if it was lost."""
        if not self.owner or self.store is None or self.key is None:
            return False
        try:
            held = await self.store.renew(self.key, self.call_id, self.lease_s)
        except Exception as exc:
            logger.warning("callback continuity: renewing the lease failed: %s", exc)
            return True  # unknown: keep going, the next renewal tells
        if not held:
            # Expired (the store was away longer than the lease): another call may own it now.
            logger.warning("callback continuity: lease lost; this call will not save")
            self.owner = False
        return held

    async def end(self) -> None:
        """Release the lease (the call is over)."""
        if not self.owner or self.store is None or self.key is None:
            return
        try:
            await self.store.release(self.key, self.call_id)
        except Exception as exc:
            logger.warning("callback continuity: releasing the lease failed: %s", exc)


def make_continuity_store(settings: VoxpipeSettings) -> ContinuityStore:
    """Redis when REDIS_URL is set (every worker), else memory (this worker only)."""
    if not settings.redis_url:
        return MemoryContinuityStore()
    from voxpipe.state.continuity_redis import RedisContinuityStore

    if settings.transcript_key_bytes() is None:
        logger.warning(
            "callback continuity: TRANSCRIPT_KEY is unset, so caller ids are keyed with a "
            "per-process secret and a callback continues only on the worker that took the call"
        )
    return RedisContinuityStore.from_url(
        settings.redis_url,
        socket_timeout_s=settings.redis_socket_timeout_s,
        key_prefix=settings.redis_key_prefix,
    )
