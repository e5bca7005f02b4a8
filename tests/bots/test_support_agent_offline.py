"""The support agent with no keys and no servers: PocketSphinx, the scripted dialog, espeak-ng,
memory sessions and a SQLite transcript, on the virtual clock (as `voxpipe call` runs it)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from voxpipe.call import load_bot
from voxpipe.config.settings import VoxpipeSettings
from voxpipe.state.sqlite_store import SqliteTranscriptStore
from voxpipe.testing import caller_wav, run_wav_call

BOT = Path(__file__).resolve().parents[2] / "bots" / "support_agent.py"


def test_offline_support_call_answers_escalates_and_keeps_the_transcript(tmp_path: Path) -> None:
    wav = caller_wav(
        ["what are your opening hours", "i want to talk to a human"], tmp_path / "caller.wav"
    )
    db = tmp_path / "calls.sqlite3"
    settings = VoxpipeSettings(  # type: ignore[call-arg]
        _env_file=None,
        sqlite_path=str(db),
        spool_dir=str(tmp_path / "spool"),
        recordings_url=str(tmp_path / "recordings"),
    )
    out = run_wav_call(load_bot(BOT), wav, settings=settings, metadata={"call_id": "CAoffline"})
    said = out.transcript
    assert said["end_reason"], said

    async def read() -> object:
        store = SqliteTranscriptStore(db)
        await store.start()
        try:
            ids = await store.call_ids()
            assert len(ids) == 1
            return await store.read(ids[0], reader="test")
        finally:
            await store.close()

    transcript = asyncio.run(read())
    assert transcript is not None
    turns = [(t.role, t.text) for t in transcript.turns]  # type: ignore[attr-defined]
    assert turns[0] == ("assistant", "Hello, thanks for calling. How can I help you today?")
    assert ("user", "what are your opening hours") in turns
    assert ("assistant", "We're open Monday to Saturday, eight to eight.") in turns
    assert ("user", "i want to talk to a human") in turns
    assert transcript.escalated  # type: ignore[attr-defined]
    assert transcript.escalation_reason == "caller asked for a person"  # type: ignore[attr-defined]
