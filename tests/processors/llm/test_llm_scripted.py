"""ScriptedLLMService: intents to replies and tool calls, through the shared LLM path (virtual clock)."""

from __future__ import annotations

from typing import Any

from voxpipe.frames import (
    EndFrame,
    ErrorFrame,
    Frame,
    FrameDirection,
    FunctionCallInProgressFrame,
    FunctionCallResultFrame,
    InterruptionFrame,
    LLMMessagesFrame,
    LLMResponseEndFrame,
    LLMTextFrame,
    MetricsFrame,
    TTSSpeakFrame,
)
from voxpipe.processors.llm import Intent, ScriptedLLMService
from voxpipe.testing import Sleep, run_frames

UP = FrameDirection.UPSTREAM


def user(text: str) -> LLMMessagesFrame:
    return LLMMessagesFrame([{"role": "user", "content": text}])


def replies(frames: list[Frame]) -> list[str]:
    """The text of each response, in order."""
    out: list[str] = []
    current: list[str] | None = None
    for f in frames:
        if type(f).__name__ == "LLMResponseStartFrame":
            current = []
        elif isinstance(f, LLMTextFrame | TTSSpeakFrame) and current is not None:
            current.append(f.text)
        elif isinstance(f, LLMResponseEndFrame) and current is not None:
            out.append("".join(current))
            current = None
    return out


def bot(**kwargs: Any) -> ScriptedLLMService:
    kwargs.setdefault("fallback_text", "Sorry, give me a moment.")
    kwargs.setdefault("first_token_timeout", 0.8)
    kwargs.setdefault("retries", 1)
    return ScriptedLLMService(
        [
            Intent("hours", keywords=["opening hours", "open"], reply="We're open nine to five."),
            Intent(
                "weather",
                patterns=[r"weather in (?P<city>[a-z]+)"],
                reply="Let me check {city}.",
                tool="get_weather",
                after_tool="It's {summary} in {city}.",
            ),
            Intent(
                "transfer",
                keywords=["human", "agent"],
                reply="Connecting you now.",
                tool="escalate_to_human",
                arguments=lambda m: {"reason": "caller asked", "summary": m.text},
            ),
        ],
        default_reply="Sorry, I didn't catch that.",
        greeting="Hello! How can I help?",
        **kwargs,
    )


async def test_intents_map_to_replies_first_match_wins() -> None:
    llm = bot()
    r = await run_frames(
        [llm],
        [
            user("When are you OPEN today?"),
            user("What are your opening hours?"),
            user("Blah blah"),
            user("reopen"),  # a keyword matches whole words only
            LLMMessagesFrame([{"role": "system", "content": "Greet the caller."}]),
        ],
    )
    assert replies(r.downstream) == [
        "We're open nine to five.",
        "We're open nine to five.",
        "Sorry, I didn't catch that.",
        "Sorry, I didn't catch that.",
        "Hello! How can I help?",
    ]
    # Streamed as fragments like a real model, so the TTS sees the same shape of input.
    assert len([f for f in r.downstream if isinstance(f, LLMTextFrame)]) > 5
    assert not r.upstream


async def test_tool_call_goes_through_the_shared_tool_path() -> None:
    llm = bot()
    seen: list[str] = []

    async def get_weather(city: str) -> dict[str, Any]:
        seen.append(city)
        return {"summary": "sunny", "temperature": 21}

    llm.register_function(
        "get_weather", get_weather, {"type": "object", "properties": {"city": {"type": "string"}}}
    )
    r = await run_frames([llm], [user("what's the weather in paris")])
    assert seen == ["paris"]
    (progress,) = r.of_type(FunctionCallInProgressFrame)
    (result,) = r.of_type(FunctionCallResultFrame)
    assert progress.arguments == {"city": "paris"}
    assert result.result == {"summary": "sunny", "temperature": 21}
    assert replies(r.downstream) == ["Let me check paris.It's sunny in paris."]
    names = [type(f).__name__ for f in r.downstream]
    assert names.index("FunctionCallInProgressFrame") < names.index("FunctionCallResultFrame")


async def test_tool_arguments_from_a_callable_and_sync_handlers() -> None:
    llm = bot()
    got: list[dict[str, Any]] = []
    llm.register_function("escalate_to_human", lambda **kw: got.append(kw) or "transferring")
    r = await run_frames([llm], [user("I want a human please")])
    assert got == [{"reason": "caller asked", "summary": "I want a human please"}]
    assert r.of_type(FunctionCallResultFrame)[0].result == "transferring"
    assert replies(r.downstream) == ["Connecting you now."]


async def test_slow_model_times_out_retries_then_speaks_fallback() -> None:
    llm = bot(first_token_delay=2.0)
    r = await run_frames([llm], [user("opening hours?")])
    assert replies(r.downstream) == ["Sorry, give me a moment."]
    assert r.of_type(TTSSpeakFrame)[0].text == "Sorry, give me a moment."
    (error,) = r.of_type(ErrorFrame, UP)
    assert "failed 2 time(s)" in error.error and "no first token within 0.8 s" in error.error
    # Two attempts of 0.8 s each on the virtual clock, a jittered 0.1-0.2 s backoff between
    # them (the default: base 0.2 s, half of it jitter), then the fallback.
    end = next(i for i, f in enumerate(r.downstream) if isinstance(f, LLMResponseEndFrame))
    assert 1.7 <= r.downstream_times[end] - r.downstream_times[0] < 1.8


async def test_ttfb_metric_on_the_pipeline_clock() -> None:
    r = await run_frames([bot(first_token_delay=0.3)], [user("open?")])
    (ttfb,) = [m for m in r.of_type(MetricsFrame) if m.metric == "ttfb"]
    assert abs(ttfb.value - 0.3) < 1e-6 and ttfb.model == "scripted"


async def test_interruption_stops_the_reply_and_drops_queued_requests() -> None:
    llm = bot(token_delay=0.1)
    r = await run_frames(
        [llm],
        [
            user("what are your opening hours"),
            user("blah"),  # queued behind the first reply: stale after the interruption
            Sleep(0.25),
            InterruptionFrame(),
            user("open?"),
        ],
    )
    out = r.downstream
    cut = next(i for i, f in enumerate(out) if isinstance(f, InterruptionFrame))
    before = "".join(f.text for f in out[:cut] if isinstance(f, LLMTextFrame))
    assert before == "We're open nine"
    assert not any(isinstance(f, LLMResponseEndFrame) for f in out[:cut])
    assert replies(out[cut:]) == ["We're open nine to five."]
    assert isinstance(out[-1], EndFrame)


async def test_tool_that_must_finish_survives_an_interruption() -> None:
    llm = bot()
    booked: list[str] = []

    async def escalate_to_human(reason: str, summary: str) -> str:
        await llm.clock.sleep(0.5)
        booked.append(reason)
        return "transfer started"

    llm.register_function("escalate_to_human", escalate_to_human, cancel_on_interruption=False)
    r = await run_frames([llm], [user("agent please"), Sleep(0.2), InterruptionFrame(), Sleep(0.5)])
    assert booked == ["caller asked"]
    results = r.of_type(FunctionCallResultFrame)
    assert [f.result for f in results] == ["transfer started"]
    # The reply itself was interrupted: the model is not run again after the result.
    out = r.downstream
    cut = next(i for i, f in enumerate(out) if isinstance(f, InterruptionFrame))
    assert not any(isinstance(f, LLMResponseEndFrame) for f in out[cut:])


async def test_interruptible_tool_is_cancelled_by_an_interruption() -> None:
    llm = bot()
    finished: list[bool] = []

    async def get_weather(city: str) -> str:
        await llm.clock.sleep(1.0)
        finished.append(True)
        return "rain"

    llm.register_function("get_weather", get_weather)
    r = await run_frames([llm], [user("weather in oslo"), Sleep(0.2), InterruptionFrame()])
    assert finished == [] and not r.of_type(FunctionCallResultFrame)


async def test_extractive_summary_is_deterministic() -> None:
    llm = bot()
    messages = [
        {"role": "user", "content": "My name is Ann. I want a table."},
        {"role": "assistant", "content": "Hello Ann! For how many?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "book", "arguments": "{}"}}
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": '{"ok": true}'},
    ]
    one = await llm.summarize(messages, "Earlier: a call about dinner.")
    assert one == await llm.summarize(messages, "Earlier: a call about dinner.")
    assert one == (
        "Earlier: a call about dinner. Caller: My name is Ann. Assistant: Hello Ann! "
        'Called book. Result: {"ok": true}'
    )
    long = await llm.summarize([{"role": "user", "content": "word " * 50 + "."}] * 20, None)
    assert len(long) <= llm.summary_max_chars
