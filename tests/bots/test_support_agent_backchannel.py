"""The served support agent, offline (PocketSphinx, espeak-ng, the VAD on the caller's audio),
with a caller talking over its greeting: "uh huh" lets it go on, "wait" stops it."""

from __future__ import annotations

import asyncio
from pathlib import Path

from voxpipe.call import load_bot
from voxpipe.config.settings import VoxpipeSettings
from voxpipe.state.sqlite_store import SqliteTranscriptStore
from voxpipe.testing import caller_wav, run_wav_call

BOT = Path(__file__).resolve().parents[2] / "bots" / "support_agent.py"
GREETING = "Hello, thanks for calling. How can I help you today?"


def _call(tmp_path: Path, over_the_greeting: str) -> tuple[dict, list[tuple[str, str]]]:
    # The greeting lasts about 3 s; the caller speaks 1.2 s into it, then asks a question.
    wav = caller_wav(
        [(over_the_greeting, 4.0), "what are your opening hours"], tmp_path / "c.wav", lead_s=1.2
    )
    db = tmp_path / "calls.sqlite3"
    settings = VoxpipeSettings(  # type: ignore[call-arg]
        _env_file=None,
        sqlite_path=str(db),
        spool_dir=str(tmp_path / "spool"),
        recordings_url=str(tmp_path / "recordings"),
    )
    out = run_wav_call(load_bot(BOT), wav, settings=settings, metadata={"call_id": "CAbc"})

    async def read() -> list[tuple[str, str]]:
        store = SqliteTranscriptStore(db)
        await store.start()
        try:
            [call_id] = await store.call_ids()
            transcript = await store.read(call_id, reader="test")
            assert transcript is not None
            return [(t.role, t.text) for t in transcript.turns]
        finally:
            await store.close()

    return out.transcript, asyncio.run(read())


def test_uh_huh_over_the_greeting_does_not_stop_it(tmp_path: Path) -> None:
    summary, turns = _call(tmp_path, "uh huh")
    assert summary["interruptions"] == []
    assert "uh huh" in summary["transcripts"], "the recogniser heard it"
    assert turns[0] == ("assistant", GREETING)
    assert ("user", "uh huh") not in turns  # a backchannel is not a turn
    assert ("user", "what are your opening hours") in turns
    assert ("assistant", "We're open Monday to Saturday, eight to eight.") in turns


def test_wait_over_the_greeting_stops_it(tmp_path: Path) -> None:
    summary, turns = _call(tmp_path, "wait")
    assert len(summary["interruptions"]) == 1
    # The context keeps the part of the greeting the caller heard ("Hello, thanks for").
    role, heard = turns[0]
    assert role == "assistant" and heard and GREETING.startswith(heard) and heard != GREETING
    assert ("user", "wait") in turns
