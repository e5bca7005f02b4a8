"""Card numbers never stored: redacted right after STT (so the LLM request, the session store
and the transcript never see one), with recording and transcription paused around them."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest

from voxpipe.frames import (
    BotStartedSpeakingFrame,
    BotStoppedSpeakingFrame,
    DTMFFrame,
    EndFrame,
    Frame,
    FrameDirection,
    InterimTranscriptionFrame,
    LLMMessagesFrame,
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
from voxpipe.state.session import Turn
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


class WrittenSessions(MemorySessionStore):
    """A session store that keeps the text of everything ever written to it (the call's state
    is deleted at its end, so reading the store afterwards would prove nothing)."""

    def __init__(self) -> None:
        super().__init__()
        self.written: list[str] = []

    async def append_turn(self, session_id: str, turn: Turn) -> None:
        # Only what the caller or the bot said: ids and timestamps are digits of their own
        # (a timestamp such as 1796404111.2 once made this test fail for no leak).
        self.written.append(json.dumps([turn.text, turn.tool_calls]))
        await super().append_turn(session_id, turn)

    async def set_meta(self, session_id: str, values: Mapping[str, Any]) -> None:
        self.written.append(json.dumps({k: str(v) for k, v in values.items()}))
        await super().set_meta(session_id, values)


# How an STT delivers a card read in two parts: both finals inside the caller's turn, or each
# part after the VAD ended its turn (Deepgram answers Finalize after the "stopped"; a caller
# pauses between digit groups long enough to end a turn). The old guard released the first
# part on its own in the second case.
IN_ONE_TURN = [
    UserStartedSpeakingFrame(),
    InterimTranscriptionFrame("my card number is four one one one one one one one"),
    TranscriptionFrame("my card number is four one one one one one one one"),
    TranscriptionFrame("one one one one one one one one"),
    UserStoppedSpeakingFrame(),
]
AFTER_EACH_TURN = [
    UserStartedSpeakingFrame(),
    InterimTranscriptionFrame("my card number is four one one one"),
    UserStoppedSpeakingFrame(),
    TranscriptionFrame("my card number is four one one one one one one one"),
    UserStartedSpeakingFrame(),
    InterimTranscriptionFrame("one one one one"),
    UserStoppedSpeakingFrame(),
    TranscriptionFrame("one one one one one one one one"),
]


@pytest.mark.parametrize("said", [IN_ONE_TURN, AFTER_EACH_TURN], ids=["one-turn", "two-turns"])
async def test_a_card_said_across_two_transcripts_reaches_no_llm_request_session_or_transcript(
    tmp_path: Path, said: list[Frame]
) -> None:
    def script(body: dict[str, Any]) -> str:
        said = [m for m in body["messages"] if m["role"] == "user"][-1]["content"]
        return "Thanks, you're all set." if "card" in said else "You're welcome, goodbye."

    sessions = WrittenSessions()
    transcripts = SqliteTranscriptStore(tmp_path / "calls.sqlite3")
    await transcripts.start()
    async with FakeOpenAI(replies=script, first_token_delay=0.0) as fake:
        llm = OpenAILLMService(
            api_key="test-key", base_url=fake.base_url, model="gpt-4o-mini", first_token_timeout=2
        )
        context = LLMContext("You take payments.")
        assistant = AssistantContextAggregator(context)
        # The real clock (the LLM is a socket away), and no timer whose firing time changes
        # the outcome: the pause is ended by the end_payment tool (the quiet spell that also
        # ends it is tested on the virtual clock below); the hold on digits is released by
        # the caller's silence, and nothing else happens meanwhile.
        guard = PaymentGuard(PaymentGuardParams(resume_after_s=3600, hold_digits_s=0.05))
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

        for f in said:
            await task.inject(f)
        await wait_for(lambda: count(LLMResponseEndFrame) == 1)
        assert guard.paused and guard.redactions == 1
        # The STT (upstream) and the recorder (downstream) were both told to pause.
        assert [type(f) for f in up if isinstance(f, PauseRecordingFrame)] == [PauseRecordingFrame]
        assert count(PauseRecordingFrame) == 1
        # Keypad digits during the pause go no further.
        await task.inject(DTMFFrame(digit="4"))
        assert count(DTMFFrame) == 0
        await task.inject(BotStoppedSpeakingFrame())
        assert await guard.end_payment() == {"status": "recording_resumed"}
        assert count(ResumeRecordingFrame) == 1
        assert any(isinstance(f, ResumeRecordingFrame) for f in up)

        for f in (
            UserStartedSpeakingFrame(),
            TranscriptionFrame("thanks that's all"),
            UserStoppedSpeakingFrame(),
        ):
            await task.inject(f)
        await wait_for(lambda: count(LLMResponseEndFrame) == 2)
        await task.inject(BotStoppedSpeakingFrame())
        await task.queue_frame(EndFrame())
        await asyncio.wait_for(runner, 10)
        requests = json.dumps([r.json for r in fake.requests])

    stored = await transcripts.read("CApay", reader="test")
    await transcripts.close()
    assert stored is not None
    stored_text = json.dumps([[t.text, t.tool_calls] for t in stored.turns])

    assert "my card number is [card number]" in requests  # the LLM knew, without the number
    assert leaks(requests) == []
    assert sessions.written and leaks(" ".join(sessions.written)) == []
    assert leaks(stored_text) == []
    # The turn with the card was said during the pause: kept out of the record entirely.
    assert [(t.role, t.text) for t in stored.turns] == [
        ("user", "thanks that's all"),
        ("assistant", "You're welcome, goodbye."),
    ]
    # Nothing downstream saw the number either (interim transcripts included).
    shown = [f.text for f in out if isinstance(f, TranscriptionFrame)]
    assert all(not leaks(t) for t in shown)


async def test_the_first_part_of_a_number_waits_for_the_rest_across_turns() -> None:
    """On the virtual clock: each part finalised after its turn ended, 1.5 s apart."""
    context = LLMContext(None)
    guard = PaymentGuard()
    r = await run_frames(
        [guard, UserContextAggregator(context)],
        [
            UserStartedSpeakingFrame(),
            UserStoppedSpeakingFrame(),
            TranscriptionFrame("my card is 4111 1111"),
            Sleep(1.5),  # the caller's pause between groups: longer than a turn's end
            UserStartedSpeakingFrame(),
            UserStoppedSpeakingFrame(),
            Sleep(0.3),  # the STT's final comes after the "stopped"
            TranscriptionFrame("1111 1111"),
            Sleep(5),
        ],
    )
    sent = [json.dumps(f.messages) for f in r.of_type(LLMMessagesFrame)]
    assert sent and all(not leaks(m) for m in sent)
    assert [m["content"] for m in context.messages] == ["my card is [card number]"]
    assert [f.text for f in r.of_type(TranscriptionFrame)] == ["my card is [card number]"]
    assert guard.paused


async def test_a_number_followed_by_silence_is_released_after_the_hold() -> None:
    guard = PaymentGuard(PaymentGuardParams(hold_digits_s=2.0))
    r = await run_frames(
        [guard],
        [
            UserStartedSpeakingFrame(),
            UserStoppedSpeakingFrame(),
            TranscriptionFrame("my flat is number 12"),  # too short to matter: at once
            Sleep(5),
            UserStartedSpeakingFrame(),
            UserStoppedSpeakingFrame(),
            TranscriptionFrame("my account is 1234 5678"),
            Sleep(5),
        ],
    )
    released = [
        (f.text, t)
        for f, t in zip(r.downstream, r.downstream_times, strict=True)
        if isinstance(f, TranscriptionFrame)
    ]
    # Virtual clock: exact. The longer number waited for a continuation, then the silence.
    assert released == [("my flat is number 12", 0.0), ("my account is 1234 5678", 7.0)]
    assert guard.pauses == 0


async def test_a_short_first_part_goes_on_and_the_rest_of_the_card_is_redacted() -> None:
    guard = PaymentGuard()
    r = await run_frames(
        [guard],
        [
            UserStartedSpeakingFrame(),
            UserStoppedSpeakingFrame(),
            TranscriptionFrame("my card is four one one one"),
            Sleep(1),
            UserStartedSpeakingFrame(),
            UserStoppedSpeakingFrame(),
            TranscriptionFrame("1111"),
            Sleep(1),
            UserStartedSpeakingFrame(),
            UserStoppedSpeakingFrame(),
            TranscriptionFrame("1111 1111"),
            Sleep(5),
        ],
    )
    texts = [f.text for f in r.of_type(TranscriptionFrame)]
    assert texts == ["my card is four one one one", "[card number]"]
    assert guard.paused and guard.redactions == 1


async def test_a_caller_pausing_longer_than_the_hold_never_has_the_whole_number_kept() -> None:
    guard = PaymentGuard(PaymentGuardParams(hold_digits_s=2.0))
    r = await run_frames(
        [guard],
        [
            UserStartedSpeakingFrame(),
            UserStoppedSpeakingFrame(),
            TranscriptionFrame("my card is 4111 1111"),
            Sleep(4),  # released on its own: it could have been a complete number
            UserStartedSpeakingFrame(),
            InterimTranscriptionFrame("1111 11"),
            UserStoppedSpeakingFrame(),
            TranscriptionFrame("1111 1111 thanks"),
        ],
    )
    texts = [f.text for f in r.of_type(TranscriptionFrame)]
    # The rest of the card is redacted from the next final: at most its first part is kept.
    assert texts == ["my card is 4111 1111", "[card number]", "[card number] thanks"]
    assert guard.paused and guard.redactions == 1


async def test_a_quiet_spell_ends_the_pause() -> None:
    guard = PaymentGuard(PaymentGuardParams(resume_after_s=5))
    r = await run_frames(
        [guard],
        [
            UserStartedSpeakingFrame(),
            TranscriptionFrame("it is 4111 1111 1111 1111 thanks"),
            UserStoppedSpeakingFrame(),
            Sleep(1),
            BotStartedSpeakingFrame(),  # the bot answers: not quiet
            Sleep(10),
            BotStoppedSpeakingFrame(),
            Sleep(10),
        ],
    )
    times = {
        type(f): t
        for f, t in zip(r.downstream, r.downstream_times, strict=True)
        if isinstance(f, PauseRecordingFrame | ResumeRecordingFrame)
    }
    assert times == {PauseRecordingFrame: 0, ResumeRecordingFrame: 16}


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
    # Each said, then a silence (a number at the end of a final is held for its rest).
    r = await run_frames([guard], [x for t in said for x in (TranscriptionFrame(t), Sleep(3))])
    assert [f.text for f in r.of_type(TranscriptionFrame)] == said
    assert r.of_type(PauseRecordingFrame) == [] and guard.pauses == 0
