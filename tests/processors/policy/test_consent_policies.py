"""Consent by jurisdiction: a notice (answered without a key), a spoken yes / no in the caller's
language, withdrawal mid-call (stored data deleted), and stored choices that expire (real SQLite
consent and transcript stores, memory sessions, real clock; waits on frames, not on time)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

from voxpipe.frames import (
    BotStartedSpeakingFrame,
    BotStoppedSpeakingFrame,
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
from voxpipe.state.session import Turn
from voxpipe.state.sqlite_store import SqliteTranscriptStore

US_CALLER = "+14155552671"
DE_CALLER = "+4915123456789"
GREETING = "Hello, how can I help?"
DAY = 86400.0


class Sessions(MemorySessionStore):
    """The memory store, telling the test when a turn was written."""

    def __init__(self) -> None:
        super().__init__()
        self.turn_written = asyncio.Event()

    async def append_turn(self, session_id: str, turn: Turn) -> None:
        await super().append_turn(session_id, turn)
        self.turn_written.set()


class Stores:
    def __init__(self, tmp_path: Path) -> None:
        db = str(tmp_path / "calls.sqlite3")
        self.consents = SqliteConsentStore(db)
        self.transcripts = SqliteTranscriptStore(db)
        self.sessions = Sessions()

    async def __aenter__(self) -> Stores:
        await self.consents.start()
        await self.transcripts.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.consents.close()
        await self.transcripts.close()


class LiveCall:
    """gate -> user context -> assistant context -> recorder, driven frame by frame."""

    def __init__(self, stores: Stores, call_id: str, caller: str, **gate: Any) -> None:
        context = LLMContext("be brief")
        assistant = AssistantContextAggregator(context)
        self.stores, self.call_id = stores, call_id
        gate.setdefault("answer_timeout_s", 30.0)
        self.gate = ConsentGate(
            stores.consents, caller=caller, call_id=call_id, after=GREETING, **gate
        )
        self.recorder = TranscriptRecorder(
            assistant,
            sessions=stores.sessions,
            transcripts=stores.transcripts,
            call_id=call_id,
            meta={"caller": caller},
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

    def consents(self) -> list[RetentionConsentFrame]:
        return [f for f in self.out if isinstance(f, RetentionConsentFrame)]

    def llm_requests(self) -> int:
        return len([f for f in self.out if isinstance(f, LLMMessagesFrame)])

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

    async def say(self, text: str) -> None:
        await self.task.inject(UserStartedSpeakingFrame())
        await self.task.inject(TranscriptionFrame(text))
        await self.task.inject(UserStoppedSpeakingFrame())

    async def turn(self, said: str, reply: str) -> None:
        """The caller says something that reaches the LLM; the bot answers and is heard."""
        asked = self.llm_requests()
        await self.say(said)
        await self.wait_for(lambda: self.llm_requests() > asked)
        for f in (
            LLMResponseStartFrame(),
            BotStartedSpeakingFrame(),
            TTSTextFrame(reply),
            LLMResponseEndFrame(),
            BotStoppedSpeakingFrame(),
        ):
            await self.task.inject(f)

    async def stored(self) -> tuple[object, object]:
        session = await self.stores.sessions.load(self.call_id)
        transcript = await self.stores.transcripts.read(self.call_id, reader="test")
        return session, transcript


async def test_notice_then_greeting_and_a_question_is_answered_without_a_key(
    tmp_path: Path,
) -> None:
    prompts = ConsentPrompts.for_locale("en-US")
    async with Stores(tmp_path) as stores:
        async with LiveCall(stores, "CA1", US_CALLER, policy="notice", prompts=prompts) as call:
            await call.wait_for(call.consents)
            await call.turn("when do you open", "At nine.")
        # The notice first, then the greeting at once: no prompt, no key.
        assert call.spoken() == [prompts.notice, GREETING]
        assert call.consents() == [RetentionConsentFrame(granted=True, source="notice")]
        assert call.llm_requests() == 1
        _, transcript = await call.stored()
        assert transcript is not None
        said = [(t.role, t.text) for t in transcript.turns]  # type: ignore[attr-defined]
        assert said == [("user", "when do you open"), ("assistant", "At nine.")]
        assert await stores.consents.get(US_CALLER) is None  # a notice is not a stored choice


async def test_german_caller_answers_ja_in_their_language(tmp_path: Path) -> None:
    prompts = ConsentPrompts.for_locale("de-DE")
    async with Stores(tmp_path) as stores:
        async with LiveCall(stores, "CA1", DE_CALLER, policy="ivr", prompts=prompts) as call:
            await call.wait_for(lambda: prompts.prompt in call.spoken())
            await call.say("Was kostet das?")  # not an answer: dropped, nothing decided
            assert not call.consents() and call.llm_requests() == 0
            await call.say("Ja, bitte.")
            await call.wait_for(call.consents)
            await call.turn("Wann haben Sie geöffnet?", "Ab neun Uhr.")
        assert call.consents() == [RetentionConsentFrame(granted=True, source="speech")]
        assert call.spoken() == [prompts.prompt, prompts.agreed, GREETING]
        assert call.llm_requests() == 1  # only the question after the answer
        record = await stores.consents.get(DE_CALLER)
        assert record is not None and record.granted
        _, transcript = await call.stored()
        assert transcript is not None and len(transcript.turns) == 2  # type: ignore[attr-defined]


async def test_spoken_no_and_english_answers_are_understood(tmp_path: Path) -> None:
    prompts = ConsentPrompts.for_locale("de-DE")
    async with Stores(tmp_path) as stores:
        async with LiveCall(stores, "CA1", DE_CALLER, prompts=prompts) as call:
            await call.wait_for(lambda: prompts.prompt in call.spoken())
            await call.say("Nein.")
            await call.wait_for(call.consents)
            await call.turn("Wann haben Sie geöffnet?", "Ab neun Uhr.")
        assert call.consents() == [RetentionConsentFrame(granted=False, source="speech")]
        assert await call.stored() == (None, None)

        # English in a German call; "I don't agree" is a no, not the "agree" inside it.
        async with LiveCall(stores, "CA2", "+4930123456", prompts=prompts) as call:
            await call.wait_for(lambda: prompts.prompt in call.spoken())
            await call.say("Yes.")
            await call.wait_for(call.consents)
        assert call.consents()[0].granted
        async with LiveCall(stores, "CA3", "+4930999999", prompts=prompts) as call:
            await call.wait_for(lambda: prompts.prompt in call.spoken())
            await call.say("Yes, no, wait")  # ambiguous: still asking
            await call.say("I don't agree.")
            await call.wait_for(call.consents)
        assert call.consents() == [RetentionConsentFrame(granted=False, source="speech")]


async def test_withdrawal_stops_recording_and_deletes_what_was_stored(tmp_path: Path) -> None:
    prompts = ConsentPrompts.for_locale("en-US")
    async with Stores(tmp_path) as stores:
        await stores.consents.record(US_CALLER, True, call_id="CAearlier")
        async with LiveCall(stores, "CA1", US_CALLER, policy="ivr", prompts=prompts) as call:
            await call.wait_for(call.consents)
            await call.turn("when do you open", "At nine.")
            async with asyncio.timeout(10):
                await stores.sessions.turn_written.wait()
            session = await stores.sessions.load("CA1")
            assert session is not None and len(session.turns) >= 1  # being kept
            asked = call.llm_requests()
            await call.say("Please stop recording.")
            await call.wait_for(lambda: len(call.consents()) == 2)
            await call.wait_for(lambda: prompts.withdrawn in call.spoken())
            assert await stores.sessions.load("CA1") is None  # deleted at once
            await call.turn("and on sundays", "Closed on Sundays.")  # the call goes on
        assert call.consents()[-1] == RetentionConsentFrame(granted=False, source="withdrawn")
        assert call.llm_requests() == asked + 1  # "stop recording" was not sent to the LLM
        assert await call.stored() == (None, None)  # no session, no transcript row
        assert await stores.transcripts.call_ids() == []
        record = await stores.consents.get(US_CALLER)
        assert record is not None and not record.granted  # remembered for the next calls

        # The next call under a notice policy keeps the withdrawal: nothing kept.
        async with LiveCall(stores, "CA2", US_CALLER, policy="notice", prompts=prompts) as call:
            await call.wait_for(call.consents)
            await call.turn("hello", "Hi.")
        assert call.consents() == [RetentionConsentFrame(granted=False, source="stored")]
        assert await call.stored() == (None, None)


async def test_a_stored_choice_expires_and_is_asked_again(tmp_path: Path) -> None:
    prompts = ConsentPrompts.for_locale("en-GB")
    async with Stores(tmp_path) as stores:
        await stores.consents.record(DE_CALLER, True, call_id="CAold")
        decided = (await stores.consents.get(DE_CALLER)).decided_at  # type: ignore[union-attr]

        def gate(days: float) -> dict[str, Any]:
            return {"ttl_s": 365 * DAY, "wall_clock": lambda: decided + days * DAY}

        async with LiveCall(stores, "CA1", DE_CALLER, prompts=prompts, **gate(364)) as call:
            await call.wait_for(call.consents)
        assert call.consents() == [RetentionConsentFrame(granted=True, source="stored")]
        assert call.spoken() == [GREETING]

        async with LiveCall(stores, "CA2", DE_CALLER, prompts=prompts, **gate(366)) as call:
            await call.wait_for(lambda: prompts.prompt in call.spoken())
            await call.say("yes")
            await call.wait_for(call.consents)
        assert call.spoken()[0] == prompts.prompt  # asked again
        renewed = await stores.consents.get(DE_CALLER)
        assert renewed is not None and renewed.call_id == "CA2" and renewed.decided_at > decided
