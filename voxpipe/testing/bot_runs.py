"""Whole calls through a bot without a phone: from a WAV file, or replayed from a recording.

Both run on the virtual clock (a minute of call in a fraction of a second, deterministic)
and describe the call with ``CallSummarizer``: ``voxpipe call`` and ``voxpipe replay`` are
thin wrappers around ``run_wav_call`` and ``replay_recording``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from voxpipe.audio.convert import bytes_per_sample
from voxpipe.call import Bot, Call, build_task, call_locale
from voxpipe.config.settings import VoxpipeSettings
from voxpipe.pipelines.clock import VirtualClock
from voxpipe.processors.turn.params import transport_turn_kwargs
from voxpipe.testing.recording import RecordingError, read_recording, replay_frames
from voxpipe.testing.summary import CallSummarizer, audio_digest
from voxpipe.transports.memory import MemoryTransport
from voxpipe.transports.params import MEDIA_STREAM_CHUNK_MS, TransportParams
from voxpipe.transports.protocol import Transport
from voxpipe.transports.wav import WavFileTransport
from voxpipe.transports.wire import AudioFormat

__all__ = ["ReplayResult", "WavCallOutput", "replay_recording", "run_wav_call"]

SERIALIZED = ("twilio", "telnyx", "vonage")  # carriers served over media websockets

logger = logging.getLogger(__name__)

PHONE = AudioFormat("mulaw", 8000, 1)
Progress = Callable[[str], None]


def _stderr_progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


async def _locale_of(settings: VoxpipeSettings, carrier: str, meta: dict[str, Any]) -> Any:
    params = {str(k): str(v) for k, v in (meta.get("custom_parameters") or {}).items()}
    country = meta.get("country") or params.get("FromCountry") or None
    return await call_locale(
        settings,
        carrier=carrier,
        caller=str(meta.get("caller") or ""),
        country=country,
        custom_parameters=params,
    )


async def turn_kwargs_for(
    settings: VoxpipeSettings, carrier: str, meta: dict[str, Any]
) -> dict[str, Any]:
    """The transport's turn-taking for a simulated call, as a served one gets it: the settings,
    overridden by the turn columns of the locale row the call will be given."""
    return transport_turn_kwargs(settings, (await _locale_of(settings, carrier, meta)).row)


async def _make_call(
    transport: Transport,
    settings: VoxpipeSettings,
    fmt: AudioFormat,
    *,
    call_id: str,
    carrier: str,
    meta: dict[str, Any],
) -> Call:
    params = {str(k): str(v) for k, v in (meta.get("custom_parameters") or {}).items()}
    caller = str(meta.get("caller") or "")
    country = meta.get("country") or params.get("FromCountry") or None
    chosen = await call_locale(
        settings, carrier=carrier, caller=caller, country=country, custom_parameters=params
    )
    return Call(
        transport=transport,
        call_id=call_id,
        settings=settings,
        carrier=carrier,
        caller=caller,
        called=str(meta.get("called") or ""),
        country=country,
        custom_parameters=params,
        locale=str(meta.get("locale") or chosen.locale),
        locale_row=chosen.row,
        consent_policy=chosen.consent_policy,
        audio_in=fmt,
        audio_out=fmt,
        allow_interruptions=settings.allow_interruptions,
    )


async def _progress_ticker(clock: VirtualClock, total: float, report: Progress) -> None:
    step = 10.0
    while True:
        await clock.sleep(step)
        report(f"  ... {clock.now():.0f} s of call simulated (input {total:.0f} s)")


# ---------------------------------------------------------------------------- WAV call


@dataclass(slots=True)
class WavCallOutput:
    """What ``run_wav_call`` produced: the transcript document and where files went."""

    transcript: dict[str, Any]
    output_wav: Path | None
    transcript_path: Path | None


def run_wav_call(
    bot: Bot,
    caller_wav: str | Path,
    *,
    settings: VoxpipeSettings,
    output_wav: str | Path | None = None,
    transcript_path: str | Path | None = None,
    bot_name: str = "bot",
    wire: AudioFormat = PHONE,
    settle_secs: float = 2.0,
    max_tail_secs: float = 30.0,
    metadata: dict[str, Any] | None = None,
    progress: Progress | None = None,
) -> WavCallOutput:
    """Run one call from a caller WAV through ``bot`` on the virtual clock; write the results."""
    clock = VirtualClock()
    out_wav = Path(output_wav) if output_wav else None
    out_json = Path(transcript_path) if transcript_path else None
    doc, transport, end = clock.run(
        _wav_call(
            clock,
            bot,
            Path(caller_wav),
            settings=settings,
            output_wav=out_wav,
            bot_name=bot_name,
            wire=wire,
            settle_secs=settle_secs,
            max_tail_secs=max_tail_secs,
            metadata=metadata or {},
            progress=progress,
        )
    )
    if out_wav is not None:
        out_wav.parent.mkdir(parents=True, exist_ok=True)
        transport.write(out_wav, end)
    if out_json is not None:
        out_json.parent.mkdir(parents=True, exist_ok=True)
        out_json.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    return WavCallOutput(doc, out_wav, out_json)


async def _wav_call(
    clock: VirtualClock,
    bot: Bot,
    caller_wav: Path,
    *,
    settings: VoxpipeSettings,
    output_wav: Path | None,
    bot_name: str,
    wire: AudioFormat,
    settle_secs: float,
    max_tail_secs: float,
    metadata: dict[str, Any],
    progress: Progress | None,
) -> tuple[dict[str, Any], WavFileTransport, float]:
    params = TransportParams(
        audio_in=wire,
        audio_out=wire,
        allow_interruptions=settings.allow_interruptions,
        **await turn_kwargs_for(settings, "wav", {"caller": "wav", **metadata}),
    )
    transport = WavFileTransport(
        caller_wav, params, settle_secs=settle_secs, max_tail_secs=max_tail_secs
    )
    input_secs = len(transport._caller_wire) / (wire.sample_rate * bytes_per_sample(wire.encoding))
    call_id = str(metadata.get("call_id") or f"wav-{caller_wav.stem}")
    call = await _make_call(
        transport,
        settings,
        wire,
        call_id=call_id,
        carrier="wav",
        meta={"caller": "wav", **metadata},
    )
    task = build_task(call, await bot(call))
    summarizer = CallSummarizer(clock)
    summarizer.start(clock.now())
    task.add_observer(summarizer)
    ticker = None
    if progress is not None and input_secs > 20:
        ticker = asyncio.get_running_loop().create_task(
            _progress_ticker(clock, input_secs, progress)
        )
    try:
        await task.run()
    finally:
        if ticker is not None:
            ticker.cancel()
        # Bots share per-worker stores (database connections hold threads): this process's
        # only call is over, close them so it can exit.
        from voxpipe.state.shared import close_shared_stores

        await close_shared_stores()
    end = clock.now()
    sink = transport.memory_sink
    sent = b"".join(e.audio for e in sink.audio_events)
    rate = wire.sample_rate * bytes_per_sample(wire.encoding)
    doc: dict[str, Any] = {
        "bot": bot_name,
        "input": str(caller_wav),
        "output": str(output_wav) if output_wav else None,
        "call_id": call_id,
        "call_seconds": round(end - (transport.wav_input.started_at or 0.0), 3),
        "input_seconds": round(input_secs, 3),
        "bot_seconds": round(sink.played_seconds(until=end), 3),
        "end_reason": task.end_reason,
        "finished_by": transport.wav_input.finished_by,
        "audio": audio_digest(sent, rate),
        **summarizer.summary(),
    }
    return doc, transport, end


# ---------------------------------------------------------------------------- replay


@dataclass(slots=True)
class ReplayResult:
    """A replayed call: its summary (golden-file material) and the bot audio it sent."""

    summary: dict[str, Any]
    audio: bytes = field(repr=False)
    audio_format: AudioFormat = field(default_factory=AudioFormat)
    frames: int = 0


def replay_recording(
    recording: str | Path,
    bot: Bot,
    *,
    settings: VoxpipeSettings,
    progress: Progress | None = None,
    offline: bool = False,
) -> ReplayResult:
    """Feed a recorded call's frames to ``bot`` on the virtual clock and summarize what it did.

    The replayed call writes to scratch stores (a temporary directory), never to the
    configured ones under the recorded call's id. ``offline``: the recording's service lines
    stand in for the STT, LLM and TTS providers (no key, no network).
    """
    import tempfile

    from voxpipe.state import make_transcript_cipher
    from voxpipe.testing.scratch import scratch_settings

    # Read with the configured key (the recording was sealed with it) before scratching.
    cipher = make_transcript_cipher(settings)
    with tempfile.TemporaryDirectory(prefix="voxpipe-replay-") as scratch:
        call_settings = scratch_settings(settings, Path(scratch), offline=offline)
        clock = VirtualClock()
        return clock.run(
            _replay(
                clock,
                Path(recording),
                bot,
                settings=call_settings,
                progress=progress,
                offline=offline,
                cipher=cipher,
            )
        )


def recording_bot(recording: str | Path, settings: VoxpipeSettings | None = None) -> str | None:
    """The bot a recording was made with (from its header), if it says."""
    from voxpipe.state import make_transcript_cipher

    try:
        cipher = make_transcript_cipher(settings) if settings is not None else None
        rec = read_recording(recording, cipher=cipher)
    except (OSError, RecordingError):
        return None
    bot = (rec.header.get("metadata") or {}).get("bot")
    return str(bot) if bot else None


async def _replay(
    clock: VirtualClock,
    path: Path,
    bot: Bot,
    *,
    settings: VoxpipeSettings,
    progress: Progress | None,
    offline: bool,
    cipher: Any,
) -> ReplayResult:
    rec = read_recording(path, cipher=cipher)
    meta: dict[str, Any] = dict(rec.header.get("metadata") or {})
    fmt_meta = meta.get("audio_format") or {}
    fmt = AudioFormat(
        str(fmt_meta.get("encoding", "mulaw")), int(fmt_meta.get("sample_rate", 8000)), 1
    )
    # Served over a carrier's media websocket: the chunking the server used (its last padding).
    params = TransportParams(
        audio_in=fmt,
        audio_out=fmt,
        allow_interruptions=settings.allow_interruptions,
        chunk_ms=MEDIA_STREAM_CHUNK_MS if meta.get("carrier") in SERIALIZED else 20,
        **await turn_kwargs_for(settings, str(meta.get("carrier") or "replay"), meta),
    )
    transport = MemoryTransport(params, name="replay")
    call_id = str(rec.header.get("call_id") or meta.get("call_id") or path.stem)
    call = await _make_call(
        transport,
        settings,
        fmt,
        call_id=call_id,
        carrier=str(meta.get("carrier") or "replay"),
        meta=meta,
    )
    task = build_task(call, await bot(call))
    if offline:
        from voxpipe.testing.service_tape import has_services, play_tape

        if has_services(task.pipeline.processors()) and not rec.services:
            from voxpipe.state.shared import close_shared_stores

            await close_shared_stores()  # opened for the call: their threads would outlive it
            raise RecordingError(
                f"{path}: the recording keeps no provider results (recorded before format "
                "version 3): replay it without --offline, with the providers"
            )
        player = play_tape(task.pipeline.processors(), rec.services)
    summarizer = CallSummarizer(clock)
    task.add_observer(summarizer)
    loop = asyncio.get_running_loop()
    runner = loop.create_task(task.run())
    await task.wait_started()
    summarizer.start(clock.now())
    ticker = None
    if progress is not None and rec.duration > 20:
        ticker = loop.create_task(_progress_ticker(clock, rec.duration, progress))
    try:
        if offline:
            player.begin(clock.now())  # the same start as the frames' below
        await replay_frames(rec, task)
        # The recording ends where the caller's line did: hang up there, as the caller did.
        await clock.sleep(params.chunk_ms / 1000)
        if not runner.done():
            await transport.on_wire_closed("recording ended")
        await runner
    finally:
        if ticker is not None:
            ticker.cancel()
        if not runner.done():
            runner.cancel()
        from voxpipe.state.shared import close_shared_stores

        await close_shared_stores()  # the scratch stores of this replay
    audio = b"".join(e.audio for e in transport.memory_sink.audio_events)
    rate = fmt.sample_rate * bytes_per_sample(fmt.encoding)
    summary = {"audio": audio_digest(audio, rate), **summarizer.summary()}
    return ReplayResult(summary, audio, fmt, len(rec.frames))
