"""TranscriptCipher: AES-256-GCM with the call id bound in."""

from __future__ import annotations

import os

import pytest

from voxpipe.state.crypto import TranscriptCipher
from voxpipe.state.errors import TranscriptKeyError


def test_seal_and_open_round_trip_with_fresh_nonces() -> None:
    cipher = TranscriptCipher(os.urandom(32))
    a = cipher.seal(b"hello caller", "CA1")
    b = cipher.seal(b"hello caller", "CA1")
    assert a != b  # a random nonce per seal: equal texts do not look equal at rest
    assert b"hello" not in a
    assert cipher.open(a, "CA1") == cipher.open(b, "CA1") == b"hello caller"


def test_wrong_call_id_wrong_key_or_tampering_fail_loudly() -> None:
    key = os.urandom(32)
    cipher = TranscriptCipher(key)
    sealed = cipher.seal(b"text", "CA1")
    with pytest.raises(TranscriptKeyError, match="another key or altered"):
        cipher.open(sealed, "CA2")  # moved onto another call's row
    with pytest.raises(TranscriptKeyError, match="another key"):
        TranscriptCipher(os.urandom(32)).open(sealed, "CA1")
    tampered = sealed[:-1] + bytes([sealed[-1] ^ 1])
    with pytest.raises(TranscriptKeyError):
        cipher.open(tampered, "CA1")
    with pytest.raises(TranscriptKeyError, match="not a voxpipe-sealed"):
        cipher.open(b"plain", "CA1")
    assert TranscriptCipher(key).key_id == cipher.key_id != TranscriptCipher(os.urandom(32)).key_id


def test_key_must_be_256_bits() -> None:
    with pytest.raises(ValueError, match="32-byte"):
        TranscriptCipher(b"too short")
