"""The lean streaming path of OpenAILLMService: SSE parsing, headers from the SDK, errors."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from aiohttp import web

from voxpipe.frames import ErrorFrame, LLMMessagesFrame, LLMTextFrame
from voxpipe.pipelines.clock import Clock
from voxpipe.processors.llm.chat_stream import ChatStreamClient, StreamError, StreamHTTPError
from voxpipe.processors.llm.openai import OpenAILLMService
from voxpipe.testing import run_frames
from voxpipe.testing.fakes import FakeOpenAI
from voxpipe.testing.fakes._http import AppServer

Handler = Callable[[web.Request], Any]
_BODY = {"model": "m", "stream": True, "messages": [{"role": "user", "content": "hi"}]}


@contextlib.asynccontextmanager
async def _server(handler: Handler) -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_post("/v1/chat/completions", handler)
    server = AppServer(app)
    port = await server.start()
    try:
        yield f"http://127.0.0.1:{port}/v1/chat/completions"
    finally:
        await server.stop()


def _sse(raw: bytes) -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        await request.read()
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(raw)
        await response.write_eof()
        return response

    return handler


async def _collect(url: str) -> list[dict[str, Any]]:
    client = ChatStreamClient(url, {"Authorization": "Bearer k"})
    try:
        return [event async for event in client.stream(_BODY)]
    finally:
        await client.close()


async def test_events_with_crlf_comments_and_multiline_data_are_parsed() -> None:
    raw = (
        b": keep-alive\r\n\r\n"
        b'data: {"choices": [{"delta": {"content": "Hi"}}]}\r\n\r\n'
        b'data: {"choices": [{"delta":\ndata:  {"content": " there"}}]}\n\n'
        b"data: [DONE]\n\n"
        b'data: {"choices": [{"delta": {"content": "after done"}}]}\n\n'
    )
    async with _server(_sse(raw)) as url:
        events = await _collect(url)
    texts = [e["choices"][0]["delta"]["content"] for e in events]
    assert texts == ["Hi", " there"]


async def test_an_error_event_mid_stream_raises() -> None:
    raw = (
        b'data: {"choices": [{"delta": {"content": "Hi"}}]}\n\n'
        b'data: {"error": {"message": "overloaded", "type": "server_error"}}\n\n'
    )
    async with _server(_sse(raw)) as url:
        with pytest.raises(StreamError, match="overloaded") as info:
            await _collect(url)
    assert not info.value.connection


async def test_http_error_carries_status_message_and_retry_after() -> None:
    async def handler(request: web.Request) -> web.Response:
        return web.json_response(
            {"error": {"message": "slow down", "type": "rate_limit"}},
            status=429,
            headers={"retry-after": "3"},
        )

    async with _server(handler) as url:
        with pytest.raises(StreamHTTPError) as info:
            await _collect(url)
    assert (info.value.status, info.value.message, info.value.retry_after) == (
        429,
        "slow down",
        "3",
    )


async def test_unreachable_endpoint_is_a_connection_error() -> None:
    async with _server(_sse(b"")) as url:
        dead = url  # the server stops at the end of this block
    with pytest.raises(StreamError) as info:
        await _collect(dead)
    assert info.value.connection


async def test_requests_carry_the_sdk_clients_headers() -> None:
    async with FakeOpenAI(api_key="k", replies=["Hello."]) as fake:
        from openai import AsyncOpenAI

        llm = OpenAILLMService(
            api_key="k", base_url=fake.base_url, model="gpt-4o-mini", first_token_timeout=2.0
        )
        assert llm.stream_transport == "aiohttp"
        sdk_headers = AsyncOpenAI(api_key="k", base_url=fake.base_url).default_headers
        frames = [LLMMessagesFrame([{"role": "user", "content": "hi"}])]
        out = await run_frames([llm], frames, clock=Clock())
    assert "".join(f.text for f in out.downstream if isinstance(f, LLMTextFrame)) == "Hello."
    headers = fake.requests[0].headers
    assert headers["authorization"] == "Bearer k"
    assert headers["user-agent"] == sdk_headers["User-Agent"]
    assert headers["x-stainless-lang"] == "python"
    assert fake.requests[0].json["stream"] is True


async def test_a_client_passed_in_streams_through_the_sdk_unless_asked() -> None:
    from openai import AsyncOpenAI

    async with FakeOpenAI(api_key="k", replies=["Hi."]) as fake:
        client = AsyncOpenAI(api_key="k", base_url=fake.base_url, max_retries=0)
        assert OpenAILLMService(client=client).stream_transport == "sdk"
        lean = OpenAILLMService(client=client, stream_transport="aiohttp")
        assert lean.stream_transport == "aiohttp"
        out = await run_frames(
            [lean], [LLMMessagesFrame([{"role": "user", "content": "hi"}])], clock=Clock()
        )
        await client.close()
    assert not [f for f in out.upstream if isinstance(f, ErrorFrame)]
    assert "".join(f.text for f in out.downstream if isinstance(f, LLMTextFrame)) == "Hi."


async def test_a_finished_reply_leaves_its_connection_for_the_next_one() -> None:
    async with FakeOpenAI(
        api_key="k", replies=["One.", "Two.", "Three and more words.", "Four."]
    ) as fake:
        client = ChatStreamClient(
            f"{fake.base_url}/chat/completions", {"Authorization": "Bearer k"}
        )
        try:
            for _ in range(2):
                events = [e async for e in client.stream(_BODY)]
                assert events
            # Closed early (an interruption): that connection is dropped, which is what tells
            # the server to stop generating; the next reply comes over a new one.
            stream = client.stream(_BODY)
            async for _ in stream:
                break
            await stream.aclose()
            assert [e async for e in client.stream(_BODY)]
        finally:
            await client.close()
    peers = [r.peer for r in fake.requests]
    assert peers[0] is not None and peers[0] == peers[1] == peers[2]
    assert peers[3] != peers[2]
