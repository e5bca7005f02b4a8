"""Reading a stored recording back as a WAV: its length, any byte range, decrypted as it streams.

The stored object is a streaming WAV (lengths unknown when written), sealed in an envelope when
a KEK was set. Its plaintext length follows from the object's size (every envelope chunk but the
last is full, and the chunk size is the first chunk's length), so a reader serves a corrected
44-byte header and any byte range without reading the whole object: the range maps to envelope
chunks, which are fetched and opened from the right one (``EnvelopeReader.seek``).
"""

from __future__ import annotations

import struct
from collections.abc import AsyncIterator
from dataclasses import dataclass

from voxpipe.records.envelope import (
    EnvelopeError,
    EnvelopeReader,
    KeyRing,
    chunk_offset,
    header_length,
    is_envelope,
)
from voxpipe.records.recording import WAV_HEADER_LEN, recording_aad
from voxpipe.records.storage import RecordingStore

__all__ = ["RecordingObject", "open_recording", "parse_range"]

_TAG = 16
_WINDOW_CHUNKS = 8  # chunks fetched per object read while streaming (bounded memory)


@dataclass(slots=True)
class RecordingObject:
    """A stored recording's layout: WAV length, and where its envelope chunks are."""

    call_id: str
    size: int  # object size
    length: int  # WAV bytes (plaintext)
    sealed: bool
    header: bytes = b""  # envelope header
    chunk: int = 0  # plaintext bytes per envelope chunk
    sample_rate: int = 8000
    channels: int = 2


async def open_recording(store: RecordingStore, call_id: str) -> RecordingObject | None:
    """The layout of a call's stored recording; None when there is none."""
    size = await store.size(call_id)
    if size is None:
        return None
    head = await store.read_range(call_id, 0, min(size, 4096) - 1)
    if not is_envelope(head):
        fmt = head[20:36]
        rate, channels = _fmt(fmt)
        return RecordingObject(call_id, size, size, False, sample_rate=rate, channels=channels)
    hlen = header_length(head)
    if size < hlen + 4 + _TAG:
        raise EnvelopeError("recording object truncated")
    (first,) = struct.unpack(">I", head[hlen : hlen + 4])
    chunk = first - _TAG
    if hlen + 4 + first == size:  # one chunk only, the final one
        length = chunk
    else:
        body = size - hlen
        n = -(-body // (chunk + 4 + _TAG))
        length = body - n * (4 + _TAG)
    return RecordingObject(call_id, size, length, True, head[:hlen], chunk)


def _fmt(fmt: bytes) -> tuple[int, int]:
    if len(fmt) < 16:
        return 8000, 2
    _pcm, channels, rate = struct.unpack("<HHI", fmt[:8])
    return rate, channels


def wav_fixed_header(obj: RecordingObject, first_plain: bytes) -> bytes:
    """The object's own WAV header with its lengths filled in."""
    from voxpipe.records.recording import wav_header

    rate, channels = _fmt(first_plain[20:36])
    obj.sample_rate, obj.channels = rate, channels
    return wav_header(rate, max(0, obj.length - WAV_HEADER_LEN), channels)


def parse_range(header: str | None, length: int) -> tuple[int, int] | None:
    """(start, end inclusive) of a single ``bytes=`` range; None for the whole; ValueError if
    it cannot be satisfied (HTTP 416)."""
    if not header:
        return None
    unit, _, spec = header.partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        raise ValueError("only a single bytes= range is supported")
    first, _, last = spec.strip().partition("-")
    try:
        if first == "":
            n = int(last)
            if n <= 0:
                raise ValueError("empty suffix range")
            start, end = max(0, length - n), length - 1
        else:
            start = int(first)
            end = int(last) if last else length - 1
    except ValueError as exc:
        raise ValueError(f"bad range {header!r}") from exc
    end = min(end, length - 1)
    if start < 0 or start > end or start >= length:
        raise ValueError(f"range {header!r} outside 0-{length - 1}")
    return start, end


async def first_window(store: RecordingStore, obj: RecordingObject, ring: KeyRing | None) -> bytes:
    """The first plaintext bytes (at least the WAV header); EnvelopeError if they do not open."""
    if not obj.sealed:
        return await store.read_range(obj.call_id, 0, min(obj.size, 4096) - 1)
    if ring is None:
        raise EnvelopeError("the recording is sealed but no RECORDS_KEK is set")
    reader = EnvelopeReader(ring, recording_aad(obj.call_id))
    reader.seek(obj.header, 0)
    start = chunk_offset(len(obj.header), obj.chunk, 0)
    end = min(obj.size, chunk_offset(len(obj.header), obj.chunk, 1)) - 1
    return reader.feed(await store.read_range(obj.call_id, start, end))


async def stream_range(
    store: RecordingStore,
    obj: RecordingObject,
    ring: KeyRing | None,
    start: int,
    end: int,
    header: bytes,
) -> AsyncIterator[bytes]:
    """WAV bytes ``start``..``end`` (inclusive), the fixed ``header`` in place of the stored one.

    Raises EnvelopeError at the first chunk that does not open (altered, truncated).
    """
    pos = start
    while pos <= end:
        if not obj.sealed:
            stop = min(end, pos + 256 * 1024 - 1)
            data = await store.read_range(obj.call_id, pos, stop)
            plain_start = pos
        else:
            assert ring is not None
            first = pos // obj.chunk
            last = min(end // obj.chunk, first + _WINDOW_CHUNKS - 1)
            hlen = len(obj.header)
            a = chunk_offset(hlen, obj.chunk, first)
            b = min(obj.size, chunk_offset(hlen, obj.chunk, last + 1)) - 1
            reader = EnvelopeReader(ring, recording_aad(obj.call_id))
            reader.seek(obj.header, first)
            data = reader.feed(await store.read_range(obj.call_id, a, b))
            if b == obj.size - 1:
                reader.close()  # the object's end: its final chunk must be there
            plain_start = first * obj.chunk
            stop = min(end, plain_start + len(data) - 1)
            if not data:
                raise EnvelopeError("recording object truncated")
        piece = bytearray(data[pos - plain_start : stop - plain_start + 1])
        if pos < WAV_HEADER_LEN:
            n = min(WAV_HEADER_LEN, stop + 1) - pos
            piece[:n] = header[pos : pos + n]
        yield bytes(piece)
        pos = stop + 1
