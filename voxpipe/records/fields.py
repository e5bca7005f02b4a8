"""Sealing a transcript's metadata: caller and called numbers, escalation reason, free text.

Text fields become ``vxenc:<base64 envelope>`` in their columns and the metadata object becomes
``{"vxenc": "<base64 envelope>"}``, each sealed under its own data key bound to the call id and
the field's name (a sealed caller number pasted into another row or field fails to open). The
caller's number is also kept as ``caller_hmac``, an HMAC-SHA256 under a key derived from the
KEK, so calls can be found by number without storing it readable.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import json
import re
from typing import TYPE_CHECKING, Any

from voxpipe.state.transcripts import Transcript

if TYPE_CHECKING:
    from voxpipe.state.crypto import TranscriptCipher

__all__ = ["RecordSealer", "mask_number", "normalise_number"]

_PREFIX = "vxenc:"
_META_KEY = "vxenc"
_SEPARATORS = re.compile(r"[\s().\-]")
_LOOKUP_CONTEXT = b"voxpipe records caller lookup v1"


def normalise_number(number: str) -> str:
    """``+44 7700-900123`` -> ``+447700900123`` (what the look-up hash is taken of)."""
    return _SEPARATORS.sub("", number.strip())


def mask_number(number: str | None) -> str | None:
    """All but the last 4 digits hidden: ``+447700900123`` -> ``*********0123``."""
    if number is None:
        return None
    n = normalise_number(number)
    return "*" * max(0, len(n) - 4) + n[-4:]


class RecordSealer:
    """Seals and opens a transcript's metadata fields with the transcript cipher (if any)."""

    def __init__(self, cipher: TranscriptCipher | None) -> None:
        self.cipher = cipher
        self._lookup = (
            hmac.new(cipher.ring.current, _LOOKUP_CONTEXT, hashlib.sha256).digest()
            if cipher is not None
            else None
        )

    def caller_hash(self, number: str | None) -> str | None:
        """Keyed hash of a number for look-ups (unkeyed SHA-256 when no KEK is set)."""
        if not number:
            return None
        n = normalise_number(number).encode()
        if self._lookup is None:
            return hashlib.sha256(_LOOKUP_CONTEXT + b":" + n).hexdigest()
        return hmac.new(self._lookup, n, hashlib.sha256).hexdigest()

    def seal_text(self, value: str | None, call_id: str, field: str) -> str | None:
        if value is None or self.cipher is None or value.startswith(_PREFIX):
            return value
        sealed = self.cipher.seal(value.encode(), call_id, field)
        return _PREFIX + base64.b64encode(sealed).decode()

    def open_text(self, value: str | None, call_id: str, field: str) -> str | None:
        """The clear value; raises TranscriptKeyError when sealed and no key opens it."""
        if value is None or not value.startswith(_PREFIX):
            return value
        from voxpipe.state.errors import TranscriptKeyError

        if self.cipher is None:
            raise TranscriptKeyError(f"call {call_id}: {field} is encrypted and no KEK is set")
        return self.cipher.open(base64.b64decode(value[len(_PREFIX) :]), call_id, field).decode()

    def seal_meta(self, meta: dict[str, Any], call_id: str) -> dict[str, Any]:
        if self.cipher is None or not meta or set(meta) == {_META_KEY}:
            return meta
        plain = json.dumps(meta, separators=(",", ":"), default=str)
        sealed = self.cipher.seal(plain.encode(), call_id, "metadata")
        return {_META_KEY: base64.b64encode(sealed).decode()}

    def open_meta(self, meta: dict[str, Any], call_id: str) -> dict[str, Any]:
        if set(meta) != {_META_KEY}:
            return meta
        from voxpipe.state.errors import TranscriptKeyError

        if self.cipher is None:
            raise TranscriptKeyError(f"call {call_id}: metadata is encrypted and no KEK is set")
        data = self.cipher.open(base64.b64decode(meta[_META_KEY]), call_id, "metadata")
        opened: dict[str, Any] = json.loads(data)
        return opened

    def seal_transcript(self, t: Transcript) -> Transcript:
        """A copy with every metadata field sealed and ``caller_hmac`` set."""
        cid = t.call_id
        caller = self.open_text(t.caller, cid, "caller")
        return dataclasses.replace(
            t,
            caller=self.seal_text(t.caller, cid, "caller"),
            called=self.seal_text(t.called, cid, "called"),
            escalation_reason=self.seal_text(t.escalation_reason, cid, "escalation_reason"),
            metadata=self.seal_meta(dict(t.metadata), cid),
            caller_hmac=t.caller_hmac or self.caller_hash(caller),
        )

    def open_transcript(self, t: Transcript) -> Transcript:
        """Inverse of ``seal_transcript``."""
        cid = t.call_id
        return dataclasses.replace(
            t,
            caller=self.open_text(t.caller, cid, "caller"),
            called=self.open_text(t.called, cid, "called"),
            escalation_reason=self.open_text(t.escalation_reason, cid, "escalation_reason"),
            metadata=self.open_meta(dict(t.metadata), cid),
        )

    def rewrap_text(self, value: str | None, call_id: str, field: str) -> str | None:
        """The sealed value re-wrapped under the current KEK; None when unchanged."""
        if value is None or not value.startswith(_PREFIX) or self.cipher is None:
            return None
        new = self.cipher.rewrap(base64.b64decode(value[len(_PREFIX) :]), call_id, field)
        return None if new is None else _PREFIX + base64.b64encode(new).decode()

    def rewrap_meta(self, meta: dict[str, Any], call_id: str) -> dict[str, Any] | None:
        if set(meta) != {_META_KEY} or self.cipher is None:
            return None
        new = self.cipher.rewrap(base64.b64decode(meta[_META_KEY]), call_id, "metadata")
        return None if new is None else {_META_KEY: base64.b64encode(new).decode()}
