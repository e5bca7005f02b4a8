"""Offline-TTS speech for test callers, the same every run: made in a fresh process.

espeak-ng keeps state inside the library from one synthesis to the next (the same text comes
out a few samples different after others, and the library offers no reset), so speech made in a
test process would depend on what that process said before: a recogniser hears "uh huh" in one
order of tests and misses it in another. A fresh interpreter starts from the same state every
time; one process makes all the lines of a call, in order.

Run as a module it reads ``{"voice", "rate_wpm", "texts"}`` as JSON on stdin and writes, per
text, a little-endian 4-byte sample rate, a 4-byte length and the PCM16.
"""

from __future__ import annotations

import json
import subprocess
import sys

__all__ = ["speak_fresh"]


def speak_fresh(
    texts: list[str], voice: str = "en-us", rate_wpm: int = 150
) -> list[tuple[bytes, int]]:
    """``(pcm16, sample_rate)`` for each text, synthesized by espeak-ng in a fresh process."""
    request = json.dumps({"voice": voice, "rate_wpm": rate_wpm, "texts": texts}).encode()
    done = subprocess.run(
        [sys.executable, "-m", "voxpipe.testing.fresh_speech"],
        input=request,
        capture_output=True,
        timeout=120,
    )
    if done.returncode != 0:
        why = done.stderr.decode(errors="replace").strip().splitlines()
        raise RuntimeError(f"espeak-ng failed: {why[-1] if why else done.returncode}")
    out, pos, result = done.stdout, 0, []
    for _ in texts:
        rate = int.from_bytes(out[pos : pos + 4], "little")
        size = int.from_bytes(out[pos + 4 : pos + 8], "little")
        result.append((out[pos + 8 : pos + 8 + size], rate))
        pos += 8 + size
    return result


def _main() -> None:
    from voxpipe.processors.tts.espeak import EspeakEngine

    request = json.loads(sys.stdin.buffer.read())
    engine = EspeakEngine.get()
    for text in request["texts"]:
        try:
            syn = engine.synthesize(text, request["voice"], int(request["rate_wpm"]), None)
        except ValueError as exc:  # an unknown voice: the caller gets the library's words
            print(exc, file=sys.stderr)
            raise SystemExit(2) from None
        sys.stdout.buffer.write(
            syn.sample_rate.to_bytes(4, "little") + len(syn.pcm).to_bytes(4, "little") + syn.pcm
        )
    sys.stdout.buffer.flush()


if __name__ == "__main__":
    _main()
