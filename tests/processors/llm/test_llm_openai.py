"""OpenAILLMService against FakeOpenAI over a real socket (real clock, small latencies)."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest

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
from voxpipe.pipelines import Pipeline, PipelineTask
from voxpipe.pipelines.clock import Clock
from voxpipe.processors.base import FrameProcessor
from voxpipe.processors.llm.openai import OpenAILLMService
from voxpipe.testing import run_frames
from voxpipe.testing.fakes import FakeOpenAI, FakeReply

UP = FrameDirection.UPSTREAM
FALLBACK = "Sorry, one moment please."


def ask(text: str = "Hi there") -> LLMMessagesFrame:
    return LLMMessagesFrame(
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": text}]
    )


_TRANSPORT = {"value": "auto"}


@pytest.fixture(autouse=True, params=["aiohttp", "sdk"])
def stream_transport(request: pytest.FixtureRequest) -> Any:
    """Every test runs on both ways of streaming a reply: the lean path and the SDK's."""
    _TRANSPORT["value"] = request.param
    yield request.param
    _TRANSPORT["value"] = "auto"


def make_llm(fake: FakeOpenAI, **kwargs: Any) -> OpenAILLMService:
    # Generous unless a test is about timeouts: the machine running CI may be busy.
    kwargs.setdefault("first_token_timeout", 2.0)
    kwargs.setdefault("stream_transport", _TRANSPORT["value"])
    return OpenAILLMService(
        api_key="test-key",
        base_url=fake.base_url,
        model="gpt-4o-mini",
        fallback_text=FALLBACK,
        retries=1,
        **kwargs,
    )


def spoken(frames: list[Frame]) -> str:
    return "".join(f.text for f in frames if isinstance(f, LLMTextFrame))


def kinds(frames: list[Frame]) -> list[str]:
    return [type(f).__name__ for f in frames if not isinstance(f, MetricsFrame | EndFrame)]


async def test_happy_path_streams_a_reply_with_start_end_and_ttfb() -> None:
    async with FakeOpenAI(replies=["Hello there! How can I help?"], first_token_delay=0.02) as fake:
        llm = make_llm(fake)
        r = await run_frames([llm], [ask()], clock=Clock())

    assert spoken(r.downstream) == "Hello there! How can I help?"
    k = kinds(r.downstream)
    assert k[0] == "LLMResponseStartFrame" and k[-1] == "LLMResponseEndFrame"
    assert k.count("LLMTextFrame") == 6  # streamed fragment by fragment, not in one piece
    assert not r.upstream, r.upstream
    body = fake.last_request
    assert body["model"] == "gpt-4o-mini"
    assert body["stream"] is True and body["max_tokens"] == 120
    assert body["stream_options"] == {"include_usage": True}
    assert body["messages"][-1] == {"role": "user", "content": "Hi there"}
    assert "tools" not in body
    assert fake.requests[0].headers["authorization"] == "Bearer test-key"
    ttfb = [m for m in r.of_type(MetricsFrame) if m.metric == "ttfb"]
    assert len(ttfb) == 1 and 0.015 <= ttfb[0].value < 2.0
    assert ttfb[0].model == "gpt-4o-mini"
    usage = {m.metric: m.value for m in r.of_type(MetricsFrame) if m.metric.endswith("_tokens")}
    assert usage["completion_tokens"] == 6


async def test_max_tokens_is_sent_and_honoured() -> None:
    async with FakeOpenAI(replies=["one two three four five six"], first_token_delay=0.0) as fake:
        r = await run_frames([make_llm(fake, max_tokens=3)], [ask()], clock=Clock())
    assert fake.last_request["max_tokens"] == 3
    assert spoken(r.downstream) == "one two three"


async def test_frames_queued_behind_a_reply_keep_their_order() -> None:
    async with FakeOpenAI(replies=["First reply."], first_token_delay=0.05) as fake:
        r = await run_frames([make_llm(fake)], [ask(), TTSSpeakFrame("Said after.")], clock=Clock())
    k = kinds(r.downstream)
    assert k.index("TTSSpeakFrame") > k.index("LLMResponseEndFrame")


@pytest.mark.parametrize(
    ("reply", "words"),
    [
        (FakeReply.rate_limited(retry_after=2), ["429", "rate limited", "retry-after 2"]),
        (FakeReply.http_error(400, "Invalid 'messages'.", type="invalid_request_error"), ["400"]),
    ],
)
async def test_provider_error_reports_upstream_speaks_fallback_and_call_survives(
    reply: FakeReply, words: list[str]
) -> None:
    async with FakeOpenAI(replies=[reply, "Back again."], first_token_delay=0.0) as fake:
        r = await run_frames([make_llm(fake)], [ask(), ask("Still there?")], clock=Clock())
    errors = r.of_type(ErrorFrame, UP)
    assert len(errors) == 1 and not errors[0].fatal
    for w in words:
        assert w in errors[0].error
    # No retry for a client error: it would not clear within the caller's patience.
    assert fake.request_count == 2
    assert [f.text for f in r.of_type(TTSSpeakFrame)] == [FALLBACK]
    assert spoken(r.downstream) == "Back again."
    assert kinds(r.downstream) == [
        "LLMResponseStartFrame",
        "TTSSpeakFrame",
        "LLMResponseEndFrame",
        "LLMResponseStartFrame",
        "LLMTextFrame",
        "LLMTextFrame",
        "LLMResponseEndFrame",
    ]


async def test_bad_api_key_error_says_what_to_fix() -> None:
    async with FakeOpenAI(api_key="right-key", replies=["never"]) as fake:
        llm = OpenAILLMService(api_key="wrong-key", base_url=fake.base_url, fallback_text=FALLBACK)
        r = await run_frames([llm], [ask()], clock=Clock())
    (error,) = r.of_type(ErrorFrame, UP)
    assert "401" in error.error and "OPENAI_API_KEY" in error.error
    assert "wrong-key" not in error.error
    assert [f.text for f in r.of_type(TTSSpeakFrame)] == [FALLBACK]


async def test_server_error_is_retried_once_then_falls_back() -> None:
    async with FakeOpenAI(
        replies=[FakeReply.server_error(500), FakeReply.server_error(503), "fine"],
        first_token_delay=0.0,
    ) as fake:
        r = await run_frames([make_llm(fake)], [ask()], clock=Clock())
    assert fake.request_count == 2
    (error,) = r.of_type(ErrorFrame, UP)
    assert "503" in error.error
    assert [f.text for f in r.of_type(TTSSpeakFrame)] == [FALLBACK]

    async with FakeOpenAI(replies=[FakeReply.server_error(502), "Recovered."]) as fake:
        r = await run_frames([make_llm(fake)], [ask()], clock=Clock())
    assert fake.request_count == 2 and spoken(r.downstream) == "Recovered."
    assert not r.of_type(ErrorFrame, UP) and not r.of_type(TTSSpeakFrame)


async def test_slow_first_token_times_out_retries_once_then_speaks_fallback() -> None:
    slow = FakeReply.say("Too late.", first_token_delay=5.0)
    async with FakeOpenAI(replies=[slow, slow], first_token_delay=0.0) as fake:
        # Long enough that a busy CI machine still gets each request to the server in time.
        llm = make_llm(fake, first_token_timeout=0.5)
        started = time.monotonic()
        r = await run_frames([llm], [ask()], clock=Clock())
        elapsed = time.monotonic() - started
        # Each timed-out request was abandoned: the server saw the client go away.
        await fake.wait_for(lambda: all(q.client_disconnected for q in fake.requests), 2.0)
    assert fake.request_count == 2
    assert 1.0 <= elapsed < 3.5
    assert not any(q.completed for q in fake.requests)
    assert spoken(r.downstream) == ""
    assert [f.text for f in r.of_type(TTSSpeakFrame)] == [FALLBACK]
    assert kinds(r.downstream) == ["LLMResponseStartFrame", "TTSSpeakFrame", "LLMResponseEndFrame"]
    (error,) = r.of_type(ErrorFrame, UP)
    assert "no first token within 0.5 s" in error.error


async def test_slow_first_token_then_a_quick_retry_answers() -> None:
    async with FakeOpenAI(
        replies=[FakeReply.hanging(before_headers=True), FakeReply.say("Quick now.")],
        first_token_delay=0.01,
    ) as fake:
        r = await run_frames([make_llm(fake, first_token_timeout=0.4)], [ask()], clock=Clock())
        await fake.wait_for(lambda: fake.requests[0].client_disconnected, 2.0)
    assert spoken(r.downstream) == "Quick now."
    assert not r.of_type(TTSSpeakFrame) and not r.of_type(ErrorFrame, UP)


class InterruptAfter(FrameProcessor):
    """Asks for an interruption once ``n`` text fragments have passed (a caller barging in)."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.n = n
        self.seen = 0

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await self.push_frame(frame, direction)
        if isinstance(frame, LLMTextFrame):
            self.seen += 1
            if self.seen == self.n:
                await self.request_interruption("caller barged in")


async def test_interruption_mid_reply_closes_the_stream() -> None:
    words = " ".join(f"word{i}" for i in range(60))
    async with FakeOpenAI(replies=[words], first_token_delay=0.0, chunk_delay=0.01) as fake:
        llm = make_llm(fake)
        # Driven by hand, with no end queued behind the reply: the interruption alone must
        # stop the stream (here it is asked for from inside the reply's own push chain).
        task = PipelineTask(Pipeline([llm, InterruptAfter(3)]), clock=Clock())
        out: list[Frame] = []
        task.on_downstream(out.append)
        runner = asyncio.create_task(task.run())
        await task.queue_frame(ask())
        await fake.wait_for(lambda: fake.requests and fake.requests[0].client_disconnected, 2.0)
        assert not fake.requests[0].completed
        await task.stop_when_done()
        await asyncio.wait_for(runner, 5.0)
    cut = next(i for i, f in enumerate(out) if isinstance(f, InterruptionFrame))
    assert not any(isinstance(f, LLMTextFrame | LLMResponseEndFrame) for f in out[cut:])
    assert len([f for f in out[:cut] if isinstance(f, LLMTextFrame)]) == 3
    assert llm.owned_tasks == 0


async def test_stream_cut_mid_reply_keeps_what_was_said_and_reports() -> None:
    reply = FakeReply.cut_off("This reply will be cut in the middle of it.", after_chunks=3)
    async with FakeOpenAI(replies=[reply], first_token_delay=0.0) as fake:
        r = await run_frames([make_llm(fake)], [ask()], clock=Clock())
    assert spoken(r.downstream) == "This reply will"
    (error,) = r.of_type(ErrorFrame, UP)
    assert "cut off" in error.error
    assert not r.of_type(TTSSpeakFrame)  # part of the reply was said: no fallback line on top
    assert isinstance(r.downstream[-2], LLMResponseEndFrame)


async def test_stream_that_stalls_after_its_first_token_is_cut_there() -> None:
    reply = FakeReply.say("Hello and then silence.", chunk_delay=5.0)
    async with FakeOpenAI(replies=[reply], first_token_delay=0.0) as fake:
        llm = make_llm(fake, stall_timeout=0.15)
        r = await run_frames([llm], [ask()], clock=Clock())
        await fake.wait_for(lambda: fake.requests[0].client_disconnected, 2.0)
    assert spoken(r.downstream) == "Hello"
    (error,) = r.of_type(ErrorFrame, UP)
    assert "stalled for 0.15 s" in error.error
    assert isinstance(r.downstream[-2], LLMResponseEndFrame)


async def test_tool_call_round_trip() -> None:
    calls: list[dict[str, Any]] = []
    replies = [
        FakeReply.call("get_weather", {"city": "Paris", "unit": "celsius"}),
        "It is sunny and 21 degrees in Paris.",
    ]
    async with FakeOpenAI(replies=replies, first_token_delay=0.0) as fake:
        llm = make_llm(fake)

        @llm.function(
            {
                "type": "object",
                "properties": {"city": {"type": "string"}, "unit": {"type": "string"}},
                "required": ["city"],
            }
        )
        async def get_weather(city: str, unit: str = "celsius") -> dict[str, Any]:
            """Current weather in a city."""
            calls.append({"city": city, "unit": unit})
            return {"summary": "sunny", "temperature": 21}

        r = await run_frames([llm], [ask("Weather in Paris?")], clock=Clock())

    assert calls == [{"city": "Paris", "unit": "celsius"}]
    first, second = fake.requests[0].json, fake.requests[1].json
    assert first["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Current weather in a city.",
                "parameters": {
                    "type": "object",
                    "properties": {"city": {"type": "string"}, "unit": {"type": "string"}},
                    "required": ["city"],
                },
            },
        }
    ]
    (progress,) = r.of_type(FunctionCallInProgressFrame)
    (result,) = r.of_type(FunctionCallResultFrame)
    assert progress.function_name == "get_weather"
    assert progress.arguments == {"city": "Paris", "unit": "celsius"}
    assert result.tool_call_id == progress.tool_call_id and result.result["summary"] == "sunny"
    # The model was run again with its call and the result, in OpenAI's shape.
    call_msg, tool_msg = second["messages"][-2:]
    assert call_msg["role"] == "assistant"
    assert call_msg["tool_calls"][0]["id"] == progress.tool_call_id
    assert json.loads(call_msg["tool_calls"][0]["function"]["arguments"])["city"] == "Paris"
    assert tool_msg == {
        "role": "tool",
        "tool_call_id": progress.tool_call_id,
        "content": json.dumps({"summary": "sunny", "temperature": 21}),
    }
    assert spoken(r.downstream) == "It is sunny and 21 degrees in Paris."
    k = kinds(r.downstream)
    assert k[0] == "LLMResponseStartFrame" and k.count("LLMResponseStartFrame") == 1
    assert k.index("FunctionCallResultFrame") < k.index("LLMTextFrame")


async def test_failing_and_unknown_tools_report_errors_to_the_model() -> None:
    replies = [
        FakeReply(
            tool_calls=[
                FakeReply.call("explode").tool_calls[0],
                FakeReply.call("no_such_tool").tool_calls[0],
            ]
        ),
        "Something went wrong with that.",
    ]
    async with FakeOpenAI(replies=replies, first_token_delay=0.0) as fake:
        llm = make_llm(fake)

        async def explode() -> None:
            raise RuntimeError("database down")

        llm.register_function("explode", explode)
        r = await run_frames([llm], [ask()], clock=Clock())
    results = {f.function_name: f.result for f in r.of_type(FunctionCallResultFrame)}
    assert "database down" in results["explode"]["error"]
    assert "unknown function" in results["no_such_tool"]["error"]
    tool_msgs = [m for m in fake.requests[1].json["messages"] if m["role"] == "tool"]
    assert len(tool_msgs) == 2
    assert spoken(r.downstream) == "Something went wrong with that."


async def test_summarize_is_one_non_streaming_request() -> None:
    async with FakeOpenAI(replies=["The caller booked a table for two."]) as fake:
        llm = make_llm(fake)
        text = await llm.summarize(
            [
                {"role": "user", "content": "A table for two please."},
                {"role": "assistant", "content": "Booked."},
            ],
            "The caller is Ann.",
        )
        await llm.cleanup()
    assert text == "The caller booked a table for two."
    body = fake.last_request
    assert not body.get("stream")
    assert "Caller: A table for two please." in body["messages"][-1]["content"]
    assert "The caller is Ann." in body["messages"][-1]["content"]


def test_missing_key_for_openai_says_what_to_do() -> None:
    with pytest.raises(ValueError, match="OPENAI_API_KEY is not set"):
        OpenAILLMService(api_key="", base_url="https://api.openai.com/v1", model="gpt-4o-mini")
    # A local OpenAI-compatible server needs no key.
    OpenAILLMService(api_key="", base_url="http://127.0.0.1:11434/v1", model="llama3")


def test_settings_give_the_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    from voxpipe.config.settings import get_settings

    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-env")
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
    monkeypatch.setenv("OPENAI_MODEL", "my-model")
    monkeypatch.setenv("LLM_TIMEOUT_S", "0.3")
    monkeypatch.setenv("LLM_FALLBACK_TEXT", "Hold on.")
    get_settings.cache_clear()
    try:
        llm = OpenAILLMService()
    finally:
        get_settings.cache_clear()
    assert llm.model == "my-model" and llm.first_token_timeout == 0.3
    assert llm.fallback_text == "Hold on." and llm.max_tokens == 120 and llm.retries == 1
    assert str(llm.client.base_url).startswith("http://127.0.0.1:9/v1")
    assert llm.client.api_key == "sk-from-env"


def test_the_default_model_is_gpt_4o_and_openai_model_overrides_it() -> None:
    from voxpipe.config.settings import VoxpipeSettings
    from voxpipe.processors.llm.factory import llm_from_settings

    base = {"openai_api_key": "sk-test", "openai_base_url": "http://127.0.0.1:9/v1"}
    default = llm_from_settings(VoxpipeSettings(**base))  # type: ignore[arg-type]
    chosen = llm_from_settings(VoxpipeSettings(**base, openai_model="gpt-4o-mini"))  # type: ignore[arg-type]
    assert default.model == "gpt-4o"  # the spec's choice
    assert chosen.model == "gpt-4o-mini"


def test_the_scripted_dialogs_options_do_not_reach_a_model() -> None:
    from voxpipe.config.settings import VoxpipeSettings
    from voxpipe.processors.llm.factory import llm_from_settings
    from voxpipe.processors.llm.openai import OpenAILLMService
    from voxpipe.processors.llm.scripted import ScriptedLLMService

    options = {"default_reply": "Which day?", "greeting": "Hi", "token_delay": 0.1}
    cloud = VoxpipeSettings(openai_api_key="sk-test", openai_base_url="http://127.0.0.1:9/v1")  # type: ignore[call-arg]
    assert isinstance(llm_from_settings(cloud, **options), OpenAILLMService)
    offline = llm_from_settings(VoxpipeSettings(_env_file=None), **options)  # type: ignore[call-arg]
    assert isinstance(offline, ScriptedLLMService) and offline.default_reply == "Which day?"
