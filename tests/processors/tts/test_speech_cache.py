"""Pre-rendered lines are converted to the wire's format."""

from __future__ import annotations

import math
import struct

from voxpipe.audio import mulaw_to_pcm16
from voxpipe.processors.tts.cache import CachedSpeech, to_wire_format
from voxpipe.processors.tts.words import TimedWord


def _tone(rate: int, seconds: float) -> bytes:
    n = int(rate * seconds)
    return struct.pack(f"<{n}h", *(int(8000 * math.sin(i * 0.1)) for i in range(n)))


def test_linear_speech_becomes_mulaw_at_the_wire_rate() -> None:
    words = (TimedWord("hello", 0.0, 0.4),)
    speech = CachedSpeech(_tone(16000, 0.5), 16000, "pcm16", words)
    wire = to_wire_format(speech, "mulaw", 8000)
    assert (wire.encoding, wire.sample_rate) == ("mulaw", 8000)
    assert abs(wire.duration - 0.5) < 0.01
    assert wire.words == words
    # Decoded, the tone is still there (not silence, not noise of the wrong width).
    pcm = mulaw_to_pcm16(wire.audio)
    peak = max(abs(s) for (s,) in struct.iter_unpack("<h", pcm))
    assert 6000 < peak < 10000


def test_speech_already_in_the_wire_format_is_unchanged() -> None:
    speech = CachedSpeech(b"\xff" * 800, 8000, "mulaw", ())
    assert to_wire_format(speech, "mulaw", 8000) is speech
    # Compressed audio of another format is left for the caller to reject.
    assert to_wire_format(speech, "pcm16", 16000) is speech
