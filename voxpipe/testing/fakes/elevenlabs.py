"""A local fake of ElevenLabs text-to-speech: websocket stream-input (single and multi-context)
and HTTP streaming, producing deterministic synthetic audio with character alignment.

    async with FakeElevenLabs(api_key="test-key", ms_per_char=60, first_audio_latency=0.15) as el:
        ws_url = f"{el.ws_url}/v1/text-to-speech/VOICE/stream-input?output_format=ulaw_8000"
        AsyncElevenLabs(api_key="test-key", base_url=el.url)  # HTTP streaming

Audio is a tone per character (silence for spaces and punctuation), `ms_per_char` long, in
the requested format (`ulaw_8000` G.711 mu-law, `pcm_8000`..`pcm_48000` PCM16 LE mono); the
alignment in each audio message covers that message's characters, in ms from its start.

When the fake generates (its model of the real buffer): on `flush`, on the final `{"text":""}`,
when the buffer holds a sentence end (". ", "! ", "? ") if `sentence_trigger`, on
`try_trigger_generation` once `try_trigger_min_chars` are buffered, and when the buffer reaches
the `chunk_length_schedule` of `generation_config` (default 120, 160, 250, 290).
`{"isFinal": true}` comes only after `{"text":""}` (or `close_context` on the multi socket:
text not yet flushed is dropped, audio already being generated still goes out before isFinal).

Timing (on precise timers, `voxpipe.testing.timing`): a generation's first audio goes out
`first_audio_latency` after the message that triggered it came in (or after the previous
generation ended, if the fake was still speaking), each later chunk `chunk_interval` after the
one before was due.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import math
import re
from dataclasses import dataclass, field
from typing import Any, Literal

from voxpipe.testing import timing
from voxpipe.testing.fakes._base import FakeServer
from voxpipe.testing.fakes._http import AppServer, web
from voxpipe.testing.fakes._synth import (
    AudioFormat,
    RenderedChars,
    parse_output_format,
    render_chars,
)

__all__ = [
    "ElevenLabsConnection",
    "ElevenLabsFault",
    "ElevenLabsHttpFault",
    "ElevenLabsHttpRequest",
    "FakeElevenLabs",
]

logger = logging.getLogger(__name__)

_DEFAULT_SCHEDULE = [120, 160, 250, 290]
_SENTENCE_END = re.compile(r"[.!?][\"')\]]*\s")
_MAX_CONTEXTS = 5
_CLOSE_REASON_MAX = 123  # bytes a websocket close reason can carry


@dataclass(slots=True)
class ElevenLabsFault:
    """A failure the fake injects on a websocket connection.

    kind: "error" sends `{"message", "error", "code"}` then closes with `close_code` (unless
    None); "close" closes with `close_code`; "drop" aborts the TCP connection. It fires once
    `connection` (index; None: any) has received `after_messages` client messages, or has been
    sent `after_audio_chunks` audio messages if that is set.
    """

    kind: Literal["error", "close", "drop"] = "error"
    after_messages: int = 1
    after_audio_chunks: int | None = None
    connection: int | None = 0
    close_code: int | None = 1011
    message: str = "The fake was told to fail here."
    error: str = "fake_fault"
    code: int = 1011


@dataclass(slots=True)
class ElevenLabsHttpFault:
    """The next HTTP synthesis request fails: an error `status`, or audio cut after some chunks."""

    status: int | None = 500
    detail: dict[str, Any] | None = None
    drop_after_chunks: int | None = None  # with status None: send this many chunks, then abort


@dataclass(slots=True)
class ElevenLabsConnection:
    """What one websocket client sent and was sent, for assertions."""

    index: int
    path: str
    voice_id: str
    multi: bool
    params: dict[str, str]
    headers: dict[str, str]
    messages: list[dict[str, Any]] = field(default_factory=list)  # client messages, parsed
    sent: list[dict[str, Any]] = field(default_factory=list)  # server messages
    generations: list[str] = field(default_factory=list)  # text pieces spoken, in order
    audio: bytearray = field(default_factory=bytearray)  # all audio sent
    closed: bool = False
    close_code: int | None = None
    close_reason: str = ""

    @property
    def text(self) -> str:
        """All text the client sent (after the initial " ")."""
        return "".join(
            m.get("text") or "" for m in self.messages[1:] if isinstance(m.get("text"), str)
        )

    @property
    def audio_messages(self) -> list[dict[str, Any]]:
        return [m for m in self.sent if m.get("audio")]

    @property
    def finals(self) -> list[dict[str, Any]]:
        return [m for m in self.sent if m.get("isFinal") is True]


@dataclass(slots=True)
class ElevenLabsHttpRequest:
    """One HTTP synthesis request as received."""

    path: str
    voice_id: str
    params: dict[str, str]
    headers: dict[str, str]
    json: dict[str, Any]
    status: int = 200
    audio_bytes: int = 0


@dataclass(slots=True)
class _Context:
    id: str | None
    schedule: list[int]
    buffer: str = ""
    schedule_index: int = 0
    closed: bool = False


@dataclass(slots=True)
class _Job:
    kind: Literal["speak", "final", "close"]
    context: _Context
    text: str = ""
    received_at: float = 0.0  # timing.now() when the message that made it came in


@dataclass(slots=True)
class _AudioMessage:
    """One audio message, encoded ahead of its due time."""

    message: dict[str, Any]
    text: str  # the message as JSON
    audio: bytes


class _Socket:
    """Live state of one websocket connection."""

    def __init__(
        self,
        fake: FakeElevenLabs,
        ws: web.WebSocketResponse,
        request: web.Request,
        conn: ElevenLabsConnection,
        fmt: AudioFormat,
    ) -> None:
        self.fake = fake
        self.ws = ws
        self.request = request
        self.conn = conn
        self.fmt = fmt
        self.contexts: dict[str | None, _Context] = {}
        self.jobs: asyncio.Queue[_Job] = asyncio.Queue()
        self.loop = asyncio.get_running_loop()
        self.last_text = self.loop.time()
        self.received_at = timing.now()  # when the message being handled came in
        self.authed = fake.api_key is None
        self.audio_chunks_sent = 0
        self.busy = False  # the generator is working on a job
        timeout = fake.inactivity_timeout
        if timeout is None:
            timeout = float(conn.params.get("inactivity_timeout", "20"))
        self.inactivity_timeout = timeout

    @property
    def finished(self) -> bool:
        """The fake has closed or dropped this connection (or the client has gone)."""
        return self.ws.closed or self.conn.close_code is not None

    async def send(self, message: dict[str, Any], text: str | None = None) -> bool:
        """Send ``message`` (``text``: its JSON, when already encoded); False if closed."""
        if self.finished:
            return False
        try:
            await self.ws.send_str(json.dumps(message) if text is None else text)
        except (ConnectionError, RuntimeError):
            return False
        self.conn.sent.append(message)
        self.fake._notify()
        return True

    async def close(self, code: int, reason: str) -> None:
        if self.conn.close_code is None:
            self.conn.close_code = code
            self.conn.close_reason = reason
        reason_bytes = reason.encode()[:_CLOSE_REASON_MAX]
        await self.ws.close(code=code, message=reason_bytes)

    def drop(self) -> None:
        self.conn.close_code = 1006
        transport = self.request.transport
        if transport is not None:
            transport.abort()

    async def send_error(self, message: str, error: str, code: int, close_code: int | None) -> None:
        await self.send({"message": message, "error": error, "code": code})
        if close_code is not None:
            await self.close(close_code, f"{error}: {message}")


_RENDER_AHEAD_SECS = 0.02  # how long before its audio is due a sentence is rendered


class FakeElevenLabs(FakeServer):
    """Fake ElevenLabs TTS (stream-input websockets and HTTP streaming) on 127.0.0.1."""

    def __init__(
        self,
        *,
        api_key: str | None = "test-key",
        ms_per_char: float = 60.0,
        first_audio_latency: float = 0.15,
        chunk_interval: float = 0.0,
        chunk_ms: float = 250.0,
        inactivity_timeout: float | None = None,
        sentence_trigger: bool = True,
        try_trigger_min_chars: int = 20,
        durations_key: str = "charDurationsMs",
        faults: list[ElevenLabsFault] | None = None,
    ) -> None:
        super().__init__()
        self.api_key = api_key
        self.ms_per_char = ms_per_char
        self.first_audio_latency = first_audio_latency
        self.chunk_interval = chunk_interval
        self.chunk_ms = chunk_ms
        self.inactivity_timeout = (
            inactivity_timeout  # None: the `inactivity_timeout` query param or 20 s
        )
        self.sentence_trigger = sentence_trigger
        self.try_trigger_min_chars = try_trigger_min_chars
        # The real service has been seen spelling it both ways; let tests pick.
        self.durations_key = durations_key
        self.faults = list(faults or [])
        self.http_faults: list[ElevenLabsHttpFault] = []
        self.connections: list[ElevenLabsConnection] = []
        self.rejected: list[tuple[int, str]] = []  # (HTTP status, path) of refused upgrades
        self.http_requests: list[ElevenLabsHttpRequest] = []
        self._sockets: dict[int, _Socket] = {}
        self._up = False
        self.outages = 0  # go_down() calls
        app = web.Application()
        app.router.add_get("/v1/text-to-speech/{voice_id}/stream-input", self._stream_input)
        app.router.add_get("/v1/text-to-speech/{voice_id}/multi-stream-input", self._stream_input)
        app.router.add_post("/v1/text-to-speech/{voice_id}/stream", self._http_tts)
        app.router.add_post("/v1/text-to-speech/{voice_id}", self._http_tts)
        self._server = AppServer(app)

    # --- lifecycle ----------------------------------------------------------------------
    @property
    def url(self) -> str:
        """HTTP base URL (what `AsyncElevenLabs(base_url=...)` and ELEVENLABS_BASE_URL take)."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def stream_input_url(self, voice_id: str = "voice", **params: str) -> str:
        """The stream-input websocket URL for a voice, with query parameters."""
        query = "&".join(f"{k}={v}" for k, v in params.items())
        return f"{self.ws_url}/v1/text-to-speech/{voice_id}/stream-input" + (
            f"?{query}" if query else ""
        )

    def multi_stream_input_url(self, voice_id: str = "voice", **params: str) -> str:
        query = "&".join(f"{k}={v}" for k, v in params.items())
        return f"{self.ws_url}/v1/text-to-speech/{voice_id}/multi-stream-input" + (
            f"?{query}" if query else ""
        )

    async def start(self) -> None:
        self.port = await self._server.start(self.port)
        self._up = True

    async def stop(self) -> None:
        for sock in list(self._sockets.values()):
            await sock.close(1001, "server shutting down")
        await self._server.stop()
        self._up = False

    async def go_down(self) -> None:
        """An outage: websockets are aborted, HTTP requests cut, new connections refused
        (nothing listens on the port) until ``come_back``."""
        self.outages += 1
        for sock in list(self._sockets.values()):
            sock.drop()
        if self._up:
            await self._server.stop()
            self._up = False
        self._notify()

    async def come_back(self) -> None:
        """End an outage: listen again on the same port."""
        if not self._up:
            await self.start()
        self._notify()

    # --- acting now ------------------------------------------------------------------------
    def _open(self, connection: int | None) -> list[_Socket]:
        return [s for i, s in self._sockets.items() if connection is None or i == connection]

    async def drop(self, connection: int | None = None) -> None:
        """Abort open websocket connections now (no close frame)."""
        for sock in self._open(connection):
            sock.drop()

    async def close_connections(
        self, code: int = 1011, reason: str = "", connection: int | None = None
    ) -> None:
        for sock in self._open(connection):
            await sock.close(code, reason)

    async def send_error(
        self,
        message: str = "The fake was told to fail here.",
        *,
        error: str = "fake_fault",
        code: int = 1011,
        close_code: int | None = 1011,
        connection: int | None = None,
    ) -> None:
        """Send an error message on open websockets, then close them unless close_code is None."""
        for sock in self._open(connection):
            await sock.send_error(message, error, code, close_code)

    def fail_next_http(self, fault: ElevenLabsHttpFault) -> None:
        """Make the next HTTP synthesis request fail as `fault` says."""
        self.http_faults.append(fault)

    # --- websocket -------------------------------------------------------------------------
    async def _stream_input(self, request: web.Request) -> web.StreamResponse:
        multi = request.path.endswith("/multi-stream-input")
        params = dict(request.query)
        fmt_name = params.get("output_format", "mp3_44100_128")
        fmt = parse_output_format(fmt_name)
        if fmt is None:
            self.rejected.append((400, request.path))
            self._notify()
            return web.json_response(
                {
                    "detail": {
                        "status": "invalid_output_format",
                        "message": f"FakeElevenLabs cannot produce {fmt_name!r}: use ulaw_8000 or pcm_8000..pcm_48000",
                    }
                },
                status=400,
            )
        ws = web.WebSocketResponse(
            timeout=2.0,  # wait this long for the client's answer to our close frame
            heartbeat=None,
            autoping=True,
            max_msg_size=2**22,
        )
        await ws.prepare(request)
        conn = ElevenLabsConnection(
            index=len(self.connections),
            path=request.path,
            voice_id=request.match_info["voice_id"],
            multi=multi,
            params=params,
            headers={k.lower(): v for k, v in request.headers.items()},
        )
        self.connections.append(conn)
        sock = _Socket(self, ws, request, conn, fmt)
        self._sockets[conn.index] = sock
        self._notify()
        header_key = request.headers.get("xi-api-key")
        if header_key is not None:
            sock.authed = self.api_key is None or header_key == self.api_key
        tasks = [
            asyncio.create_task(self._generator(sock), name=f"fake-elevenlabs-gen-{conn.index}"),
            asyncio.create_task(self._watchdog(sock), name=f"fake-elevenlabs-idle-{conn.index}"),
        ]
        try:
            if header_key is not None and not sock.authed:
                await sock.send_error("Invalid API key", "invalid_api_key", 1008, close_code=1008)
            else:
                async for msg in ws:
                    if msg.type == web.WSMsgType.TEXT:
                        await self._on_message(sock, msg.data)
                    elif msg.type == web.WSMsgType.BINARY:
                        await sock.send_error(
                            "Binary frames are not accepted", "invalid_message", 1008, 1008
                        )
                    if ws.closed:
                        break
        finally:
            # Record the close first: aiohttp may cancel this handler while it awaits below.
            self._sockets.pop(conn.index, None)
            conn.closed = True
            if conn.close_code is None:
                conn.close_code = ws.close_code
            self._notify()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        return ws

    async def _on_message(self, sock: _Socket, raw: str) -> None:
        conn = sock.conn
        sock.received_at = timing.now()
        sock.last_text = sock.loop.time()
        try:
            message = json.loads(raw)
        except ValueError:
            message = None
        if not isinstance(message, dict):
            conn.messages.append({"raw": raw})
            await sock.send_error(
                "Invalid message received: not a JSON object", "invalid_message", 1008, 1008
            )
            return
        conn.messages.append(message)
        self._notify()
        if not sock.authed:
            key = message.get("xi_api_key") or message.get("xi-api-key")
            bearer = str(message.get("authorization") or "").removeprefix("Bearer ").strip()
            if self.api_key is not None and self.api_key not in (key, bearer or None):
                await sock.send_error("Invalid API key", "invalid_api_key", 1008, close_code=1008)
                return
            sock.authed = True
        await self._check_faults(sock)
        if sock.finished:
            return
        if conn.multi:
            await self._on_multi(sock, message)
        else:
            await self._on_single(sock, message)

    def _new_context(self, context_id: str | None, message: dict[str, Any]) -> _Context:
        config = message.get("generation_config") or {}
        schedule = [int(x) for x in config.get("chunk_length_schedule") or _DEFAULT_SCHEDULE]
        return _Context(id=context_id, schedule=schedule)

    async def _on_single(self, sock: _Socket, message: dict[str, Any]) -> None:
        text = message.get("text")
        ctx = sock.contexts.get(None)
        if ctx is None:
            if text != " ":
                await sock.send_error(
                    'The first message must initialise the stream with {"text": " "}',
                    "invalid_message",
                    1008,
                    1008,
                )
                return
            sock.contexts[None] = self._new_context(None, message)
            return
        if not isinstance(text, str):
            await sock.send_error(
                "Each message needs a 'text' field", "invalid_message", 1008, 1008
            )
            return
        if text == "":
            self._generate_all(sock, ctx)
            sock.jobs.put_nowait(_Job("final", ctx))
            sock.jobs.put_nowait(_Job("close", ctx))
            return
        self._add_text(
            sock, ctx, text, bool(message.get("flush")), bool(message.get("try_trigger_generation"))
        )

    async def _on_multi(self, sock: _Socket, message: dict[str, Any]) -> None:
        context_id = message.get("context_id", message.get("contextId"))
        if message.get("close_socket"):
            for open_ctx in sock.contexts.values():
                if not open_ctx.closed:
                    self._generate_all(sock, open_ctx)
            sock.jobs.put_nowait(_Job("close", _Context(None, [])))
            return
        ctx = sock.contexts.get(context_id)
        if message.get("close_context"):
            if ctx is not None and not ctx.closed:
                # No more text for it; text never flushed is dropped, but what is already being
                # generated is still delivered, then isFinal (Pipecat closes every turn's
                # context right after its flush and expects the audio "then isFinal").
                ctx.closed = True
                ctx.buffer = ""
                sock.jobs.put_nowait(_Job("final", ctx))
            return
        text = message.get("text")
        if ctx is None or ctx.closed:
            if sum(not c.closed for c in sock.contexts.values()) >= _MAX_CONTEXTS:
                await sock.send_error(
                    f"Maximum of {_MAX_CONTEXTS} contexts per connection exceeded",
                    "max_active_conversations",
                    1008,
                    close_code=None,
                )
                return
            ctx = sock.contexts[context_id] = self._new_context(context_id, message)
            if text == " ":
                return
        if not isinstance(text, str) or text == "":
            # An empty text keeps a context alive; nothing to speak.
            if message.get("flush"):
                self._generate_all(sock, ctx)
            return
        self._add_text(
            sock, ctx, text, bool(message.get("flush")), bool(message.get("try_trigger_generation"))
        )

    def _add_text(
        self, sock: _Socket, ctx: _Context, text: str, flush: bool, try_trigger: bool
    ) -> None:
        ctx.buffer += text
        if flush:
            self._generate_all(sock, ctx)
            return
        if self.sentence_trigger:
            last = None
            for match in _SENTENCE_END.finditer(ctx.buffer):
                last = match
            if last is not None:
                self._generate(sock, ctx, last.end())
                return
        threshold = ctx.schedule[min(ctx.schedule_index, len(ctx.schedule) - 1)]
        if len(ctx.buffer) >= threshold or (
            try_trigger and len(ctx.buffer) >= self.try_trigger_min_chars
        ):
            ctx.schedule_index += 1
            self._generate_all(sock, ctx)

    def _generate_all(self, sock: _Socket, ctx: _Context) -> None:
        self._generate(sock, ctx, len(ctx.buffer))

    def _generate(self, sock: _Socket, ctx: _Context, upto: int) -> None:
        piece, ctx.buffer = ctx.buffer[:upto], ctx.buffer[upto:]
        if piece.strip():
            sock.conn.generations.append(piece)
            sock.jobs.put_nowait(_Job("speak", ctx, piece, received_at=sock.received_at))

    async def _generator(self, sock: _Socket) -> None:
        """Speak queued text in order: first-audio latency, then audio messages with alignment."""
        free_since = -math.inf  # when the generator last finished a job
        while True:
            if sock.busy:  # the inactivity clock restarts when speaking ends
                sock.last_text = sock.loop.time()
                sock.busy = False
                free_since = timing.now()
            job = await sock.jobs.get()
            sock.busy = True
            if job.kind == "close":
                await sock.close(1000, "")
                return
            if job.kind == "final":
                message: dict[str, Any] = {"isFinal": True}
                if sock.conn.multi:
                    message["contextId"] = job.context.id
                await sock.send(message)
                continue
            # The latency counts from the text's arrival, or from the end of the generation
            # before if that was still going on. Audio is rendered and encoded before each
            # wait, so every message goes out at its due time.
            due = max(job.received_at, free_since) + self.first_audio_latency
            # Rendered shortly before it is due, not the moment the job is taken: just after
            # this fake sent audio, the client (in the same event loop) is still reading it.
            await timing.sleep_until(due - _RENDER_AHEAD_SECS)
            rendered = render_chars(job.text, sock.fmt, self.ms_per_char)
            per_message = self._chars_per_chunk()
            messages = [
                self._audio_message(sock, job.context, rendered.slice(i, i + per_message))
                for i in range(0, len(job.text), per_message)
            ]
            for k, prepared in enumerate(messages):
                if k and self.chunk_interval:
                    due += self.chunk_interval
                await timing.sleep_until(due)
                await self._send_audio(sock, prepared)
                await self._check_faults(sock)
                if sock.finished:
                    return
                # The client gets to read this message before the fake goes on (the next
                # message, or rendering the next sentence), as it would across a network:
                # this fake shares the client's event loop.
                await asyncio.sleep(0)

    def _chars_per_chunk(self) -> int:
        return max(1, round(self.chunk_ms / self.ms_per_char))

    def _audio_message(
        self, sock: _Socket, ctx: _Context, rendered: RenderedChars
    ) -> _AudioMessage:
        alignment = {
            "chars": rendered.chars,
            "charStartTimesMs": rendered.start_ms,
            self.durations_key: rendered.duration_ms,
        }
        message: dict[str, Any] = {
            "audio": base64.b64encode(rendered.audio).decode("ascii"),
            "normalizedAlignment": alignment,
            "alignment": dict(alignment),
        }
        if sock.conn.multi:
            message["contextId"] = ctx.id
        else:
            message["isFinal"] = None
        return _AudioMessage(message, json.dumps(message), rendered.audio)

    async def _send_audio(self, sock: _Socket, prepared: _AudioMessage) -> None:
        if await sock.send(prepared.message, prepared.text):
            sock.conn.audio += prepared.audio
            sock.audio_chunks_sent += 1

    async def _watchdog(self, sock: _Socket) -> None:
        while True:
            if sock.busy or not sock.jobs.empty():
                sock.last_text = sock.loop.time()  # still speaking: the client is not idle
            idle = sock.loop.time() - sock.last_text
            if idle >= sock.inactivity_timeout:
                seconds = f"{sock.inactivity_timeout:g}"
                reason = (
                    f"Have not received a new text input within the timeout of {seconds} seconds. "
                    "Streaming input terminated. Please make sure to either feed the input in the "
                    'timely manner, or to send the end of input text (empty string "") when done.'
                )
                # The real service cuts this reason to what a close frame carries.
                await sock.close(
                    1008, reason.encode()[:_CLOSE_REASON_MAX].decode("utf-8", "ignore")
                )
                return
            await asyncio.sleep(sock.inactivity_timeout - idle)

    async def _check_faults(self, sock: _Socket) -> None:
        index = sock.conn.index
        for fault in self.faults:
            if fault.connection is not None and fault.connection != index:
                continue
            if fault.after_audio_chunks is not None:
                due = sock.audio_chunks_sent >= fault.after_audio_chunks
            else:
                due = len(sock.conn.messages) >= fault.after_messages
            if not due:
                continue
            self.faults.remove(fault)
            logger.debug("FakeElevenLabs: injecting %s on connection %d", fault.kind, index)
            if fault.kind == "drop":
                sock.drop()
            elif fault.kind == "close":
                await sock.close(fault.close_code or 1011, fault.message)
            else:
                await sock.send_error(fault.message, fault.error, fault.code, fault.close_code)
            return

    # --- HTTP -----------------------------------------------------------------------------
    async def _http_tts(self, request: web.Request) -> web.StreamResponse:
        try:
            body = await request.json()
        except ValueError:
            body = None
        received_at = timing.now()
        record = ElevenLabsHttpRequest(
            path=request.path,
            voice_id=request.match_info["voice_id"],
            params=dict(request.query),
            headers={k.lower(): v for k, v in request.headers.items()},
            json=body if isinstance(body, dict) else {},
        )
        self.http_requests.append(record)
        self._notify()

        def error(status: int, detail: dict[str, Any]) -> web.Response:
            record.status = status
            return web.json_response({"detail": detail}, status=status)

        if self.api_key is not None and request.headers.get("xi-api-key") != self.api_key:
            return error(401, {"status": "invalid_api_key", "message": "Invalid API key"})
        if not isinstance(body, dict) or not isinstance(body.get("text"), str) or not body["text"]:
            return error(422, {"status": "invalid_request", "message": "Field 'text' is required"})
        fmt_name = request.query.get("output_format", "mp3_44100_128")
        fmt = parse_output_format(fmt_name)
        if fmt is None:
            return error(
                400,
                {
                    "status": "invalid_output_format",
                    "message": f"FakeElevenLabs cannot produce {fmt_name!r}: use ulaw_8000 or pcm_8000..pcm_48000",
                },
            )
        fault = self.http_faults.pop(0) if self.http_faults else None
        if fault is not None and fault.status is not None:
            return error(
                fault.status,
                fault.detail
                or {"status": "fake_fault", "message": "The fake was told to fail here."},
            )

        # Rendered before the wait, so the first audio goes out at its due time.
        text: str = body["text"]
        rendered = render_chars(text, fmt, self.ms_per_char)
        per_chunk = self._chars_per_chunk()
        due = received_at + self.first_audio_latency
        await timing.sleep_until(due)
        response = web.StreamResponse(status=200, headers={"Content-Type": fmt.content_type})
        response.enable_chunked_encoding()
        await response.prepare(request)
        for n, i in enumerate(range(0, len(text), per_chunk)):
            if (
                fault is not None
                and fault.drop_after_chunks is not None
                and n >= fault.drop_after_chunks
            ):
                if request.transport is not None:
                    request.transport.abort()
                return response
            audio = rendered.slice(i, i + per_chunk).audio
            if i and self.chunk_interval:
                due += self.chunk_interval
                await timing.sleep_until(due)
            await response.write(audio)
            record.audio_bytes += len(audio)
            self._notify()
        await response.write_eof()
        return response
