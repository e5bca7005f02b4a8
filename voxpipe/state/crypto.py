"""AES-256-GCM for transcripts at rest."""

from __future__ import annotations

import hashlib
import os

try:
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "voxpipe.state.crypto needs the 'crypto' extra: pip install 'voxpipe[crypto]'"
    ) from exc

from voxpipe.state.errors import TranscriptKeyError

_VERSION = b"\x01"
_NONCE_BYTES = 12


class TranscriptCipher:
    """Seals bytes with AES-256-GCM under one key; the call id is bound in as associated data.

    Binding the call id means a ciphertext copied onto another call's row fails to open
    instead of silently showing the wrong conversation.
    """

    def __init__(self, key: bytes) -> None:
        if len(key) != 32:
            raise ValueError(f"AES-256 needs a 32-byte key, got {len(key)} bytes")
        self._aead = AESGCM(key)
        # A short public fingerprint stored next to each row, so a key mix-up is diagnosable.
        self.key_id = hashlib.sha256(b"voxpipe-transcript-key:" + key).hexdigest()[:16]

    def seal(self, plaintext: bytes, call_id: str) -> bytes:
        """version byte + random 96-bit nonce + ciphertext-and-tag."""
        nonce = os.urandom(_NONCE_BYTES)
        return _VERSION + nonce + self._aead.encrypt(nonce, plaintext, call_id.encode())

    def open(self, sealed: bytes, call_id: str) -> bytes:
        """Inverse of `seal`; raises TranscriptKeyError if the key or call id does not match."""
        if len(sealed) < 1 + _NONCE_BYTES + 16 or sealed[:1] != _VERSION:
            raise TranscriptKeyError(f"transcript {call_id}: not a voxpipe-sealed payload")
        nonce = sealed[1 : 1 + _NONCE_BYTES]
        try:
            return self._aead.decrypt(nonce, sealed[1 + _NONCE_BYTES :], call_id.encode())
        except InvalidTag as exc:
            raise TranscriptKeyError(
                f"transcript {call_id} cannot be decrypted with this TRANSCRIPT_KEY "
                f"(key id {self.key_id}): it was written under another key or altered."
            ) from exc
