"""A caller's side of a call as a WAV, spoken by the offline TTS (espeak-ng): test input for
``run_wav_call`` and ``voxpipe call --wav`` without recording anyone.

    wav = caller_wav(["what are your opening hours", ("i want to talk to a human", 8.0)],
                     tmp_path / "caller.wav")
    out = run_wav_call(load_bot("bots/my_bot.py"), wav, settings=settings)

espeak-ng's voice is clear enough for the offline recogniser (PocketSphinx) to hear the words
back, and the lines are spoken in a fresh process (``voxpipe.testing.fresh_speech``), so the
same lines give the same WAV whatever the test process said before: a whole call is
reproducible without a phone or a key.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path

from voxpipe.audio.resample import resample_pcm16
from voxpipe.audio.wav import write_wav

__all__ = ["CallerLine", "caller_wav"]

# A line the caller says, or (line, seconds of silence after it: room for the bot's reply).
CallerLine = str | tuple[str, float]


def caller_wav(
    lines: str | Sequence[CallerLine],
    path: str | Path | None = None,
    *,
    lead_s: float = 5.0,
    pause_s: float = 5.0,
    voice: str = "en-us",
    rate_wpm: int = 150,
    sample_rate: int = 16000,
) -> Path:
    """Write the caller's ``lines`` to a WAV and return its path.

    The caller is silent for ``lead_s`` first (the bot's greeting), then says each line
    followed by its pause (``pause_s`` unless the line gives its own). ``voice`` is an
    espeak-ng voice ("en-us", "de", "fr"...). Without ``path`` the file goes to the
    system's temporary directory.
    """
    from voxpipe.testing.fresh_speech import speak_fresh  # espeak-ng: the 'offline' extra

    items = [lines] if isinstance(lines, str) else list(lines)
    if not items:
        raise ValueError("caller_wav needs at least one line for the caller to say")
    if lead_s < 0 or pause_s < 0:
        raise ValueError("lead_s and pause_s are seconds of silence: they cannot be negative")
    said: list[tuple[str, float]] = []
    for item in items:
        text, pause = (item, pause_s) if isinstance(item, str) else item
        if not text.strip():
            raise ValueError(f"caller_wav: an empty line in {lines!r}")
        if pause < 0:
            raise ValueError(f"caller_wav: negative pause after {text!r}")
        said.append((text, pause))
    try:
        spoken = speak_fresh([text for text, _ in said], voice, rate_wpm)
    except RuntimeError as exc:
        raise ValueError(f"caller_wav: {exc}") from None
    pcm = bytearray(_silence(lead_s, sample_rate))
    for (_, pause), (audio, rate) in zip(said, spoken, strict=True):
        if rate != sample_rate:
            audio = resample_pcm16(audio, rate, sample_rate)
        pcm += audio + _silence(pause, sample_rate)
    if path is None:
        with tempfile.NamedTemporaryFile(prefix="caller-", suffix=".wav", delete=False) as f:
            path = f.name
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_wav(out, bytes(pcm), sample_rate)
    return out


def _silence(seconds: float, rate: int) -> bytes:
    return b"\x00\x00" * int(rate * seconds)
