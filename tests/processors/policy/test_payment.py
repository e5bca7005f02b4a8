"""Card numbers never stored: redacted right after STT (so the LLM request, the session store
and the transcript never see one), with recording and transcription paused around them."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from voxpipe.frames import (
    BotStartedSpeakingFrame,
    BotStoppedSpeakingFrame,
    DTMFFrame,
    EndFrame,
    Frame,
    FrameDirection,
    InterimTranscriptionFrame,
    LLMResponseEndFrame,
    LLMResponseStartFrame,
    LLMTextFrame,
    PauseRecordingFrame,
    ResumeRecordingFrame,
    TranscriptionFrame,
    TTSTextFrame,
    UserStartedSpeakingFrame,
    UserStoppedSpeakingFrame,
)
from voxpipe.pipelines import Pipeline, PipelineTask
from voxpipe.pipelines.clock import Clock
from voxpipe.processors.aggregators import LLMContext, UserContextAggregator
from voxpipe.processors.aggregators.assistant import AssistantContextAggregator
from voxpipe.processors.aggregators.transcript import TranscriptRecorder
from voxpipe.processors.base import FrameProcessor
from voxpipe.processors.llm.openai import OpenAILLMService
from voxpipe.processors.policy.payment import PaymentGuard, PaymentGuardParams
from voxpipe.state.memory import MemorySessionStore
from voxpipe.state.sqlite_store import SqliteTranscriptStore
from voxpipe.testing import Sleep, run_frames
from voxpipe.testing.fakes import FakeOpenAI

DOWN = FrameDirection.DOWNSTREAM
UP = FrameDirection.UPSTREAM
CARD_WORDS = ("4111", "1111", "four one one one", "one one one one")


def leaks(text: str) -> list[str]:
    return [w for w in CARD_WORDS if w in text.lower()]


class PlayedText(FrameProcessor):
    """Stands in for TTS + output transport: LLM text is 'played' at once as TTSTextFrames."""

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        if direction is DOWN and isinstance(frame, LLMResponseStartFrame):
            await self.push_frame(BotStartedSpeakingFrame(), UP)
        if direction is DOWN and isinstance(frame, LLMTextFrame):
            await self.push_frame(TTSTextFrame(frame.text))
            return
        await self.push_frame(frame, direction)


async def test_a_card_said_across_two_transcripts_reaches_no_llm_request_session_or_transcript(
    tmp_path: Path,
) -> None:
    def script(body: dict[str, Any]) -> str:
        said = [m for m in body["messages"] if m["role"] == "user"][-1]["content"]
        return "Thanks, you're all set." if "card" in said else "You're welcome, goodbye."

    sessions = MemorySessionStore()
    transcripts = SqliteTranscriptStore(tmp_path / "calls.sqlite3")
    await transcripts.start()
    async with FakeOpenAI(replies=script, first_token_delay=0.0) as fake:
        llm = OpenAILLMService(
            api_key="test-key", base_url=fake.base_url, model="gpt-4o-mini", first_token_timeout=2
        )
        context = LLMContext("You take payments.")
        assistant = AssistantContextAggregator(context)
        guard = PaymentGuard(PaymentGuardParams(resume_after_s=0.05))
        recorder = TranscriptRecorder(
            assistant, sessions=sessions, transcripts=transcripts, call_id="CApay"
        )
        task = PipelineTask(
            Pipeline(
                [guard, UserContextAggregator(context), llm, PlayedText(), assistant, recorder]
            ),
            clock=Clock(),
        )
        out: list[Frame] = []
        up: list[Frame] = []
        changed = asyncio.Event()

        def seen(frame: Frame) -> None:
            out.append(frame)
            changed.set()

        async def wait_for(predicate: Callable[[], object]) -> None:
            async with asyncio.timeout(10):
                while not predicate():
                    changed.clear()
                    await changed.wait()

        def count(kind: type[Frame]) -> int:
            return sum(isinstance(f, kind) for f in out)

        task.on_downstream(seen)
        task.on_upstream(up.append)
        runner = asyncio.create_task(task.run())
        await task.wait_started()

        # The STT finalises the number in two pieces within one caller turn.
        for f in (
            UserStartedSpeakingFrame(),
            InterimTranscriptionFrame("my card number is four one one one one one one one"),
            TranscriptionFrame("my card number is four one one one one one one one"),
            TranscriptionFrame("one one one one one one one one"),
            UserStoppedSpeakingFrame(),
        ):
            await task.inject(f)
        await wait_for(lambda: count(LLMResponseEndFrame) == 1)
        assert guard.paused and guard.redactions == 1
        # The STT (upstream) and the recorder (downstream) were both told to pause.
        assert [type(f) for f in up if isinstance(f, PauseRecordingFrame)] == [PauseRecordingFrame]
        assert count(PauseRecordingFrame) == 1
        # Keypad digits during the pause go no further.
        await task.inject(DTMFFrame(digit="4"))
        assert count(DTMFFrame) == 0
        # The bot's answer has played; a quiet spell ends the pause.
        await task.inject(BotStoppedSpeakingFrame())
        await wait_for(lambda: count(ResumeRecordingFrame) == 1)
        assert not guard.paused and any(isinstance(f, ResumeRecordingFrame) for f in up)

        for f in (
            UserStartedSpeakingFrame(),
            TranscriptionFrame("thanks that's all"),
            UserStoppedSpeakingFrame(),
        ):
            await task.inject(f)
        await wait_for(lambda: count(LLMResponseEndFrame) == 2)
        await task.inject(BotStoppedSpeakingFrame())

        async with asyncio.timeout(10):  # the recorder's writes are asynchronous
            while (state := await sessions.load("CApay")) is None or len(state.turns) < 2:
                await asyncio.sleep(0.005)
        session_text = json.dumps([t.to_dict() for t in state.turns])

        await task.queue_frame(EndFrame())
        await asyncio.wait_for(runner, 10)
        requests = json.dumps([r.json for r in fake.requests])

    stored = await transcripts.read("CApay", reader="test")
    await transcripts.close()
    assert stored is not None
    stored_text = json.dumps([t.to_dict() for t in stored.turns])

    assert "my card number is [card number]" in requests  # the LLM knew, without the number
    assert leaks(requests) == []
    assert leaks(session_text) == []
    assert leaks(stored_text) == []
    # The turn with the card was said during the pause: kept out of the record entirely.
    assert [(t.role, t.text) for t in stored.turns] == [
        ("user", "thanks that's all"),
        ("assistant", "You're welcome, goodbye."),
    ]
    # Nothing downstream saw the number either (interim transcripts included).
    shown = [f.text for f in out if isinstance(f, TranscriptionFrame)]
    assert all(not leaks(t) for t in shown)


async def test_start_and_end_payment_tools_pause_and_resume() -> None:
    guard = PaymentGuard()
    results: list[dict[str, Any]] = []

    class Tools(FrameProcessor):
        async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
            await self.push_frame(frame, direction)
            if isinstance(frame, TranscriptionFrame) and frame.text == "pay":
                results.append(await guard.start_payment())
            elif isinstance(frame, TranscriptionFrame) and frame.text == "done":
                results.append(await guard.end_payment())

    r = await run_frames(
        [guard, Tools()],
        [
            TranscriptionFrame("pay"),
            TranscriptionFrame("done"),
            TranscriptionFrame("pay"),
            Sleep(10),  # virtual time: quiet for longer than resume_after_s (6 s)
        ],
    )
    assert [x["status"] for x in results] == [
        "recording_paused",
        "recording_resumed",
        "recording_paused",
    ]
    marks = (PauseRecordingFrame, ResumeRecordingFrame)
    for frames in (r.upstream, r.downstream):
        kinds = [type(f) for f in frames if isinstance(f, marks)]
        assert kinds == [*marks, *marks]


async def test_a_caller_who_keeps_talking_is_unpaused_after_the_longest_pause() -> None:
    guard = PaymentGuard(PaymentGuardParams(resume_after_s=5, max_pause_s=60))
    r = await run_frames(
        [guard],
        [
            UserStartedSpeakingFrame(),
            TranscriptionFrame("it is 4111 1111 1111 1111 ok"),  # no "stopped": still talking
            Sleep(100),
        ],
    )
    assert r.of_type(TranscriptionFrame)[0].text == "it is [card number] ok"
    resumed = [
        t
        for f, t in zip(r.downstream, r.downstream_times, strict=True)
        if isinstance(f, ResumeRecordingFrame)
    ]
    paused = [
        t
        for f, t in zip(r.downstream, r.downstream_times, strict=True)
        if isinstance(f, PauseRecordingFrame)
    ]
    assert len(paused) == 1 and len(resumed) == 1
    assert resumed[0] - paused[0] == 60  # virtual clock: exact


def test_interim_transcripts_hide_any_long_digit_run() -> None:
    guard = PaymentGuard()
    frame = InterimTranscriptionFrame("my card is four one one one one one", words=[])
    assert guard._interim(frame).text == "my card is [card number]"
    short = InterimTranscriptionFrame("flat 12b")
    assert guard._interim(short) is short


async def test_order_and_phone_numbers_pass_untouched_and_do_not_pause() -> None:
    guard = PaymentGuard()
    said = [
        "my order number is 1234 5678 9012 3456",
        "call me on +44 7700 900123",
    ]
    r = await run_frames([guard], [TranscriptionFrame(t) for t in said])
    assert [f.text for f in r.of_type(TranscriptionFrame)] == said
    assert r.of_type(PauseRecordingFrame) == [] and guard.pauses == 0
