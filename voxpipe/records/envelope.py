"""Envelope encryption: AES-256-GCM data keys wrapped by a key-encryption key (KEK).

Every sealed object (a transcript field, later a recording) gets a fresh random 256-bit data
key. The data key is stored next to the content, wrapped (AES-256-GCM) by the KEK and bound to
the object's associated data (its call id and field), so rotating the KEK only rewrites the
small header (``rewrap``) and never the content.

Content is cut into chunks, each sealed with its own nonce = 7-byte random prefix ‖ 32-bit
sequence number ‖ final flag (the STREAM construction): a chunk that is altered, dropped,
reordered, or a stream cut before its final chunk, fails to open. ``EnvelopeWriter`` and
``EnvelopeReader`` stream it (constant memory, for recordings); ``seal``/``open_sealed`` do a
whole value at once.

Layout: ``VXE2`` ‖ KEK id (8) ‖ wrapped-key length (2) ‖ wrapped key ‖ nonce prefix (7) ‖ then
chunks of ``length (4) ‖ ciphertext+tag``.
"""

from __future__ import annotations

import hashlib
import os
import struct
from collections.abc import Iterable, Iterator, Sequence

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

__all__ = [
    "MAGIC",
    "EnvelopeError",
    "EnvelopeReader",
    "EnvelopeWriter",
    "KeyRing",
    "chunk_offset",
    "decrypt_stream",
    "encrypt_stream",
    "envelope_kek_id",
    "header_length",
    "is_envelope",
    "kek_fingerprint",
    "open_sealed",
    "rewrap",
    "seal",
]

MAGIC = b"VXE2"
DEFAULT_CHUNK = 64 * 1024
_PREFIX = 7
_TAG = 16
_KEK_ID = 8
_MAX_CHUNK = 16 * 1024 * 1024


class EnvelopeError(ValueError):
    """A sealed object that cannot be opened: wrong key, altered, truncated or not sealed."""


def kek_fingerprint(kek: bytes) -> bytes:
    """8 public bytes naming a KEK (stored in each header to find the key that unwraps it)."""
    return hashlib.sha256(b"voxpipe-records-kek:" + kek).digest()[:_KEK_ID]


class KeyRing:
    """The current KEK (wraps new data keys) and previous ones (still unwrap old headers)."""

    def __init__(self, current: bytes, previous: Sequence[bytes] = ()) -> None:
        for key in (current, *previous):
            if len(key) != 32:
                raise ValueError(f"a KEK is 32 bytes (AES-256), got {len(key)}")
        self.current = current
        self.current_id = kek_fingerprint(current)
        self._keys = {kek_fingerprint(k): k for k in (*previous, current)}

    @property
    def key_id(self) -> str:
        """Hex id of the current KEK (safe to log and store)."""
        return self.current_id.hex()

    def keys(self) -> list[bytes]:
        """Every KEK, current first."""
        return [self.current] + [k for i, k in self._keys.items() if i != self.current_id]

    def wrap(self, data_key: bytes, aad: bytes) -> bytes:
        """nonce ‖ AES-GCM(KEK, data key), bound to ``aad``."""
        nonce = os.urandom(12)
        return nonce + AESGCM(self.current).encrypt(nonce, data_key, b"voxpipe-dek:" + aad)

    def unwrap(self, kek_id: bytes, wrapped: bytes, aad: bytes) -> bytes:
        """The data key; EnvelopeError when no KEK of the ring matches or it was altered."""
        kek = self._keys.get(kek_id)
        if kek is None:
            raise EnvelopeError(
                f"sealed under KEK {kek_id.hex()}, which is neither RECORDS_KEK "
                f"({self.key_id}) nor a previous key given in RECORDS_KEK_PREVIOUS"
            )
        try:
            return AESGCM(kek).decrypt(wrapped[:12], wrapped[12:], b"voxpipe-dek:" + aad)
        except InvalidTag as exc:
            raise EnvelopeError("the wrapped data key was altered or moved") from exc


def is_envelope(blob: bytes) -> bool:
    """True if ``blob`` starts like an envelope."""
    return blob[:4] == MAGIC


def _parse_header(blob: bytes) -> tuple[bytes, bytes, bytes, int]:
    """(kek_id, wrapped key, nonce prefix, header length)."""
    if not is_envelope(blob) or len(blob) < 4 + _KEK_ID + 2:
        raise EnvelopeError("not a voxpipe envelope")
    kek_id = blob[4 : 4 + _KEK_ID]
    (wlen,) = struct.unpack(">H", blob[4 + _KEK_ID : 6 + _KEK_ID])
    start = 6 + _KEK_ID
    end = start + wlen + _PREFIX
    if len(blob) < end:
        raise EnvelopeError("envelope header truncated")
    return kek_id, blob[start : start + wlen], blob[start + wlen : end], end


def envelope_kek_id(blob: bytes) -> str:
    """Hex id of the KEK that wraps this envelope's data key."""
    return _parse_header(blob)[0].hex()


def _nonce(prefix: bytes, seq: int, final: bool) -> bytes:
    if seq >= 2**32:
        raise EnvelopeError("too many chunks in one envelope")
    return prefix + struct.pack(">IB", seq, 1 if final else 0)


class EnvelopeWriter:
    """Seals a stream chunk by chunk: ``header`` first, then ``write`` output, then ``close``.

    Memory is one chunk, whatever the stream's length.
    """

    def __init__(self, ring: KeyRing, aad: bytes, *, chunk_size: int = DEFAULT_CHUNK) -> None:
        if not 0 < chunk_size <= _MAX_CHUNK:
            raise ValueError("chunk_size must be between 1 byte and 16 MiB")
        data_key = AESGCM.generate_key(bit_length=256)
        self._aead = AESGCM(data_key)
        self._aad = aad
        self._prefix = os.urandom(_PREFIX)
        self._seq = 0
        self._buf = bytearray()
        self._closed = False
        self.chunk_size = chunk_size
        wrapped = ring.wrap(data_key, aad)
        self.header = (
            MAGIC + ring.current_id + struct.pack(">H", len(wrapped)) + wrapped + self._prefix
        )

    def _chunk(self, data: bytes, final: bool) -> bytes:
        nonce = _nonce(self._prefix, self._seq, final)
        self._seq += 1
        sealed = self._aead.encrypt(nonce, data, MAGIC + self._prefix + self._aad)
        return struct.pack(">I", len(sealed)) + sealed

    def write(self, data: bytes) -> bytes:
        """Buffer ``data``; return the sealed bytes of every chunk it completed."""
        if self._closed:
            raise EnvelopeError("envelope already closed")
        self._buf += data
        out = bytearray()
        # Keep at least one byte back: the final chunk is only known at close.
        while len(self._buf) > self.chunk_size:
            out += self._chunk(bytes(self._buf[: self.chunk_size]), False)
            del self._buf[: self.chunk_size]
        return bytes(out)

    def close(self) -> bytes:
        """The final chunk (possibly empty): without it a reader reports truncation."""
        if self._closed:
            raise EnvelopeError("envelope already closed")
        self._closed = True
        data, self._buf = bytes(self._buf), bytearray()
        return self._chunk(data, True)


def chunk_offset(header_len: int, chunk_size: int, index: int) -> int:
    """Byte offset of chunk ``index`` in an envelope written with ``chunk_size`` (every chunk
    but the last is full), for seeking (HTTP range requests on a recording)."""
    return header_len + index * (4 + chunk_size + _TAG)


def header_length(blob: bytes) -> int:
    """Length of the envelope header at the start of ``blob``."""
    return _parse_header(blob)[3]


class EnvelopeReader:
    """Opens a stream sealed by ``EnvelopeWriter``: ``feed`` bytes as they come, then ``close``.

    ``seek(header, index)`` prepares it to read from chunk ``index`` on (the bytes fed then
    start at ``chunk_offset(...)``); a range that stops before the end skips ``close``.
    """

    def __init__(self, ring: KeyRing, aad: bytes) -> None:
        self._ring = ring
        self._aad = aad
        self._buf = bytearray()
        self._aead: AESGCM | None = None
        self._prefix = b""
        self._seq = 0
        self._done = False

    @property
    def started(self) -> bool:
        """Whether the header was read and its data key opened."""
        return self._aead is not None

    def seek(self, header: bytes, index: int) -> None:
        """Read from chunk ``index``: ``header`` is the envelope's header (or its start)."""
        kek_id, wrapped, prefix, _end = _parse_header(header)
        self._aead = AESGCM(self._ring.unwrap(kek_id, wrapped, self._aad))
        self._prefix = prefix
        self._seq = index
        self._buf.clear()
        self._done = False

    def feed(self, data: bytes) -> bytes:
        """Plaintext of every chunk completed by ``data``; EnvelopeError on any tampering."""
        self._buf += data
        out = bytearray()
        if self._aead is None:
            try:
                kek_id, wrapped, prefix, end = _parse_header(bytes(self._buf[:2048]))
            except EnvelopeError:
                if len(self._buf) < 2048 and self._buf[:4] in (MAGIC[: len(self._buf)], MAGIC):
                    return b""  # header not complete yet
                raise
            self._aead = AESGCM(self._ring.unwrap(kek_id, wrapped, self._aad))
            self._prefix = prefix
            del self._buf[:end]
        while len(self._buf) >= 4:
            (size,) = struct.unpack(">I", self._buf[:4])
            if size < _TAG or size > _MAX_CHUNK + _TAG:
                raise EnvelopeError("corrupt chunk length")
            if len(self._buf) < 4 + size:
                break
            if self._done:
                raise EnvelopeError("data after the final chunk")
            sealed = bytes(self._buf[4 : 4 + size])
            del self._buf[: 4 + size]
            out += self._open_chunk(sealed)
        return bytes(out)

    def _open_chunk(self, sealed: bytes) -> bytes:
        assert self._aead is not None
        aad = MAGIC + self._prefix + self._aad
        for final in (False, True):
            try:
                plain = self._aead.decrypt(_nonce(self._prefix, self._seq, final), sealed, aad)
            except InvalidTag:
                continue
            self._seq += 1
            self._done = final
            return plain
        raise EnvelopeError(f"chunk {self._seq} was altered, reordered or sealed elsewhere")

    def close(self) -> None:
        """Raise EnvelopeError unless the final chunk was read (the object is complete)."""
        if self._buf:
            raise EnvelopeError("trailing bytes after the last complete chunk")
        if not self._done:
            raise EnvelopeError("truncated: the final chunk is missing")


def encrypt_stream(
    ring: KeyRing, chunks: Iterable[bytes], aad: bytes, *, chunk_size: int = DEFAULT_CHUNK
) -> Iterator[bytes]:
    """Sealed bytes of ``chunks`` (header first), as they can be written."""
    writer = EnvelopeWriter(ring, aad, chunk_size=chunk_size)
    yield writer.header
    for data in chunks:
        sealed = writer.write(data)
        if sealed:
            yield sealed
    yield writer.close()


def decrypt_stream(ring: KeyRing, chunks: Iterable[bytes], aad: bytes) -> Iterator[bytes]:
    """Plaintext of a sealed stream; raises EnvelopeError at the first bad or missing chunk."""
    reader = EnvelopeReader(ring, aad)
    for data in chunks:
        plain = reader.feed(data)
        if plain:
            yield plain
    reader.close()


def seal(ring: KeyRing, data: bytes, aad: bytes) -> bytes:
    """A whole value sealed under a fresh data key."""
    return b"".join(encrypt_stream(ring, [data], aad, chunk_size=max(1, len(data))))


def open_sealed(ring: KeyRing, blob: bytes, aad: bytes) -> bytes:
    """Inverse of ``seal`` (and of any complete stream)."""
    return b"".join(decrypt_stream(ring, [blob], aad))


def rewrap(ring: KeyRing, blob: bytes, aad: bytes) -> bytes | None:
    """``blob`` with its data key re-wrapped by the current KEK; None if it already is.

    Only the header changes: the content chunks are copied byte for byte.
    """
    kek_id, wrapped, prefix, end = _parse_header(blob)
    if kek_id == ring.current_id:
        return None
    data_key = ring.unwrap(kek_id, wrapped, aad)
    new = ring.wrap(data_key, aad)
    return MAGIC + ring.current_id + struct.pack(">H", len(new)) + new + prefix + blob[end:]
