"""ContinuityKeeper, ResumableContext and StartOverDetector: what a call saves for a callback,
and what the callback's LLM requests carry before and after the caller is verified."""

from __future__ import annotations

import json
from typing import Any

from voxpipe.config.settings import VoxpipeSettings
from voxpipe.frames import (
    BotStartedSpeakingFrame,
    BotStoppedSpeakingFrame,
    CancelFrame,
    FunctionCallInProgressFrame,
    FunctionCallResultFrame,
    LLMMessagesFrame,
    LLMResponseEndFrame,
    LLMResponseStartFrame,
    PauseRecordingFrame,
    ResumeRecordingFrame,
    RetentionConsentFrame,
    TranscriptionFrame,
    TTSTextFrame,
)
from voxpipe.processors.aggregators import UserContextAggregator
from voxpipe.processors.aggregators.assistant import AssistantContextAggregator
from voxpipe.processors.aggregators.continuity import (
    ContinuityKeeper,
    StartOverDetector,
    trim_to_turns,
)
from voxpipe.processors.aggregators.resume import (
    WITHHELD_TEXT,
    PriorConversation,
    ResumableContext,
)
from voxpipe.state.continuity import (
    CallerContinuity,
    MemoryContinuityStore,
    PriorMessage,
    ResumableConversation,
)
from voxpipe.testing import Sleep, run_frames

NUMBER = "+447700900123"
SETTINGS = VoxpipeSettings(_env_file=None, session_ttl_s=600)  # type: ignore[call-arg]


def user_turn(text: str) -> list[Any]:
    # Finals with no VAD around them: the aggregator sends them after its idle delay.
    return [TranscriptionFrame(text), Sleep(1.0)]


def reply(text: str) -> list[Any]:
    return [
        LLMResponseStartFrame(),
        BotStartedSpeakingFrame(),
        TTSTextFrame(text),
        LLMResponseEndFrame(),
        BotStoppedSpeakingFrame(),
        Sleep(0.1),
    ]


def tool(call_id: str, name: str, arguments: dict[str, Any], result: Any) -> list[Any]:
    return [
        LLMResponseStartFrame(),
        FunctionCallInProgressFrame(call_id, name, arguments),
        FunctionCallResultFrame(call_id, name, arguments, result),
        LLMResponseEndFrame(),
        Sleep(0.1),
    ]


FIRST_CALL = [
    *user_turn("I need help with my order"),
    *reply("Sure, what is the order number?"),
    *user_turn("It is A 1 2 3"),
    *tool("call_1", "order_status", {"order": "A123"}, {"status": "out for delivery"}),
    *reply("Your order is out for delivery and arrives tomorrow."),
]


def digits_sensitive(text: str) -> bool:
    return any(c.isdigit() for c in text)


class Call:
    """One call's processors around a shared continuity store."""

    def __init__(
        self,
        store: MemoryContinuityStore,
        call_id: str,
        caller: str = NUMBER,
        *,
        require_consent: bool = False,
    ) -> None:
        self.store = store
        self.continuity = CallerContinuity.for_call(SETTINGS, store, caller, call_id)
        self.require_consent = require_consent
        self.prior: PriorConversation | None = None
        self.context = ResumableContext("You are a support agent.")
        self.keeper: ContinuityKeeper | None = None

    async def begin(self) -> PriorConversation | None:
        earlier = await self.continuity.begin()
        self.prior = PriorConversation(earlier) if earlier else None
        self.context.prior = self.prior
        return self.prior

    def processors(self, *, start_over: bool = False) -> list[Any]:
        self.keeper = ContinuityKeeper(
            self.context,
            self.continuity,
            require_consent=self.require_consent,
            is_sensitive=digits_sensitive,
            topic_of=lambda ms: "order" if "order" in json.dumps(ms) else None,
            locale="en-GB",
        )
        front = [StartOverDetector(self.keeper, ["start over"])] if start_over else []
        return [
            *front,
            UserContextAggregator(self.context),
            AssistantContextAggregator(self.context),
            self.keeper,
        ]

    async def run(self, frames: list[Any], **kw: Any) -> list[list[dict[str, Any]]]:
        result = await run_frames(self.processors(**kw), frames)
        return [f.messages for f in result.of_type(LLMMessagesFrame)]


async def peek(store: MemoryContinuityStore, call_id: str) -> ResumableConversation | None:
    """What a callback from NUMBER would continue from (its lease released at once)."""
    handle = CallerContinuity.for_call(SETTINGS, store, NUMBER, call_id)
    try:
        return await handle.begin()
    finally:
        await handle.end()


def text_of(messages: list[dict[str, Any]]) -> str:
    return json.dumps(messages)


async def first_call(store: MemoryContinuityStore) -> None:
    call = Call(store, "CA1")
    assert await call.begin() is None
    await call.run(FIRST_CALL)


async def test_the_saved_conversation_marks_tool_results_and_read_backs_sensitive() -> None:
    store = MemoryContinuityStore()
    await first_call(store)
    earlier = await peek(store, "CA2")
    assert earlier is not None
    marks = [(m.message["role"], m.message.get("content"), m.sensitive) for m in earlier.messages]
    assert marks == [
        ("user", "I need help with my order", False),
        ("assistant", "Sure, what is the order number?", False),
        ("user", "It is A 1 2 3", True),  # the bot's pattern: digits
        ("assistant", None, True),  # the tool call (its arguments name the order)
        ("tool", '{"status": "out for delivery"}', True),  # anything a tool returned
        ("assistant", "Your order is out for delivery and arrives tomorrow.", True),  # read back
    ]
    assert earlier.topic == "order" and earlier.locale == "en-GB"
    assert earlier.consent == "not_required"


async def test_a_callback_sends_the_earlier_turns_and_withholds_details_until_verified() -> None:
    store = MemoryContinuityStore()
    await first_call(store)

    call = Call(store, "CA2")
    prior = await call.begin()
    assert prior is not None and prior.topic == "order"
    requests = await call.run([*user_turn("yes please"), *reply("Can I have your PIN?")])
    first = requests[0]
    sent = text_of(first)
    # The earlier turns are there, the topic is named, and the call is marked unverified...
    assert "I need help with my order" in sent
    assert "Sure, what is the order number?" in sent
    assert "unverified" in first[0]["content"] and "about order" in first[0]["content"]
    # ...but nothing a tool returned, nor anything read back from it or marked sensitive.
    assert "out for delivery" not in sent
    assert "A123" not in sent and "A 1 2 3" not in sent
    assert sent.count(WITHHELD_TEXT) == 4
    # This call's own words follow the earlier ones.
    assert first[-1] == {"role": "user", "content": "yes please"}
    # A valid OpenAI list: the withheld tool call keeps its result right after it.
    roles = [m["role"] for m in first]
    assert roles == [
        "system",
        "user",
        "assistant",
        "user",
        "assistant",
        "tool",
        "assistant",
        "user",
    ]

    # The bot's verification hook passes: the next request carries the details.
    prior.verify()
    verified = text_of(call.context.window_messages())
    assert "out for delivery" in verified and "A123" in verified
    assert WITHHELD_TEXT not in verified


async def test_the_callbacks_conversation_is_saved_with_the_earlier_one_for_the_next_callback() -> (
    None
):
    store = MemoryContinuityStore()
    await first_call(store)
    call = Call(store, "CA2")
    await call.begin()
    await call.run([*user_turn("is it still coming tomorrow"), *reply("It is.")])
    third = await peek(store, "CA3")
    assert third is not None and third.call_id == "CA2"
    said = [m.message.get("content") for m in third.messages]
    assert said[0] == "I need help with my order"
    assert said[-2:] == ["is it still coming tomorrow", "It is."]
    # Sensitivity survives the round trip: still withheld from an unverified third call.
    assert [m.sensitive for m in third.messages if m.message["role"] == "tool"] == [True]


async def test_a_caller_who_says_start_over_gets_a_fresh_context() -> None:
    store = MemoryContinuityStore()
    await first_call(store)
    call = Call(store, "CA2")
    assert await call.begin() is not None
    requests = await call.run(
        [*user_turn("no, let's start over please"), *reply("Of course, how can I help?")],
        start_over=True,
    )
    sent = text_of(requests[0])
    assert "I need help with my order" not in sent and "unverified" not in sent
    # Gone from the store too: the next callback does not bring it back.
    next_call = await peek(store, "CA3")
    assert next_call is not None  # this call's own conversation was saved instead
    assert "I need help with my order" not in json.dumps(next_call.to_dict())


async def test_without_consent_where_required_nothing_is_left_to_continue_from() -> None:
    store = MemoryContinuityStore()
    # Consent required and never given (no answer): nothing saved.
    call = Call(store, "CA1", require_consent=True)
    await call.begin()
    await call.run(FIRST_CALL)
    assert await peek(store, "CA2") is None

    # Declined: nothing saved either.
    call = Call(store, "CA3", require_consent=True)
    await call.begin()
    await call.run([RetentionConsentFrame(granted=False, source="dtmf"), *FIRST_CALL])
    assert await peek(store, "CA4") is None

    # Granted: saved, and a later decline forgets it.
    call = Call(store, "CA5", require_consent=True)
    await call.begin()
    await call.run([RetentionConsentFrame(granted=True, source="dtmf"), *FIRST_CALL])
    resumed = Call(store, "CA6", require_consent=True)
    earlier = await resumed.begin()
    assert earlier is not None and earlier.conversation.consent == "dtmf"
    await resumed.run([RetentionConsentFrame(granted=False, source="dtmf")])
    assert await peek(store, "CA7") is None


async def test_what_is_said_during_a_payment_pause_is_not_saved() -> None:
    store = MemoryContinuityStore()
    call = Call(store, "CA1")
    await call.begin()
    await call.run(
        [
            *user_turn("I want to pay my bill"),
            *reply("Go ahead."),
            PauseRecordingFrame(),
            *user_turn("my card expires in may"),
            *reply("Thank you."),
            ResumeRecordingFrame(),
            *user_turn("that was all"),
            *reply("Bye."),
        ]
    )
    earlier = await peek(store, "CA2")
    assert earlier is not None
    said = [m.message.get("content") for m in earlier.messages]
    assert said == ["I want to pay my bill", "Go ahead.", "that was all", "Bye."]


async def test_a_dropped_call_is_saved_on_cancel() -> None:
    store = MemoryContinuityStore()
    call = Call(store, "CA1")
    await call.begin()
    await run_frames(
        call.processors(),
        [*user_turn("I need help with my order"), CancelFrame(reason="caller hung up")],
        send_end=False,
    )
    earlier = await peek(store, "CA2")
    assert earlier is not None
    assert earlier.messages[0].message["content"] == "I need help with my order"


async def test_a_withheld_number_saves_nothing() -> None:
    store = MemoryContinuityStore()
    call = Call(store, "CA1", caller="anonymous")
    assert await call.begin() is None
    await call.run(FIRST_CALL)
    assert store._data == {}


def test_trimming_keeps_whole_turns_and_valid_tool_pairs() -> None:
    msgs = [
        PriorMessage({"role": "user", "content": "a"}),
        PriorMessage({"role": "assistant", "content": "b"}),
        PriorMessage({"role": "user", "content": "c"}),
        PriorMessage(
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [{"id": "x", "type": "function", "function": {"name": "f"}}],
            },
            sensitive=True,
        ),
        PriorMessage({"role": "tool", "tool_call_id": "orphan", "content": "?"}),
        PriorMessage({"role": "user", "content": "d"}),
    ]
    out = trim_to_turns(msgs, 2)
    assert [m.message["role"] for m in out] == ["user", "assistant", "tool", "user"]
    assert out[2].message["tool_call_id"] == "x" and out[2].sensitive  # filled in, withheld


def test_prior_conversation_without_a_system_prompt_still_leads_with_the_note() -> None:
    conv = ResumableConversation(
        call_id="CA1",
        saved_at=0.0,
        messages=[PriorMessage({"role": "user", "content": "hi"})],
        summary="The caller's order A123 is late.",
        escalation={"escalated": True, "reason": "caller asked for a person"},
    )
    prior = PriorConversation(conv, clock=lambda: 120.0)
    context = ResumableContext(None, prior=prior)
    msgs = context.window_messages()
    assert msgs[0]["role"] == "system" and "2 minute(s) ago" in msgs[0]["content"]
    assert "caller asked for a person" in msgs[0]["content"]
    assert "A123" not in msgs[0]["content"]  # the summary is sensitive
    prior.verify()
    assert "A123" in context.window_messages()[0]["content"]
