"""Consent before retention: asked once per caller id, and nothing kept without a "yes"
(real SQLite consent and transcript stores, memory session store, real clock)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

from voxpipe.frames import (
    BotStartedSpeakingFrame,
    BotStoppedSpeakingFrame,
    DTMFFrame,
    EndFrame,
    Frame,
    LLMMessagesFrame,
    LLMResponseEndFrame,
    LLMResponseStartFrame,
    RetentionConsentFrame,
    TranscriptionFrame,
    TTSSpeakFrame,
    TTSTextFrame,
    UserStartedSpeakingFrame,
    UserStoppedSpeakingFrame,
)
from voxpipe.pipelines import Pipeline, PipelineTask
from voxpipe.pipelines.clock import Clock
from voxpipe.processors.aggregators import LLMContext, UserContextAggregator
from voxpipe.processors.aggregators.assistant import AssistantContextAggregator
from voxpipe.processors.aggregators.transcript import TranscriptRecorder
from voxpipe.processors.policy.consent import ConsentGate, ConsentPrompts
from voxpipe.state.consent import SqliteConsentStore
from voxpipe.state.memory import MemorySessionStore
from voxpipe.state.sqlite_store import SqliteTranscriptStore

CALLER = "+14155552671"
GREETING = "Hello, how can I help?"
PROMPTS = ConsentPrompts()


class Stores:
    def __init__(self, tmp_path: Path) -> None:
        db = str(tmp_path / "calls.sqlite3")
        self.consents = SqliteConsentStore(db)
        self.transcripts = SqliteTranscriptStore(db)
        self.sessions = MemorySessionStore()

    async def __aenter__(self) -> Stores:
        await self.consents.start()
        await self.transcripts.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.consents.close()
        await self.transcripts.close()


class LiveCall:
    """One call through gate -> user context -> assistant context -> recorder, on the real
    clock (the SQLite stores live on this loop), waiting on frames rather than time."""

    def __init__(self, stores: Stores, call_id: str, *, answer_timeout_s: float = 30.0) -> None:
        context = LLMContext("be brief")
        assistant = AssistantContextAggregator(context)
        self.gate = ConsentGate(
            stores.consents,
            caller=CALLER,
            call_id=call_id,
            after=GREETING,
            answer_timeout_s=answer_timeout_s,
        )
        self.recorder = TranscriptRecorder(
            assistant,
            sessions=stores.sessions,
            transcripts=stores.transcripts,
            call_id=call_id,
            meta={"caller": CALLER},
            require_consent=True,
        )
        self.task = PipelineTask(
            Pipeline([self.gate, UserContextAggregator(context), assistant, self.recorder]),
            clock=Clock(),
        )
        self.out: list[Frame] = []
        self._changed = asyncio.Event()
        self.task.on_downstream(self._seen)

    def _seen(self, frame: Frame) -> None:
        self.out.append(frame)
        self._changed.set()

    def spoken(self) -> list[str]:
        return [f.text for f in self.out if isinstance(f, TTSSpeakFrame)]

    def consent(self) -> RetentionConsentFrame | None:
        found = [f for f in self.out if isinstance(f, RetentionConsentFrame)]
        return found[0] if found else None

    async def wait_for(self, predicate: Callable[[], object]) -> None:
        async with asyncio.timeout(10):
            while not predicate():
                self._changed.clear()
                await self._changed.wait()

    async def __aenter__(self) -> LiveCall:
        self.runner = asyncio.create_task(self.task.run())
        await self.task.wait_started()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.task.queue_frame(EndFrame(reason="caller hung up"))
        await asyncio.wait_for(self.runner, 10)

    async def send(self, *frames: Frame) -> None:
        for f in frames:
            await self.task.inject(f)

    async def turn(self, said: str, reply: str) -> None:
        """The caller says something; if it reaches the LLM, the bot answers and is heard."""
        asked = len([f for f in self.out if isinstance(f, LLMMessagesFrame)])
        await self.send(UserStartedSpeakingFrame(), TranscriptionFrame(said))
        await self.send(UserStoppedSpeakingFrame())
        if self.consent() is None:
            return  # undecided: nothing reaches the LLM (checked by the callers)
        await self.wait_for(
            lambda: len([f for f in self.out if isinstance(f, LLMMessagesFrame)]) > asked
        )
        await self.send(
            LLMResponseStartFrame(),
            BotStartedSpeakingFrame(),
            TTSTextFrame(reply),
            LLMResponseEndFrame(),
            BotStoppedSpeakingFrame(),
        )


async def stored(stores: Stores, call_id: str) -> tuple[object, object]:
    session = await stores.sessions.load(call_id)
    transcript = await stores.transcripts.read(call_id, reader="test")
    return session, transcript


async def test_yes_keeps_the_call_and_the_caller_is_not_asked_again(tmp_path: Path) -> None:
    async with Stores(tmp_path) as stores:
        async with LiveCall(stores, "CA1") as call:
            await call.wait_for(lambda: PROMPTS.prompt in call.spoken())
            await call.turn("hello? is anyone there", "-")  # over the prompt: dropped
            assert not [f for f in call.out if isinstance(f, LLMMessagesFrame)]
            await call.send(DTMFFrame(digit="1"))
            await call.wait_for(call.consent)
            await call.turn("when do you open", "At nine.")
        consent = call.consent()
        assert consent is not None and consent.granted and consent.source == "dtmf"
        assert call.spoken() == [PROMPTS.prompt, PROMPTS.agreed, GREETING]
        assert not [f for f in call.out if isinstance(f, DTMFFrame)]  # the key was consumed

        _, transcript = await stored(stores, "CA1")
        assert transcript is not None
        said = [(t.role, t.text) for t in transcript.turns]  # type: ignore[attr-defined]
        assert said == [("user", "when do you open"), ("assistant", "At nine.")]
        record = await stores.consents.get(CALLER)
        assert record is not None and record.granted and record.call_id == "CA1"

        # The next call of the same caller: no prompt, greeted at once, kept.
        async with LiveCall(stores, "CA2") as call:
            await call.wait_for(call.consent)
            await call.turn("where is my order", "On its way.")
        assert call.spoken() == [GREETING]
        assert call.consent() == RetentionConsentFrame(granted=True, source="stored")
        _, transcript = await stored(stores, "CA2")
        assert transcript is not None and len(transcript.turns) == 2  # type: ignore[attr-defined]


async def test_no_keeps_nothing_now_or_on_later_calls(tmp_path: Path) -> None:
    async with Stores(tmp_path) as stores:
        async with LiveCall(stores, "CA1") as call:
            await call.wait_for(lambda: PROMPTS.prompt in call.spoken())
            await call.send(DTMFFrame(digit="2"))
            await call.wait_for(call.consent)
            await call.turn("when do you open", "At nine.")  # the call goes on, unrecorded
        assert call.spoken() == [PROMPTS.prompt, PROMPTS.declined, GREETING]
        assert [f for f in call.out if isinstance(f, LLMMessagesFrame)]  # the bot still helps
        assert await stored(stores, "CA1") == (None, None)
        assert await stores.sessions.list_sessions() == []
        assert await stores.transcripts.call_ids() == []

        async with LiveCall(stores, "CA2") as call:
            await call.wait_for(call.consent)
            await call.turn("thanks bye", "Goodbye!")
        assert call.spoken() == [GREETING]  # not asked again
        assert await stored(stores, "CA2") == (None, None)
        assert await stores.transcripts.call_ids() == []


async def test_no_answer_keeps_nothing_and_asks_again_next_time(tmp_path: Path) -> None:
    async with Stores(tmp_path) as stores:
        async with LiveCall(stores, "CA1", answer_timeout_s=0.05) as call:
            await call.wait_for(call.consent)
            await call.turn("when do you open", "At nine.")
        assert call.consent() == RetentionConsentFrame(granted=False, source="no_answer")
        assert call.spoken() == [PROMPTS.prompt, PROMPTS.reminder, PROMPTS.no_answer, GREETING]
        assert await stored(stores, "CA1") == (None, None)
        assert await stores.consents.get(CALLER) is None  # not a choice: ask next time

        async with LiveCall(stores, "CA2") as call:
            await call.wait_for(lambda: PROMPTS.prompt in call.spoken())


async def test_hanging_up_before_answering_keeps_nothing(tmp_path: Path) -> None:
    async with Stores(tmp_path) as stores:
        async with LiveCall(stores, "CA1") as call:
            await call.wait_for(lambda: PROMPTS.prompt in call.spoken())
            await call.turn("what is this", "-")
        assert call.consent() is None
        assert not [f for f in call.out if isinstance(f, LLMMessagesFrame)]
        assert await stored(stores, "CA1") == (None, None)
        assert await stores.sessions.list_sessions() == []
        assert await stores.consents.get(CALLER) is None
