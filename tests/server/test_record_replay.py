"""`serve --record`: a recorded phone call replays, on the virtual clock, to the same output."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.server.conftest import ECHO_BOT, serve
from voxpipe.call import load_bot
from voxpipe.testing.bot_runs import recording_bot, replay_recording
from voxpipe.testing.recording import read_recording
from voxpipe.testing.twilio_caller import CallerLog, TwilioCaller

pytestmark = pytest.mark.slow


async def test_recorded_call_replays_to_the_same_output(
    tmp_path: Path,
    echo_app: Callable[..., Any],
    settings_factory: Callable[..., Any],
    speech_mulaw: bytes,
) -> None:
    settings = settings_factory()
    app = echo_app(settings, record_dir=tmp_path)
    state = app.state.voxpipe
    first = speech_mulaw[: 3 * 8000]

    def echo_done(log: CallerLog) -> bool:
        return bool(
            log.media_times and log.mark_echoes and log.mark_echoes[-1][0] >= log.media_times[-1]
        )

    async with serve(app, settings) as srv:
        caller = await TwilioCaller.dial(
            srv.url, audio=first, realtime=False, tail_silence_s=1.5, dtmf=[(0.05, "7")]
        )
        log = await caller.run(until=echo_done, timeout=20)
        async with asyncio.timeout(10):
            while len(state.registry):
                await state.registry.sessions[0].ended.wait()
    [path] = await asyncio.to_thread(lambda: list(tmp_path.glob("*.jsonl")))
    assert path.name == f"{caller.call_sid}.jsonl"
    rec = read_recording(path)
    assert rec.header["metadata"]["caller"] == "+15550100001"
    assert rec.header["metadata"]["custom_parameters"]["FromCountry"] == "US"
    assert "voxpipe_token" not in rec.header["metadata"]["custom_parameters"]
    assert recording_bot(path) == str(ECHO_BOT)
    kinds = {type(f.frame).__name__ for f in rec.frames}
    assert {"InputAudioFrame", "DTMFFrame"} <= kinds

    original = log.audio()
    assert len(original) > 2 * 8000
    result = await asyncio.to_thread(replay_recording, path, load_bot(ECHO_BOT), settings=settings)
    # The bot sent exactly the same audio to the wire in the replay as on the phone call.
    assert result.audio == original
    assert result.summary["user_turns"] == 1 and result.summary["bot_turns"] == 1
    again = await asyncio.to_thread(replay_recording, path, load_bot(ECHO_BOT), settings=settings)
    assert again.summary == result.summary  # deterministic
