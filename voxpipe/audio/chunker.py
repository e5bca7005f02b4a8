"""Cut a byte stream of arbitrary-sized chunks into fixed-size frames."""

from __future__ import annotations

__all__ = ["Chunker", "frame_bytes"]


def frame_bytes(
    sample_rate: int, duration_ms: float = 20, sample_width: int = 2, channels: int = 1
) -> int:
    """Bytes in one frame of ``duration_ms`` (20 ms of 8 kHz PCM16 is 320; of mu-law, 160)."""
    samples = sample_rate * duration_ms / 1000
    if samples != int(samples):
        raise ValueError(
            f"{duration_ms} ms at {sample_rate} Hz is not a whole number of samples; "
            "pick a duration that divides evenly"
        )
    return int(samples) * sample_width * channels


class Chunker:
    """Buffers incoming bytes and hands out whole frames of ``frame_size`` bytes, in order.

    What does not fill a frame stays buffered for the next ``push``; ``flush`` returns it
    (padded with ``pad`` to a full frame if asked), so nothing is lost at the end of a stream.
    """

    def __init__(self, frame_size: int) -> None:
        if frame_size <= 0:
            raise ValueError(f"frame_size must be positive, got {frame_size}")
        self.frame_size = frame_size
        self._buf = bytearray()

    @property
    def pending(self) -> int:
        """Bytes buffered that do not yet fill a frame."""
        return len(self._buf)

    def push(self, data: bytes | bytearray | memoryview) -> list[bytes]:
        """Add bytes and return every frame that is now complete."""
        size = self.frame_size
        buf = self._buf
        if not buf and len(data) == size:
            # The common case on a steady wire: one chunk is exactly one frame.
            return [bytes(data)]
        buf += data
        n = len(buf) // size * size
        if not n:
            return []
        view = memoryview(buf)
        frames = [bytes(view[i : i + size]) for i in range(0, n, size)]
        view.release()
        del buf[:n]
        return frames

    def flush(self, pad: bytes | None = None) -> bytes:
        """Return the buffered remainder (padded to one frame with ``pad`` if given) and clear it."""
        rest = bytes(self._buf)
        self._buf.clear()
        if pad is not None and rest:
            missing = self.frame_size - len(rest)
            rest += (pad * (missing // len(pad) + 1))[:missing]
        return rest

    def clear(self) -> None:
        """Drop the buffered remainder."""
        self._buf.clear()
