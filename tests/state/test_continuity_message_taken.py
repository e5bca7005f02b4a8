"""Issue 17: a message / callback number taken (the transfer fallback) is restored when the
caller calls back within SESSION_TTL_S — on the real Redis, through the keeper and the next
call's first LLM request; the message text itself only once the caller is verified."""

from __future__ import annotations

import base64
import json
from typing import Any

from voxpipe.config.settings import VoxpipeSettings
from voxpipe.frames import (
    BotStartedSpeakingFrame,
    BotStoppedSpeakingFrame,
    LLMMessagesFrame,
    LLMResponseEndFrame,
    LLMResponseStartFrame,
    TranscriptionFrame,
    TTSTextFrame,
)
from voxpipe.pipelines.clock import Clock
from voxpipe.processors.aggregators import UserContextAggregator
from voxpipe.processors.aggregators.assistant import AssistantContextAggregator
from voxpipe.processors.aggregators.continuity import MESSAGE_NOTE, ContinuityKeeper
from voxpipe.processors.aggregators.resume import PriorConversation, ResumableContext
from voxpipe.state.continuity import CallerContinuity
from voxpipe.state.continuity_redis import RedisContinuityStore
from voxpipe.testing import Sleep, run_frames

NUMBER = "+447700900123"
KEY_B64 = base64.b64encode(bytes(range(32))).decode()


def settings(prefix: str, ttl_s: int = 600) -> VoxpipeSettings:
    return VoxpipeSettings(  # type: ignore[call-arg]
        _env_file=None, redis_key_prefix=prefix, transcript_key=KEY_B64, session_ttl_s=ttl_s
    )


def turn(said: str, answer: str) -> list[Any]:
    return [
        TranscriptionFrame(said),
        Sleep(1.0),
        LLMResponseStartFrame(),
        BotStartedSpeakingFrame(),
        TTSTextFrame(answer),
        LLMResponseEndFrame(),
        BotStoppedSpeakingFrame(),
        Sleep(0.1),
    ]


async def run_call(
    s: VoxpipeSettings,
    store: RedisContinuityStore,
    call_id: str,
    frames: list[Any],
    *,
    message: tuple[str, str] | None = None,
    clock: Any = None,
) -> tuple[PriorConversation | None, list[list[dict[str, Any]]], ResumableContext]:
    kw = {"clock": clock} if clock is not None else {}
    continuity = CallerContinuity.for_call(s, store, NUMBER, call_id, **kw)
    earlier = await continuity.begin()
    prior = PriorConversation(earlier) if earlier else None
    context = ResumableContext("You are a support agent.", prior=prior)
    keeper = ContinuityKeeper(context, continuity, locale="en-GB")
    if message is not None:  # what the bot's take_message tool does (bots/support_agent.py)
        keeper.mark_message_taken(*message)
    result = await run_frames(
        [UserContextAggregator(context), AssistantContextAggregator(context), keeper],
        frames,
        clock=Clock(),  # real time on this loop: the keeper talks to Redis over a socket
    )
    return prior, [f.messages for f in result.of_type(LLMMessagesFrame)], context


async def test_a_message_taken_is_restored_on_a_callback_within_the_ttl(
    redis_prefix: str, redis_client: Any
) -> None:
    s = settings(redis_prefix)
    store = RedisContinuityStore.from_url("redis://127.0.0.1:6379/0", key_prefix=redis_prefix)
    try:
        # Call 1: nobody could take the transfer; the bot takes a message (card number said).
        await run_call(
            s,
            store,
            "CA1",
            turn(
                "nobody is free? then tell them my card 4111 1111 1111 1111 was charged twice",
                "I have taken your message; a colleague will call you back.",
            ),
            message=("card 4111 1111 1111 1111 was charged twice", "+447700900999"),
        )
        raw = [k async for k in redis_client.scan_iter(match=f"{redis_prefix}*")]
        assert raw  # saved in the real Redis (under an HMAC key: checked in the store's tests)

        # Call 2 from the same number: the note is in the first LLM request.
        prior, requests, context = await run_call(
            s, store, "CA2", turn("hello again", "Welcome back.")
        )
        assert prior is not None
        taken = prior.conversation.notes[MESSAGE_NOTE]
        assert taken["callback_ending"] == "0999" and "4111 1111" not in taken["message"]
        system = requests[0][0]["content"]
        assert "left a message" in system and "call them back" in system and "0999" in system
        # The message text is a detail: not in the note until the bot's verification passes
        # (the caller's own earlier words follow the bot's is_sensitive rule, as any turn).
        assert "charged twice" not in system
        prior.verify()
        assert "charged twice" in context.window_messages()[0]["content"]

        # Call 3 (after CA2, which took no message): the note is carried on again.
        prior3, requests3, _ = await run_call(s, store, "CA3", turn("hi", "Hello."))
        assert prior3 is not None and MESSAGE_NOTE in prior3.conversation.notes
        assert "left a message" in requests3[0][0]["content"]
    finally:
        await store.close()


async def test_a_callback_after_the_ttl_does_not_restore_the_message(redis_prefix: str) -> None:
    s = settings(redis_prefix, ttl_s=60)
    store = RedisContinuityStore.from_url("redis://127.0.0.1:6379/0", key_prefix=redis_prefix)
    try:
        await run_call(
            s, store, "CA1", turn("call me back", "I will pass it on."), message=("call me", "")
        )
        later = [0.0]

        def clock() -> float:
            import time

            return time.time() + later[0]

        later[0] = 61.0  # the record is older than SESSION_TTL_S
        prior, requests, _ = await run_call(
            s, store, "CA2", turn("hello", "Hello, how can I help?"), clock=clock
        )
        assert prior is None
        assert "left a message" not in json.dumps(requests[0])
    finally:
        await store.close()
