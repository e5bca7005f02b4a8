"""The provider stand-ins of `voxpipe bench calls --bot`, in a process of their own.

``FakeDeepgram`` (hearing what each caller says, see ``DeepgramHearing``), ``FakeOpenAI`` and
``FakeElevenLabs`` on 127.0.0.1 with fixed latencies: the final transcript ``stt`` after the
client's ``Finalize`` (or after the endpointing silence), the first token ``llm`` after the
request (the rest of the reply right behind it), the first audio ``tts`` after a sentence.
Run apart from the server so their CPU is not counted as the server's, and reported apart::

    proc, urls = start_provider_fakes(ProviderLatency(stt=0.15, llm=0.2, tts=0.15))

The child prints one JSON line with the three base URLs once they listen, and ends when its
parent goes (its stdin closes) or on SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "API_KEY",
    "STAMP_KINDS",
    "QUESTIONS",
    "REPLY",
    "ProviderLatency",
    "provider_env",
    "start_provider_fakes",
]

ROOT = Path(__file__).resolve().parents[2]
API_KEY = "bench-key"
# What the fake STT transcribes, in turn, for each utterance a caller says (the callers speak
# the recording's first two utterances: these are their words).
QUESTIONS = ("Hello, I need some help with my order.", "The number is four five six.")
# Every streamed chat reply: a short first sentence (the TTS starts on it), then a longer one.
REPLY = "Let me check. Your order is out for delivery and arrives tomorrow."
SUMMARY = "The caller asked about an order."
MS_PER_CHAR = 60.0  # the fake TTS's speaking rate
# What the stand-ins stamp, in a turn's order (see voxpipe.bench.latency.STAGES).
STAMP_KINDS = (
    "finalize_received",  # Deepgram received Finalize (the client's VAD stopped)
    "final_sent",  # Deepgram sent a final transcript with words
    "llm_received",  # OpenAI received a streaming chat request
    "first_token_sent",  # OpenAI sent its first token
    "tts_text_received",  # ElevenLabs received text to speak
    "tts_audio_sent",  # ElevenLabs sent audio
)


@dataclass(slots=True, frozen=True)
class ProviderLatency:
    """Seconds each stand-in takes: STT final, LLM first token, TTS first audio."""

    stt: float = 0.15
    llm: float = 0.2
    tts: float = 0.15

    def as_ms(self) -> dict[str, float]:
        return {"stt": 1000 * self.stt, "llm": 1000 * self.llm, "tts": 1000 * self.tts}


def provider_env(urls: dict[str, str]) -> dict[str, str]:
    """The settings (environment) that point voxpipe's provider clients at the stand-ins."""
    return {
        "DEEPGRAM_API_KEY": API_KEY,
        "DEEPGRAM_BASE_URL": urls["deepgram"],
        "OPENAI_API_KEY": API_KEY,
        "OPENAI_BASE_URL": urls["openai"],
        "ELEVENLABS_API_KEY": API_KEY,
        "ELEVENLABS_BASE_URL": urls["elevenlabs"],
    }


def start_provider_fakes(
    latency: ProviderLatency,
    *,
    stamps: Path | None = None,
    log: Callable[[str], None] | None = None,
) -> tuple[subprocess.Popen[str], dict[str, str]]:
    """Start the stand-ins in a child process; return it and their base URLs.

    ``stamps``: a file the child writes, when it ends, with the ``time.perf_counter`` instants
    of what the stand-ins received and sent (``STAMP_KINDS``; one clock for every process of
    the machine): for a per-stage breakdown of one call's turns.
    """
    cmd = [
        sys.executable,
        "-m",
        "voxpipe.bench.provider_fakes",
        "--stt",
        str(latency.stt),
        "--llm",
        str(latency.llm),
        "--tts",
        str(latency.tts),
        *(["--stamps", str(stamps)] if stamps is not None else []),
    ]
    proc = subprocess.Popen(
        cmd,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=str(ROOT),
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    try:
        urls = {k: str(v) for k, v in json.loads(line).items()}
    except (ValueError, AttributeError):
        proc.kill()
        raise RuntimeError(f"the provider stand-ins did not start (said {line!r})") from None
    if log is not None:
        log(f"  provider stand-ins: pid {proc.pid}, {latency.as_ms()} ms")
    return proc, urls


def _reply(body: dict[str, Any]) -> str:
    return REPLY if body.get("stream") else SUMMARY


async def _serve(latency: ProviderLatency, with_stamps: bool) -> list[tuple[float, str]]:
    from voxpipe.bench.latency import _stamp_llm, _Stamps, _timed_fakes
    from voxpipe.testing.fakes import DeepgramHearing, FakeDeepgram, FakeElevenLabs, FakeOpenAI

    stamps = _Stamps()
    deepgram: type[FakeDeepgram] = FakeDeepgram
    elevenlabs: type[FakeElevenLabs] = FakeElevenLabs
    if with_stamps:
        deepgram, elevenlabs = _timed_fakes(stamps)
    loop = asyncio.get_running_loop()
    done = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, done.set)
    # The parent holds our stdin: it closing means the bench is gone.
    loop.add_reader(sys.stdin.fileno(), lambda: done.set() if not sys.stdin.read(1) else None)
    async with (
        deepgram(
            api_key=API_KEY, latency=latency.stt, hearing=DeepgramHearing(texts=list(QUESTIONS))
        ) as dg,
        FakeOpenAI(
            api_key=API_KEY, replies=_reply, first_token_delay=latency.llm, chunk_delay=0.0
        ) as oai,
        elevenlabs(api_key=API_KEY, ms_per_char=MS_PER_CHAR, first_audio_latency=latency.tts) as el,
    ):
        urls = {"deepgram": dg.url, "openai": oai.base_url, "elevenlabs": el.url}
        print(json.dumps(urls), flush=True)
        await done.wait()
        _stamp_llm(stamps, oai.requests)
    return stamps.items


def main() -> None:
    """The child process: serve the stand-ins until the parent goes."""
    parser = argparse.ArgumentParser(description="bench calls provider stand-ins (internal)")
    parser.add_argument("--stt", type=float, default=0.15)
    parser.add_argument("--llm", type=float, default=0.2)
    parser.add_argument("--tts", type=float, default=0.15)
    parser.add_argument("--stamps", default=None, help="write the stamps here at the end")
    args = parser.parse_args()
    import logging

    logging.basicConfig(level=logging.ERROR)
    latency = ProviderLatency(args.stt, args.llm, args.tts)
    try:
        import uvloop

        runner: Callable[[Any], list[tuple[float, str]]] = uvloop.run
    except ImportError:
        runner = asyncio.run
    items = runner(_serve(latency, bool(args.stamps)))
    if args.stamps:
        Path(args.stamps).write_text(json.dumps(items))


if __name__ == "__main__":
    main()
