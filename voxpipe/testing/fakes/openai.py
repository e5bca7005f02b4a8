"""A local fake of the OpenAI chat completions API (`POST /v1/chat/completions`), streaming
(server-sent events) and not, scripted by a queue of replies or a function of the request.

    async with FakeOpenAI(api_key="test-key", replies=["Hello! How can I help?"]) as fake:
        client = AsyncOpenAI(base_url=fake.base_url, api_key="test-key")

A reply is text (streamed one word-ish token per chunk), tool calls (id and name first, then
argument fragments), or a fault: an HTTP error with OpenAI's error JSON, a hang, a stream cut
mid-way. `max_tokens` / `max_completion_tokens` is honoured: a longer text is cut with
`finish_reason: "length"` (a token here is a word with its leading space). Response headers go
out at once; the first chunk (role and first token) `first_token_delay` after the request came
in, each later one `chunk_delay` after the one before (on precise timers: `voxpipe.testing.timing`).
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from voxpipe.testing import timing
from voxpipe.testing.fakes._base import FakeServer
from voxpipe.testing.fakes._http import AppServer, web

__all__ = ["FakeOpenAI", "FakeReply", "FakeToolCall", "OpenAIRequest", "ReplySource"]

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class FakeToolCall:
    """A function call the fake model makes; `arguments` is a dict (sent as JSON) or a raw string."""

    name: str
    arguments: dict[str, Any] | str = field(default_factory=dict)
    id: str | None = None

    @property
    def arguments_json(self) -> str:
        if isinstance(self.arguments, str):
            return self.arguments
        return json.dumps(self.arguments)


@dataclass(slots=True)
class FakeReply:
    """One scripted answer to a chat completion request (a reply, or a fault)."""

    text: str = ""
    tool_calls: list[FakeToolCall] = field(default_factory=list)
    finish_reason: str | None = None  # None: "tool_calls" with tool calls, else "stop"/"length"
    fragments: list[str] | None = None  # explicit text chunks; None: one word-ish token each
    first_token_delay: float | None = None  # None: the fake's default
    chunk_delay: float | None = None  # None: the fake's default
    # Faults
    status: int = 200
    error: dict[str, Any] | None = None  # the "error" object of a non-2xx answer
    headers: dict[str, str] = field(default_factory=dict)
    hang: bool = False  # send headers, then nothing until the client gives up
    hang_before_headers: bool = False  # send nothing at all
    close_after_chunks: int | None = None  # abort the connection after this many SSE chunks

    @classmethod
    def say(cls, text: str, **kwargs: Any) -> FakeReply:
        """A text reply."""
        return cls(text=text, **kwargs)

    @classmethod
    def call(
        cls, name: str, arguments: dict[str, Any] | str | None = None, **kwargs: Any
    ) -> FakeReply:
        """A reply that calls one tool."""
        return cls(tool_calls=[FakeToolCall(name, arguments or {})], **kwargs)

    @classmethod
    def http_error(
        cls,
        status: int,
        message: str,
        *,
        type: str = "server_error",
        code: str | None = None,
        retry_after: float | None = None,
    ) -> FakeReply:
        """A non-2xx answer with OpenAI's error JSON (and `retry-after` if given)."""
        headers = {"retry-after": f"{retry_after:g}"} if retry_after is not None else {}
        return cls(
            status=status,
            error={"message": message, "type": type, "param": None, "code": code},
            headers=headers,
        )

    @classmethod
    def rate_limited(cls, retry_after: float = 1.0) -> FakeReply:
        return cls.http_error(
            429,
            "Rate limit reached for requests. Please try again later.",
            type="requests",
            code="rate_limit_exceeded",
            retry_after=retry_after,
        )

    @classmethod
    def server_error(cls, status: int = 500) -> FakeReply:
        return cls.http_error(status, "The server had an error while processing your request.")

    @classmethod
    def hanging(cls, *, before_headers: bool = False) -> FakeReply:
        """Never send a first token (optionally not even the response headers)."""
        return cls(hang=not before_headers, hang_before_headers=before_headers)

    @classmethod
    def cut_off(cls, text: str, after_chunks: int) -> FakeReply:
        """Start streaming `text`, then drop the connection after `after_chunks` chunks."""
        return cls(text=text, close_after_chunks=after_chunks)


ReplySource = Callable[[dict[str, Any]], "FakeReply | str | Awaitable[FakeReply | str]"]


@dataclass(slots=True)
class OpenAIRequest:
    """One request as the fake received it, and what it answered."""

    method: str
    path: str
    headers: dict[str, str]
    json: dict[str, Any]
    reply: FakeReply | None = None
    status: int | None = None  # None until the response starts
    completed: bool = False  # the whole answer was sent
    client_disconnected: bool = False  # the client went away before the answer ended
    # When (voxpipe.testing.timing.now()) the request had come in, and its first chunk went out
    # (a non-streaming answer: was handed to aiohttp): the fake's own first-token latency.
    received_at: float = 0.0
    first_sent_at: float | None = None
    # The client's (host, port): requests with the same one came over the same connection.
    peer: tuple[str, int] | None = None


def _tokens(text: str) -> list[str]:
    return re.findall(r"\s*\S+|\s+$", text)


def _count_tokens(value: Any) -> int:
    if isinstance(value, str):
        return len(_tokens(value))
    if isinstance(value, list):
        return sum(_count_tokens(v) for v in value)
    if isinstance(value, dict):
        return sum(_count_tokens(v) for k, v in value.items() if k in ("content", "text"))
    return 0


class FakeOpenAI(FakeServer):
    """Fake OpenAI-compatible chat completions server on 127.0.0.1 (HTTP + SSE)."""

    def __init__(
        self,
        *,
        api_key: str | None = "test-key",
        replies: list[FakeReply | str] | ReplySource | None = None,
        first_token_delay: float = 0.2,
        chunk_delay: float = 0.0,
        models: list[str] | None = None,
    ) -> None:
        super().__init__()
        self.api_key = api_key
        self.first_token_delay = first_token_delay
        self.chunk_delay = chunk_delay
        self.models = models or ["gpt-4o", "gpt-4o-mini"]
        self._queue: list[FakeReply] = []
        self._source: ReplySource | None = None
        if callable(replies):
            self._source = replies
        elif replies:
            self.add_reply(*replies)
        self.requests: list[OpenAIRequest] = []
        self._up = False
        self.outages = 0  # go_down() calls
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_get("/v1/models", self._models)
        self._server = AppServer(app)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        """What `AsyncOpenAI(base_url=...)` and OPENAI_BASE_URL take."""
        return f"{self.url}/v1"

    async def start(self) -> None:
        self.port = await self._server.start(self.port)
        self._up = True

    async def stop(self) -> None:
        await self._server.stop()
        self._up = False

    async def go_down(self) -> None:
        """An outage: requests in flight are cut and new connections refused until
        ``come_back``."""
        self.outages += 1
        if self._up:
            await self._server.stop()
            self._up = False
        self._notify()

    async def come_back(self) -> None:
        """End an outage: listen again on the same port."""
        if not self._up:
            await self.start()
        self._notify()

    def add_reply(self, *replies: FakeReply | str) -> None:
        """Queue replies, answered in order (a string is a text reply)."""
        for reply in replies:
            self._queue.append(FakeReply(text=reply) if isinstance(reply, str) else reply)

    @property
    def request_count(self) -> int:
        return len(self.requests)

    @property
    def last_request(self) -> dict[str, Any]:
        if not self.requests:
            raise AssertionError("FakeOpenAI has received no request")
        return self.requests[-1].json

    # --- handlers -------------------------------------------------------------------------
    async def _models(self, request: web.Request) -> web.Response:
        if (denied := self._check_auth(request)) is not None:
            return denied
        data = [{"id": m, "object": "model", "created": 0, "owned_by": "fake"} for m in self.models]
        return web.json_response({"object": "list", "data": data})

    def _check_auth(self, request: web.Request) -> web.Response | None:
        if self.api_key is None:
            return None
        auth = request.headers.get("Authorization", "")
        if auth == f"Bearer {self.api_key}":
            return None
        shown = auth.removeprefix("Bearer ")[:4] + "***"
        return _error_response(
            401,
            {
                "message": f"Incorrect API key provided: {shown}. You can find your API key at "
                "https://platform.openai.com/account/api-keys.",
                "type": "invalid_request_error",
                "param": None,
                "code": "invalid_api_key",
            },
        )

    async def _next_reply(self, body: dict[str, Any]) -> FakeReply | None:
        if self._source is not None:
            result = self._source(body)
            if inspect.isawaitable(result):
                result = await result
            return FakeReply(text=result) if isinstance(result, str) else result
        return self._queue.pop(0) if self._queue else None

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        try:
            body = await request.json()
        except ValueError:
            body = None
        record = OpenAIRequest(
            method=request.method,
            path=request.path,
            headers={k.lower(): v for k, v in request.headers.items()},
            json=body if isinstance(body, dict) else {},
            received_at=timing.now(),
            peer=_peer(request),
        )
        self.requests.append(record)
        self._notify()
        try:
            response = await self._answer(request, record, body)
        except (asyncio.CancelledError, ConnectionResetError):
            # aiohttp cancels the handler when the client disconnects (e.g. it closed the
            # stream on an interruption); tests assert on that.
            record.client_disconnected = True
            self._notify()
            raise
        record.status = response.status
        self._notify()
        return response

    async def _answer(
        self, request: web.Request, record: OpenAIRequest, body: Any
    ) -> web.StreamResponse:
        if (denied := self._check_auth(request)) is not None:
            return denied
        if (
            not isinstance(body, dict)
            or not isinstance(body.get("messages"), list)
            or not body.get("model")
        ):
            return _error_response(
                400,
                {
                    "message": "The request needs a JSON body with 'model' and a 'messages' array.",
                    "type": "invalid_request_error",
                    "param": "messages",
                    "code": None,
                },
            )
        reply = await self._next_reply(body)
        record.reply = reply
        if reply is None:
            return _error_response(
                500,
                {
                    "message": f"FakeOpenAI has no scripted reply for request #{len(self.requests)}: "
                    "queue more with fake.add_reply(...) or pass replies=callable",
                    "type": "server_error",
                    "param": None,
                    "code": "fake_script_exhausted",
                },
            )
        if reply.status >= 300:
            return _error_response(reply.status, reply.error or {}, reply.headers)
        if reply.hang_before_headers:
            # Until the client gives up (which cancels this handler) or the fake stops.
            await self._server.stopping.wait()
            return _abort(request, web.Response())
        first_delay = (
            self.first_token_delay if reply.first_token_delay is None else reply.first_token_delay
        )
        chunk_delay = self.chunk_delay if reply.chunk_delay is None else reply.chunk_delay
        plan = _Plan(reply, body)
        due = record.received_at + first_delay
        if not body.get("stream"):
            answer = web.json_response(plan.completion())  # encoded before the wait
            await timing.sleep_until(due)
            record.first_sent_at = timing.now()
            record.completed = True
            return answer
        response = web.StreamResponse(
            status=200,
            headers={
                "Content-Type": "text/event-stream; charset=utf-8",
                "Cache-Control": "no-cache",
                "x-request-id": f"req_{uuid.uuid4().hex}",
            },
        )
        response.enable_chunked_encoding()
        await response.prepare(request)
        record.status = 200
        self._notify()
        if reply.hang:
            await self._server.stopping.wait()
            return _abort(request, response)
        sent = 0
        # Encoded before the first wait, so every chunk goes out at its due time.
        events = [f"data: {json.dumps(chunk)}\n\n".encode() for chunk in plan.chunks()]
        for i, data in enumerate(events):
            if reply.close_after_chunks is not None and sent >= reply.close_after_chunks:
                return _abort(request, response)
            if i == 0:
                await timing.sleep_until(due)
            elif chunk_delay:
                # Each chunk its delay after the one before was due: no drift from the writes.
                due += chunk_delay
                await timing.sleep_until(due)
            else:
                # Back to back: the client reads each chunk before the next goes out, as it
                # would across a network (this fake shares the client's event loop).
                await asyncio.sleep(0)
            await response.write(data)
            if i == 0:
                record.first_sent_at = timing.now()
            sent += 1
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        record.completed = True
        return response


class _Plan:
    """The chunks (or the whole completion) for one reply to one request."""

    def __init__(self, reply: FakeReply, body: dict[str, Any]) -> None:
        self.reply = reply
        self.model = str(body.get("model"))
        self.id = f"chatcmpl-{uuid.uuid4().hex[:24]}"
        self.created = int(time.time())
        stream_options = body.get("stream_options") or {}
        self.include_usage = bool(stream_options.get("include_usage"))
        pieces = reply.fragments if reply.fragments is not None else _tokens(reply.text)
        limit = body.get("max_completion_tokens", body.get("max_tokens"))
        finish = reply.finish_reason
        if isinstance(limit, int) and reply.fragments is None and len(pieces) > limit:
            pieces = pieces[:limit]
            finish = finish or "length"
        self.pieces = pieces
        self.finish_reason = finish or ("tool_calls" if reply.tool_calls else "stop")
        self.calls = [
            (c.id or f"call_{uuid.uuid4().hex[:24]}", c.name, c.arguments_json)
            for c in reply.tool_calls
        ]
        prompt = _count_tokens(body.get("messages")) + 4 * len(body.get("messages") or [])
        completion = len(pieces) + sum(len(_tokens(a)) + 1 for _, _, a in self.calls)
        self.usage = {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        }

    def _chunk(self, delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
        chunk: dict[str, Any] = {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "system_fingerprint": "fp_fake",
            "choices": [
                {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
            ],
        }
        if self.include_usage:
            chunk["usage"] = None
        return chunk

    def chunks(self) -> list[dict[str, Any]]:
        text = "".join(self.pieces)
        first: dict[str, Any] = {
            "role": "assistant",
            "content": "" if text or not self.calls else None,
        }
        first["refusal"] = None
        out = []
        pieces = list(self.pieces)
        if pieces:  # the first token rides with the role, as the real service does
            first["content"] = pieces.pop(0)
        out.append(self._chunk(first))
        out.extend(self._chunk({"content": p}) for p in pieces)
        for index, (call_id, name, arguments) in enumerate(self.calls):
            head = {
                "index": index,
                "id": call_id,
                "type": "function",
                "function": {"name": name, "arguments": ""},
            }
            out.append(self._chunk({"tool_calls": [head]}))
            size = max(1, -(-len(arguments) // 3))
            for i in range(0, len(arguments), size):
                frag = {"index": index, "function": {"arguments": arguments[i : i + size]}}
                out.append(self._chunk({"tool_calls": [frag]}))
        out.append(self._chunk({}, self.finish_reason))
        if self.include_usage:
            out.append(
                {
                    "id": self.id,
                    "object": "chat.completion.chunk",
                    "created": self.created,
                    "model": self.model,
                    "system_fingerprint": "fp_fake",
                    "choices": [],
                    "usage": self.usage,
                }
            )
        return out

    def completion(self) -> dict[str, Any]:
        text = "".join(self.pieces)
        message: dict[str, Any] = {
            "role": "assistant",
            "content": text if text or not self.calls else None,
            "refusal": None,
            "annotations": [],
        }
        if self.calls:
            message["tool_calls"] = [
                {"id": i, "type": "function", "function": {"name": n, "arguments": a}}
                for i, n, a in self.calls
            ]
        return {
            "id": self.id,
            "object": "chat.completion",
            "created": self.created,
            "model": self.model,
            "system_fingerprint": "fp_fake",
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "logprobs": None,
                    "finish_reason": self.finish_reason,
                }
            ],
            "usage": self.usage,
        }


def _error_response(
    status: int, error: dict[str, Any], headers: dict[str, str] | None = None
) -> web.Response:
    return web.json_response({"error": error}, status=status, headers=headers or {})


def _abort(request: web.Request, response: web.StreamResponse) -> web.StreamResponse:
    """Cut the TCP connection with no proper end of the response, as a failing server would."""
    if request.transport is not None:
        request.transport.abort()
    return response


def _peer(request: web.Request) -> tuple[str, int] | None:
    peer = request.transport.get_extra_info("peername") if request.transport else None
    return (str(peer[0]), int(peer[1])) if isinstance(peer, tuple) and len(peer) >= 2 else None
