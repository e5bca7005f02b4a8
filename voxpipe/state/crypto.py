"""AES-256-GCM for transcripts at rest: envelope encryption under a key-encryption key.

New payloads are envelopes (``voxpipe.records.envelope``): a fresh data key per sealed value,
wrapped by the KEK (``RECORDS_KEK``, or ``TRANSCRIPT_KEY`` as before). Payloads of the first
format (version byte 1, sealed directly under ``TRANSCRIPT_KEY``) still open.
"""

from __future__ import annotations

import hashlib

try:
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "voxpipe.state.crypto needs the 'crypto' extra: pip install 'voxpipe[crypto]'"
    ) from exc

from voxpipe.records.envelope import EnvelopeError, KeyRing, is_envelope, open_sealed, rewrap, seal
from voxpipe.state.errors import TranscriptKeyError

_VERSION = b"\x01"
_NONCE_BYTES = 12


class TranscriptCipher:
    """Seals bytes under a fresh data key wrapped by the KEK; the call id is bound in.

    Binding the call id means a ciphertext copied onto another call's row fails to open
    instead of silently showing the wrong conversation. ``previous`` KEKs still open what they
    sealed (until ``voxpipe records rotate-key`` re-wraps it under ``key``).
    """

    def __init__(self, key: bytes, previous: tuple[bytes, ...] = ()) -> None:
        if len(key) != 32:
            raise ValueError(f"AES-256 needs a 32-byte key, got {len(key)} bytes")
        self.ring = KeyRing(key, previous)
        # A short public fingerprint stored next to each row, so a key mix-up is diagnosable.
        self.key_id = hashlib.sha256(b"voxpipe-transcript-key:" + key).hexdigest()[:16]

    def seal(self, plaintext: bytes, call_id: str, field: str = "") -> bytes:
        """An envelope of ``plaintext`` bound to the call id (and ``field``, for metadata)."""
        return seal(self.ring, plaintext, _aad(call_id, field))

    def open(self, sealed: bytes, call_id: str, field: str = "") -> bytes:
        """Inverse of `seal`; raises TranscriptKeyError if no key or the call id matches."""
        if is_envelope(sealed):
            try:
                return open_sealed(self.ring, sealed, _aad(call_id, field))
            except EnvelopeError as exc:
                raise TranscriptKeyError(
                    f"transcript {call_id} cannot be decrypted with this key (key id "
                    f"{self.key_id}): it was written under another key or altered ({exc})."
                ) from exc
        if len(sealed) < 1 + _NONCE_BYTES + 16 or sealed[:1] != _VERSION:
            raise TranscriptKeyError(f"transcript {call_id}: not a voxpipe-sealed payload")
        # The first format: sealed directly under TRANSCRIPT_KEY (no data key).
        nonce = sealed[1 : 1 + _NONCE_BYTES]
        for key in self.ring.keys():
            try:
                return AESGCM(key).decrypt(nonce, sealed[1 + _NONCE_BYTES :], call_id.encode())
            except InvalidTag:
                continue
        raise TranscriptKeyError(
            f"transcript {call_id} cannot be decrypted with this TRANSCRIPT_KEY "
            f"(key id {self.key_id}): it was written under another key or altered."
        )

    def rewrap(self, sealed: bytes, call_id: str, field: str = "") -> bytes | None:
        """``sealed`` with its data key wrapped by the current KEK; None when nothing changes.

        A first-format payload (no data key) is moved into an envelope: that one-time upgrade
        decrypts and re-encrypts it.
        """
        if is_envelope(sealed):
            try:
                return rewrap(self.ring, sealed, _aad(call_id, field))
            except EnvelopeError as exc:
                raise TranscriptKeyError(f"transcript {call_id}: {exc}") from exc
        return self.seal(self.open(sealed, call_id, field), call_id, field)


def _aad(call_id: str, field: str) -> bytes:
    # Turns keep the bare call id as associated data; other fields name themselves too.
    return call_id.encode() if not field else f"{call_id}\x00{field}".encode()
