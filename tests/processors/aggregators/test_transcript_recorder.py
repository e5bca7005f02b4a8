"""TranscriptRecorder: turns stored as they complete, the full transcript at call end."""

from __future__ import annotations

from pathlib import Path

from voxpipe.frames import (
    BotStartedSpeakingFrame,
    BotStoppedSpeakingFrame,
    InterruptionFrame,
    LLMResponseEndFrame,
    LLMResponseStartFrame,
    PauseRecordingFrame,
    ResumeRecordingFrame,
    TranscriptionFrame,
    TTSTextFrame,
    UserStartedSpeakingFrame,
    UserStoppedSpeakingFrame,
)
from voxpipe.pipelines.clock import Clock
from voxpipe.processors.aggregators import LLMContext, UserContextAggregator
from voxpipe.processors.aggregators.assistant import AssistantContextAggregator
from voxpipe.processors.aggregators.transcript import TranscriptRecorder
from voxpipe.state.memory import MemorySessionStore
from voxpipe.state.sqlite_store import SqliteTranscriptStore
from voxpipe.testing import Sleep, run_frames


def user_turn(text: str) -> list:
    return [
        UserStartedSpeakingFrame(),
        TranscriptionFrame(text),
        UserStoppedSpeakingFrame(),
        Sleep(0.01),
    ]


def reply(*words: str, interrupt_after: int | None = None) -> list:
    frames: list = [LLMResponseStartFrame(), BotStartedSpeakingFrame()]
    for i, w in enumerate(words):
        if interrupt_after is not None and i == interrupt_after:
            return [*frames, InterruptionFrame(), BotStoppedSpeakingFrame()]
        frames.append(TTSTextFrame(w))
    return [*frames, LLMResponseEndFrame(), BotStoppedSpeakingFrame()]


async def test_turns_go_to_the_session_as_they_complete_and_the_transcript_at_the_end(
    tmp_path: Path,
) -> None:
    context = LLMContext("be brief")
    assistant = AssistantContextAggregator(context)
    sessions = MemorySessionStore()
    transcripts = SqliteTranscriptStore(tmp_path / "t.sqlite3")
    await transcripts.start()
    recorder = TranscriptRecorder(
        assistant,
        sessions=sessions,
        transcripts=transcripts,
        call_id="CA1",
        meta={"caller": "+44123"},
    )

    class Probe(UserContextAggregator):
        pass

    frames = [
        *user_turn("what time do you open"),
        *reply("We", "open", "at", "nine."),
        *user_turn("and on sundays"),
        *reply("On", "Sundays", "we", "stay", "closed.", interrupt_after=2),
        PauseRecordingFrame(),
        *user_turn("my card is 4111 1111 1111 1111"),
        ResumeRecordingFrame(),
        *user_turn("thanks bye"),
    ]
    # Real clock: the SQLite store lives on this test's event loop.
    result = await run_frames([Probe(context), assistant, recorder], frames, clock=Clock())
    assert result.end_reason == "run_frames"

    stored = await transcripts.read("CA1", reader="test")
    assert stored is not None
    assert [(t.role, t.text, t.interrupted) for t in stored.turns] == [
        ("user", "what time do you open", False),
        ("assistant", "We open at nine.", False),
        ("user", "and on sundays", False),
        ("assistant", "On Sundays", True),
        ("user", "thanks bye", False),
    ]
    assert stored.caller == "+44123"
    assert "response_ms" in stored.turns[1].timings
    assert all("4111" not in t.text for t in stored.turns)
    # The live session was flushed once the transcript was safe.
    assert await sessions.load("CA1") is None
    await transcripts.close()


async def test_each_turn_reaches_the_session_store_before_the_call_ends(tmp_path: Path) -> None:
    context = LLMContext()
    assistant = AssistantContextAggregator(context)
    sessions = MemorySessionStore()
    transcripts = SqliteTranscriptStore(tmp_path / "t.sqlite3")
    await transcripts.start()
    recorder = TranscriptRecorder(
        assistant, sessions=sessions, transcripts=transcripts, call_id="CA2"
    )
    seen: list[int] = []

    from voxpipe.frames import Frame, FrameDirection
    from voxpipe.processors.base import FrameProcessor

    class Check(FrameProcessor):
        async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
            if isinstance(frame, UserStartedSpeakingFrame):
                state = await sessions.load("CA2")
                seen.append(len(state.turns) if state else 0)
            await self.push_frame(frame, direction)

    frames = [*user_turn("hello"), *reply("Hi."), Sleep(0.1), *user_turn("bye")]
    await run_frames(
        [UserContextAggregator(context), assistant, recorder, Check()], frames, clock=Clock()
    )
    assert seen == [0, 2]  # before the second user turn: the first exchange is stored
    await transcripts.close()
