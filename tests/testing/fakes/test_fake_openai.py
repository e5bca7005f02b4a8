"""FakeOpenAI against the official openai AsyncOpenAI client."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import openai
import pytest
from openai import AsyncOpenAI

from voxpipe.testing.fakes import FakeOpenAI, FakeReply, FakeToolCall

MESSAGES = [
    {"role": "system", "content": "You are a helpful phone agent."},
    {"role": "user", "content": "What is the weather in Paris?"},
]
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}


_clients: list[AsyncOpenAI] = []


def client(fake: FakeOpenAI, **kwargs: Any) -> AsyncOpenAI:
    kwargs.setdefault("max_retries", 0)
    kwargs.setdefault("api_key", "test-key")
    made = AsyncOpenAI(base_url=fake.base_url, **kwargs)
    _clients.append(made)
    return made


@pytest.fixture(autouse=True)
async def _close_clients() -> AsyncIterator[None]:
    # Closed in the test's loop: an unclosed client would try to close itself after it.
    yield
    while _clients:
        await _clients.pop().close()


async def collect(stream: Any) -> list[Any]:
    return [chunk async for chunk in stream]


async def test_streaming_text_with_usage_and_max_tokens_passed_through() -> None:
    async with FakeOpenAI(replies=["It is sunny in Paris today."], first_token_delay=0.0) as fake:
        stream = await client(fake).chat.completions.create(
            model="gpt-4o-mini",
            messages=MESSAGES,  # type: ignore[arg-type]
            stream=True,
            stream_options={"include_usage": True},
            max_tokens=120,
        )
        chunks = await collect(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "It is sunny in Paris today."
    assert len([c for c in chunks if c.choices and c.choices[0].delta.content]) > 3  # streamed
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == "stop" and set(finishes[:-1]) == {None}
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 6
    assert chunks[-1].usage.total_tokens == (
        chunks[-1].usage.prompt_tokens + chunks[-1].usage.completion_tokens
    )
    assert len({c.id for c in chunks}) == 1
    body = fake.last_request
    assert body["max_tokens"] == 120 and body["model"] == "gpt-4o-mini"
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    assert body["messages"] == MESSAGES
    assert fake.requests[0].headers["authorization"] == "Bearer test-key"
    assert fake.requests[0].completed


async def test_max_tokens_cuts_with_finish_reason_length() -> None:
    async with FakeOpenAI(replies=["one two three four five six"], first_token_delay=0.0) as fake:
        stream = await client(fake).chat.completions.create(
            model="m",
            messages=MESSAGES,  # type: ignore[arg-type]
            stream=True,
            max_completion_tokens=3,
        )
        chunks = await collect(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "one two three"
    assert chunks[-1].choices[0].finish_reason == "length"


async def test_streaming_tool_calls_reassemble() -> None:
    reply = FakeReply(
        tool_calls=[
            FakeToolCall("get_weather", {"city": "Paris"}, id="call_1"),
            FakeToolCall("get_weather", {"city": "Lyon"}),
        ]
    )
    async with FakeOpenAI(replies=[reply], first_token_delay=0.0) as fake:
        stream = await client(fake).chat.completions.create(
            model="m",
            messages=MESSAGES,  # type: ignore[arg-type]
            stream=True,
            tools=[WEATHER_TOOL],  # type: ignore[list-item]
        )
        chunks = await collect(stream)
    calls: dict[int, dict[str, Any]] = {}
    fragments = 0
    for chunk in chunks:
        for tc in chunk.choices[0].delta.tool_calls or []:
            entry = calls.setdefault(tc.index, {"id": None, "name": None, "arguments": ""})
            if tc.id:
                assert entry["id"] is None  # id and name come once, first
                entry["id"], entry["name"] = tc.id, tc.function.name
            else:
                assert tc.function.name is None
            entry["arguments"] += tc.function.arguments or ""
            fragments += 1
    assert calls[0]["id"] == "call_1" and calls[1]["id"].startswith("call_")
    assert [c["name"] for c in calls.values()] == ["get_weather", "get_weather"]
    assert [json.loads(c["arguments"]) for c in calls.values()] == [
        {"city": "Paris"},
        {"city": "Lyon"},
    ]
    assert fragments > 4  # arguments arrive in pieces
    assert chunks[-1].choices[0].finish_reason == "tool_calls"
    assert fake.last_request["tools"] == [WEATHER_TOOL]


async def test_non_streaming_completion() -> None:
    replies = ["Sure.", FakeReply.call("get_weather", {"city": "Paris"})]
    async with FakeOpenAI(replies=replies, first_token_delay=0.0) as fake:
        c = client(fake)
        text = await c.chat.completions.create(model="m", messages=MESSAGES)  # type: ignore[arg-type]
        tool = await c.chat.completions.create(model="m", messages=MESSAGES)  # type: ignore[arg-type]
    assert text.object == "chat.completion" and text.choices[0].message.content == "Sure."
    assert text.choices[0].finish_reason == "stop" and text.usage is not None
    call = tool.choices[0].message.tool_calls[0]  # type: ignore[index]
    assert call.function.name == "get_weather"  # type: ignore[union-attr]
    assert json.loads(call.function.arguments) == {"city": "Paris"}  # type: ignore[union-attr]
    assert tool.choices[0].finish_reason == "tool_calls"


async def test_first_token_delay_and_early_headers() -> None:
    async with FakeOpenAI(replies=["Hello there."], first_token_delay=0.15) as fake:
        started = time.monotonic()
        stream = await client(fake).chat.completions.create(
            model="m",
            messages=MESSAGES,  # type: ignore[arg-type]
            stream=True,
        )
        first = await anext(aiter(stream))
        elapsed = time.monotonic() - started
        await stream.close()
    assert first.choices[0].delta.content == "Hello"
    assert elapsed >= 0.14


async def test_hang_after_headers_never_sends_a_token() -> None:
    async with FakeOpenAI(replies=[FakeReply.hanging()]) as fake:
        # The response starts (create returns), but no chunk ever comes.
        stream = await client(fake).chat.completions.create(
            model="m",
            messages=MESSAGES,  # type: ignore[arg-type]
            stream=True,
        )
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.2):
                await anext(aiter(stream))
        assert fake.requests[0].status == 200
        await stream.close()  # what a client does on its own timeout or an interruption
        await fake.wait_for(lambda: fake.requests[0].client_disconnected)
    assert not fake.requests[0].completed


async def test_client_closing_mid_stream_is_recorded() -> None:
    reply = FakeReply.say("one two three four five six seven eight", chunk_delay=0.05)
    async with FakeOpenAI(replies=[reply], first_token_delay=0.0) as fake:
        stream = await client(fake).chat.completions.create(
            model="m",
            messages=MESSAGES,  # type: ignore[arg-type]
            stream=True,
        )
        first = await anext(aiter(stream))
        await stream.close()  # e.g. the caller interrupted the bot
        await fake.wait_for(lambda: fake.requests[0].client_disconnected)
    assert first.choices[0].delta.content == "one"
    assert not fake.requests[0].completed


async def test_hang_before_headers_times_out_the_client() -> None:
    async with FakeOpenAI(replies=[FakeReply.hanging(before_headers=True)]) as fake:
        with pytest.raises(openai.APITimeoutError):
            await client(fake, timeout=1.0).chat.completions.create(
                model="m",
                messages=MESSAGES,  # type: ignore[arg-type]
                stream=True,
            )
    assert fake.request_count == 1


async def test_rate_limit_with_retry_after() -> None:
    async with FakeOpenAI(replies=[FakeReply.rate_limited(retry_after=2)]) as fake:
        with pytest.raises(openai.RateLimitError) as info:
            await client(fake).chat.completions.create(model="m", messages=MESSAGES)  # type: ignore[arg-type]
    assert info.value.status_code == 429
    assert info.value.response.headers["retry-after"] == "2"
    assert info.value.code == "rate_limit_exceeded"


async def test_sdk_retries_after_a_server_error() -> None:
    unavailable = FakeReply.http_error(503, "Service unavailable", retry_after=0.01)
    replies = [unavailable, FakeReply.rate_limited(retry_after=0.01), "Recovered."]
    async with FakeOpenAI(replies=replies, first_token_delay=0.0) as fake:
        result = await client(fake, max_retries=2).chat.completions.create(
            model="m",
            messages=MESSAGES,  # type: ignore[arg-type]
        )
    assert result.choices[0].message.content == "Recovered."
    assert [r.status for r in fake.requests] == [503, 429, 200]


async def test_server_error_and_wrong_key() -> None:
    async with FakeOpenAI(replies=[FakeReply.server_error()]) as fake:
        with pytest.raises(openai.InternalServerError) as info:
            await client(fake).chat.completions.create(model="m", messages=MESSAGES)  # type: ignore[arg-type]
        assert info.value.status_code == 500
        bad = client(fake, api_key="wrong")
        with pytest.raises(openai.AuthenticationError) as auth:
            await bad.chat.completions.create(model="m", messages=MESSAGES)  # type: ignore[arg-type]
    assert auth.value.code == "invalid_api_key"
    assert [r.status for r in fake.requests] == [500, 401]


async def test_stream_cut_off_mid_way() -> None:
    reply = FakeReply.cut_off("one two three four five six seven", after_chunks=3)
    async with FakeOpenAI(replies=[reply], first_token_delay=0.0) as fake:
        stream = await client(fake).chat.completions.create(
            model="m",
            messages=MESSAGES,  # type: ignore[arg-type]
            stream=True,
        )
        got = []
        with pytest.raises(openai.APIConnectionError):
            async for chunk in stream:
                got.append(chunk.choices[0].delta.content)
    assert got == ["one", " two", " three"]
    assert not fake.requests[0].completed


async def test_callable_script_sees_the_request() -> None:
    async def echo(body: dict[str, Any]) -> str:
        return "You said: " + body["messages"][-1]["content"]

    async with FakeOpenAI(replies=echo, first_token_delay=0.0) as fake:
        result = await client(fake).chat.completions.create(
            model="m",
            messages=[{"role": "user", "content": "ping"}],
        )
    assert result.choices[0].message.content == "You said: ping"


async def test_exhausted_script_answers_an_explaining_error() -> None:
    async with FakeOpenAI() as fake:
        with pytest.raises(openai.InternalServerError) as info:
            await client(fake).chat.completions.create(model="m", messages=MESSAGES)  # type: ignore[arg-type]
    assert "add_reply" in info.value.message and info.value.code == "fake_script_exhausted"


async def test_models_list() -> None:
    async with FakeOpenAI(models=["llama3"]) as fake:
        models = await client(fake).models.list()
    assert [m.id for m in models.data] == ["llama3"]


async def test_first_token_and_chunks_are_due_from_the_request() -> None:
    reply = FakeReply.say("one two three four", chunk_delay=0.02)
    async with FakeOpenAI(replies=[reply, "Whole answer."], first_token_delay=0.05) as fake:
        stream = await client(fake).chat.completions.create(
            model="m",
            messages=MESSAGES,  # type: ignore[arg-type]
            stream=True,
        )
        arrived = []
        async for _chunk in stream:
            arrived.append(time.perf_counter())
        whole = await client(fake).chat.completions.create(model="m", messages=MESSAGES)  # type: ignore[arg-type]
        whole_arrived = time.perf_counter()
    streamed, answered = fake.requests
    # The fake's own record (perf_counter on a real loop): the first token at its delay ...
    assert streamed.first_sent_at is not None and answered.first_sent_at is not None
    assert streamed.first_sent_at - streamed.received_at >= 0.05
    assert answered.first_sent_at - answered.received_at >= 0.05
    # ... and every chunk its delay after the one before was due, never sooner.
    for k, t in enumerate(arrived[:4]):
        assert t >= streamed.received_at + 0.05 + k * 0.02
    assert whole.choices[0].message.content == "Whole answer."
    assert whole_arrived >= answered.received_at + 0.05
