"""Envelope encryption: chunked AES-256-GCM under data keys wrapped by a KEK."""

from __future__ import annotations

import os
import struct

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from voxpipe.records.envelope import (
    EnvelopeError,
    EnvelopeReader,
    EnvelopeWriter,
    KeyRing,
    chunk_offset,
    decrypt_stream,
    encrypt_stream,
    envelope_kek_id,
    header_length,
    open_sealed,
    rewrap,
    seal,
)
from voxpipe.state.crypto import TranscriptCipher
from voxpipe.state.errors import TranscriptKeyError

AAD = b"CA123\x00recording"


def chunks_of(blob: bytes, header_len: int) -> tuple[bytes, list[bytes]]:
    """(header, [length-prefixed chunks]) of a sealed stream."""
    header, rest, out = blob[:header_len], blob[header_len:], []
    while rest:
        (n,) = struct.unpack(">I", rest[:4])
        out.append(rest[: 4 + n])
        rest = rest[4 + n :]
    return header, out


def sealed_stream(ring: KeyRing, data: bytes, chunk: int = 100) -> tuple[bytes, int]:
    writer = EnvelopeWriter(ring, AAD, chunk_size=chunk)
    out = writer.header + writer.write(data) + writer.close()
    return out, len(writer.header)


def test_stream_round_trip_in_constant_size_chunks_fed_in_odd_pieces() -> None:
    ring = KeyRing(os.urandom(32))
    data = os.urandom(1000)
    blob, hlen = sealed_stream(ring, data)
    _header, chunks = chunks_of(blob, hlen)
    assert len(chunks) == 10  # 1000 bytes in chunks of 100
    assert data not in blob
    reader = EnvelopeReader(ring, AAD)
    got = b"".join(reader.feed(blob[i : i + 37]) for i in range(0, len(blob), 37))
    reader.close()
    assert got == data
    # The generator form agrees, and an empty stream is still a complete (final) stream.
    assert (
        b"".join(decrypt_stream(ring, encrypt_stream(ring, [data[:10], data[10:]], AAD), AAD))
        == data
    )
    assert open_sealed(ring, seal(ring, b"", AAD), AAD) == b""


@pytest.mark.parametrize("attack", ["truncate", "drop_middle", "reorder", "flip", "append"])
def test_truncated_altered_or_reordered_streams_fail(attack: str) -> None:
    ring = KeyRing(os.urandom(32))
    blob, hlen = sealed_stream(ring, os.urandom(450))
    header, chunks = chunks_of(blob, hlen)
    if attack == "truncate":
        bad = header + b"".join(chunks[:-1])  # every chunk but the final one: still valid
    elif attack == "drop_middle":
        bad = header + b"".join(chunks[:1] + chunks[2:])
    elif attack == "reorder":
        bad = header + b"".join([chunks[1], chunks[0], *chunks[2:]])
    elif attack == "flip":
        c = bytearray(chunks[2])
        c[10] ^= 1
        bad = header + b"".join([*chunks[:2], bytes(c), *chunks[3:]])
    else:
        bad = blob + chunks[0]
    with pytest.raises(EnvelopeError):
        b"".join(decrypt_stream(ring, [bad], AAD))


def test_wrong_kek_or_other_object_fails() -> None:
    ring = KeyRing(os.urandom(32))
    blob = seal(ring, b"secret words", AAD)
    with pytest.raises(EnvelopeError, match="KEK"):
        open_sealed(KeyRing(os.urandom(32)), blob, AAD)
    with pytest.raises(EnvelopeError):
        open_sealed(ring, blob, b"CA999\x00recording")  # pasted onto another call


def test_rewrap_changes_only_the_header_and_old_data_still_opens() -> None:
    old, new = os.urandom(32), os.urandom(32)
    blob, hlen = sealed_stream(KeyRing(old), os.urandom(777))
    rotated_ring = KeyRing(new, [old])
    moved = rewrap(rotated_ring, blob, AAD)
    assert moved is not None
    assert moved[hlen:] == blob[hlen:]  # the content is not re-encrypted
    assert envelope_kek_id(moved) == rotated_ring.key_id != envelope_kek_id(blob)
    assert rewrap(rotated_ring, moved, AAD) is None  # already under the current KEK
    # After rotation the old KEK can be retired: the new one alone opens it.
    assert open_sealed(KeyRing(new), moved, AAD) == open_sealed(KeyRing(old), blob, AAD)
    with pytest.raises(EnvelopeError):
        open_sealed(KeyRing(old), moved, AAD)


def test_transcript_cipher_writes_envelopes_and_still_reads_the_first_format() -> None:
    key = os.urandom(32)
    # A payload of the first format: version 1, nonce, AES-GCM directly under TRANSCRIPT_KEY.
    nonce = os.urandom(12)
    legacy = b"\x01" + nonce + AESGCM(key).encrypt(nonce, b"old turns", b"CA1")
    cipher = TranscriptCipher(key)
    assert cipher.open(legacy, "CA1") == b"old turns"
    sealed = cipher.seal(b"new turns", "CA1")
    assert sealed[:4] == b"VXE2"
    assert cipher.open(sealed, "CA1") == b"new turns"
    # A new KEK with TRANSCRIPT_KEY as a previous key opens both, and rewrap upgrades both.
    rotated = TranscriptCipher(os.urandom(32), (key,))
    for blob, text in ((legacy, b"old turns"), (sealed, b"new turns")):
        moved = rotated.rewrap(blob, "CA1")
        assert (
            moved is not None and TranscriptCipher(rotated.ring.current).open(moved, "CA1") == text
        )
    with pytest.raises(TranscriptKeyError, match="another key or altered"):
        TranscriptCipher(os.urandom(32)).open(sealed, "CA1")


def test_seeking_to_a_chunk_reads_from_there_and_a_wrong_index_fails() -> None:
    ring = KeyRing(os.urandom(32))
    data = os.urandom(1000)
    blob, _ = sealed_stream(ring, data, chunk=100)
    hlen = header_length(blob)
    reader = EnvelopeReader(ring, AAD)
    reader.seek(blob[:hlen], 7)
    assert reader.feed(blob[chunk_offset(hlen, 100, 7) :]) == data[700:]
    reader.close()  # read to the final chunk
    # Bytes of chunk 3 presented as chunk 7 do not open: positions are authenticated.
    liar = EnvelopeReader(ring, AAD)
    liar.seek(blob[:hlen], 7)
    with pytest.raises(EnvelopeError):
        liar.feed(blob[chunk_offset(hlen, 100, 3) : chunk_offset(hlen, 100, 4)])
