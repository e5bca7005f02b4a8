"""A local fake of Deepgram's live transcription websocket (`/v1/listen`), scripted by audio time.

The fake speaks the real wire protocol, so the official `deepgram-sdk` client (or any
websocket client) works against it unchanged::

    utterances = [DeepgramUtterance("Hello there.", start=0.5, end=1.2)]
    async with FakeDeepgram(api_key="test-key", utterances=utterances, latency=0.15) as dg:
        client = AsyncDeepgramClient(
            api_key="test-key",
            environment=DeepgramClientEnvironment(base=dg.http_url, production=dg.url, ...),
        )

How the script plays: each utterance lies at `start`..`end` seconds of the caller's audio,
measured by the audio the fake has received (bytes / (sample_rate * bytes per sample)).
When the audio reaches `end` plus the endpointing delay, the final `Results` goes out after
`latency`; interim results, `SpeechStarted` and `UtteranceEnd` follow the query parameters
as the real service does. A connection opened after the fake dropped or closed one continues
that call: the fake finds where the new connection's first audio sits in what it heard
before (a client that resends the gap), so an utterance is transcribed in full only if the
client resent its beginning. Send varied audio in reconnect tests; constant audio (pure
silence) cannot be located and is taken as a minimal resend.

With ``hearing=DeepgramHearing(texts=[...])`` the fake also transcribes what it hears: speech
found by its level in each connection's audio becomes an utterance (the next of ``texts``),
ended by the connection's endpointing silence or by ``Finalize`` (see ``_hearing``), for
callers that speak when they choose rather than on a script.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http import HTTPStatus
from typing import Any, Literal
from urllib.parse import parse_qsl, urlsplit

from voxpipe.testing import timing
from voxpipe.testing.fakes._base import FakeServer
from voxpipe.testing.fakes._hearing import DeepgramHearing, SpeechSpans

try:
    from websockets.asyncio.server import Server, ServerConnection, serve
    from websockets.datastructures import Headers
    from websockets.exceptions import ConnectionClosed
    from websockets.http11 import Request, Response
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "voxpipe.testing.fakes.deepgram needs the 'testing' extra (websockets): "
        "pip install 'voxpipe[testing]'"
    ) from exc

__all__ = [
    "DeepgramConnection",
    "DeepgramFault",
    "DeepgramHearing",
    "DeepgramUtterance",
    "DeepgramWord",
    "FakeDeepgram",
]

logger = logging.getLogger(__name__)

_BYTES_PER_SAMPLE = {"linear16": 2, "mulaw": 1, "alaw": 1}
_INACTIVITY_REASON = (
    "Deepgram did not receive audio data or a text message within the timeout window. "
    "See https://dpgr.am/net0001"
)
# Hearing: how fast words come in interim results of speech still going on.
_HEARD_WORDS_PER_S = 3.0
# Where a reconnected client's first audio is looked up in what the call sent before.
_ALIGN_PROBE_SECONDS = 0.1


@dataclass(slots=True)
class DeepgramWord:
    """One word of a transcript, times in seconds of the caller's audio."""

    word: str
    start: float
    end: float
    confidence: float = 0.99
    punctuated_word: str | None = None


@dataclass(slots=True)
class DeepgramUtterance:
    """Something the caller says, lying at `start`..`end` seconds of the call's audio."""

    text: str
    start: float
    end: float
    confidence: float = 0.98
    # None: the text's words spread evenly over start..end, each with `confidence`.
    words: list[DeepgramWord] | None = None
    latency: float | None = None  # None: the fake's latency
    interim: bool = True  # send interim results while it is spoken (if the client asked)

    def __post_init__(self) -> None:
        if not 0 <= self.start < self.end:
            raise ValueError(
                f"utterance {self.text!r}: need 0 <= start < end, got {self.start}..{self.end}"
            )

    def word_list(self) -> list[DeepgramWord]:
        if self.words is not None:
            return list(self.words)
        tokens = self.text.split()
        step = (self.end - self.start) / max(len(tokens), 1)
        return [
            DeepgramWord(
                word=re.sub(r"[^\w']", "", tok).lower() or tok.lower(),
                start=round(self.start + i * step, 3),
                end=round(self.start + (i + 1) * step, 3),
                confidence=self.confidence,
                punctuated_word=tok,
            )
            for i, tok in enumerate(tokens)
        ]


@dataclass(slots=True)
class DeepgramFault:
    """A failure the fake injects once a connection has received enough audio.

    kind: "drop" aborts the TCP connection (no close frame); "close" sends a close frame
    with `close_code`; "error" sends an `Error` message, then closes with `close_code`
    unless it is None. `connection` is the index of the connection it applies to (None:
    whichever connection reaches the point first). The point is `after_bytes` or
    `after_seconds` of audio received on that connection (0 = at once on connect).
    """

    kind: Literal["drop", "close", "error"] = "drop"
    after_seconds: float | None = None
    after_bytes: int | None = None
    connection: int | None = 0
    close_code: int | None = 1011
    reason: str = ""
    description: str = "The fake was told to fail here."
    variant: str = "fake_fault"
    code: str = "FAKE-0001"


@dataclass(slots=True)
class DeepgramConnection:
    """What one client connection sent and received, for assertions."""

    index: int
    path: str
    params: dict[str, str]
    query: list[tuple[str, str]]
    headers: dict[str, str]
    call: int = 0  # which call (session) it belongs to; a reconnect continues its call
    start_offset: float | None = None  # where its audio begins in the call's audio (s)
    audio: bytearray = field(default_factory=bytearray)
    bytes_per_second: int = 0
    keepalives: int = 0
    finalizes: int = 0
    close_streams: int = 0
    control_messages: list[dict[str, Any]] = field(default_factory=list)
    sent: list[dict[str, Any]] = field(default_factory=list)
    closed: bool = False
    close_code: int | None = None
    close_reason: str = ""
    closed_by_fake: bool = False

    @property
    def audio_bytes(self) -> int:
        return len(self.audio)

    @property
    def audio_seconds(self) -> float:
        return len(self.audio) / self.bytes_per_second if self.bytes_per_second else 0.0

    def sent_of_type(self, kind: str) -> list[dict[str, Any]]:
        return [m for m in self.sent if m.get("type") == kind]


@dataclass(slots=True)
class _Call:
    """The audio of one call, kept across reconnects to locate resent audio."""

    index: int
    audio: bytearray = field(default_factory=bytearray)
    awaiting_resume: bool = False
    latest: int = -1  # index of the call's most recent connection


@dataclass(slots=True)
class _UtteranceState:
    started: bool = False
    final_upto: int = 0  # words already sent in a final result
    final_done: bool = False
    interim_count: int = 0
    last_interim_at: float = -1e9
    last_word_end: float | None = None
    utterance_end_sent: bool = False


class _Stream:
    """Live state of one connection."""

    def __init__(self, fake: FakeDeepgram, ws: ServerConnection, conn: DeepgramConnection) -> None:
        self.fake = fake
        self.ws = ws
        self.conn = conn
        self.call: _Call | None = None
        self.offset_bytes: int | None = None
        # The script: the fake's utterances, then (hearing) those heard on this connection.
        self.utterances = list(fake.utterances)
        self.states = [_UtteranceState() for _ in self.utterances]
        self.words = [u.word_list() for u in self.utterances]
        self.segment_start = 0.0  # connection time where the next result's span begins
        self.loop = asyncio.get_running_loop()
        self.last_activity = self.loop.time()
        # When the message being handled came in (timing.now()): latencies count from it.
        self.received_at = timing.now()
        self.outbox: asyncio.Queue[tuple[float, dict[str, Any] | None]] = asyncio.Queue()
        self.request_id = str(uuid.uuid4())
        self.closing = False
        self.close_task: asyncio.Task[None] | None = None
        p = conn.params
        self.channels = int(p.get("channels", "1"))
        self.interim = p.get("interim_results", "false").lower() == "true"
        self.vad_events = p.get("vad_events", "false").lower() == "true"
        self.punctuate = any(
            p.get(k, "false").lower() == "true" for k in ("punctuate", "smart_format")
        )
        endpointing = p.get("endpointing", "10").lower()
        self.endpointing = None if endpointing == "false" else int(endpointing) / 1000.0
        ue = p.get("utterance_end_ms")
        self.utterance_end = int(ue) / 1000.0 if ue else None
        self.model = p.get("model", "base")
        self.spans: SpeechSpans | None = None
        if fake.hearing is not None:
            self.spans = SpeechSpans(
                fake.hearing,
                encoding=p["encoding"],
                sample_rate=int(p["sample_rate"]),
                channels=self.channels,
            )
        self.heard_bytes = 0  # audio of this connection the ears have taken in
        self.texts_used = 0
        self.interim_at = 0.0  # speech seconds of the open utterance at its last interim

    # --- positions -------------------------------------------------------------------
    @property
    def bps(self) -> int:
        return self.conn.bytes_per_second

    @property
    def base(self) -> float:
        """Call time (s) at which this connection's audio begins."""
        return (self.offset_bytes or 0) / self.bps

    @property
    def now(self) -> float:
        """Call time (s) of the audio received so far on this connection."""
        return ((self.offset_bytes or 0) + len(self.conn.audio)) / self.bps

    # --- outgoing ----------------------------------------------------------------------
    def queue(self, message: dict[str, Any] | None, latency: float) -> None:
        """Send ``message`` ``latency`` s after the message being handled came in."""
        self.outbox.put_nowait((self.received_at + latency, message))

    async def sender(self) -> None:
        while True:
            due, message = await self.outbox.get()
            # Encoded before the wait, so the message goes out at its due time.
            text = json.dumps(message) if message is not None else None
            await timing.sleep_until(due)
            if message is None:  # end of stream after CloseStream
                await self.fake._close(self, 1000, "")
                return
            await self.send(message, text)
            # The client gets to read this message before the next one due goes out, as it
            # would across a network (the fake shares its event loop: a burst would hold the
            # client's read back behind the fake's own work).
            await asyncio.sleep(0)

    async def send(self, message: dict[str, Any], text: str | None = None) -> None:
        """Send ``message`` (``text``: its JSON, when already encoded)."""
        try:
            await self.ws.send(json.dumps(message) if text is None else text)
        except ConnectionClosed:
            return
        self.conn.sent.append(message)
        self.fake._notify()

    # --- message builders --------------------------------------------------------------
    def _metadata_block(self) -> dict[str, Any]:
        return {
            "request_id": self.request_id,
            "model_info": {"name": f"{self.model}-fake", "version": "fake", "arch": self.model},
            "model_uuid": str(uuid.uuid5(uuid.NAMESPACE_URL, f"deepgram-fake/{self.model}")),
        }

    def results(
        self,
        words: list[DeepgramWord],
        confidence: float,
        *,
        is_final: bool,
        speech_final: bool,
        from_finalize: bool,
    ) -> dict[str, Any]:
        base = self.base
        now = self.now - base
        start = self.segment_start
        word_dicts = []
        for w in words:
            d: dict[str, Any] = {
                "word": w.word,
                "start": round(w.start - base, 3),
                "end": round(w.end - base, 3),
                "confidence": w.confidence,
            }
            if self.punctuate:
                d["punctuated_word"] = w.punctuated_word or w.word
            word_dicts.append(d)
        if self.punctuate:
            transcript = " ".join(w.punctuated_word or w.word for w in words)
        else:
            transcript = " ".join(w.word for w in words)
        if is_final:
            self.segment_start = now
        return {
            "type": "Results",
            "channel_index": [0, self.channels],
            "duration": round(max(now - start, 0.0), 3),
            "start": round(start, 3),
            "is_final": is_final,
            "speech_final": speech_final,
            "from_finalize": from_finalize,
            "channel": {
                "alternatives": [
                    {
                        "transcript": transcript,
                        "confidence": confidence if words else 0.0,
                        "words": word_dicts,
                    }
                ]
            },
            "metadata": self._metadata_block(),
        }

    def metadata(self) -> dict[str, Any]:
        return {
            "type": "Metadata",
            "transaction_key": "deprecated",
            "request_id": self.request_id,
            "created": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "duration": round(self.conn.audio_seconds, 3),
            "channels": self.channels,
        }

    # --- the script ----------------------------------------------------------------------
    def latency_of(self, index: int) -> float:
        u = self.utterances[index]
        return self.fake.latency if u.latency is None else u.latency

    def heard_words(self, index: int) -> list[DeepgramWord]:
        """Words of an utterance whose audio this connection received from their start."""
        base = self.base - 1e-9
        return [w for w in self.words[index] if w.start >= base]

    def listen(self) -> None:
        """Hearing: add the utterances that ended in the audio received since the last call."""
        spans = self.spans
        if spans is None:
            return
        audio = self.conn.audio[self.heard_bytes :]
        self.heard_bytes = len(self.conn.audio)
        was_open = spans.open_start is not None
        for onset, end in spans.feed(audio, self.endpointing or 0.0):
            self._heard(onset, end)
            was_open = False
        if self.vad_events and not was_open and spans.open_start is not None:
            at = {"type": "SpeechStarted", "channel": [0], "timestamp": round(spans.open_start, 3)}
            self.queue(at, self.fake.latency)
        if self.interim and spans.open_start is not None:
            spoken = spans.last_speech_end - spans.open_start
            if spoken - self.interim_at >= self.fake.interim_interval:
                self.interim_at = spoken
                self._interim(spans.open_start, spoken)

    def close_heard(self) -> None:
        """Hearing: the utterance being spoken ends now (the client sent Finalize)."""
        if self.spans is not None:
            span = self.spans.close()
            if span is not None:
                self._heard(*span)

    def _next_text(self) -> str:
        assert self.fake.hearing is not None
        texts = self.fake.hearing.texts
        return texts[self.texts_used % len(texts)]

    def _heard(self, onset: float, end: float) -> None:
        u = DeepgramUtterance(self._next_text(), start=self.base + onset, end=self.base + end)
        self.texts_used += 1
        self.interim_at = 0.0
        self.utterances.append(u)
        self.states.append(_UtteranceState(started=True))
        self.words.append(u.word_list())

    def _interim(self, onset: float, spoken: float) -> None:
        """An interim result for speech still going on: the next text's words so far."""
        tokens = self._next_text().split()
        count = min(len(tokens), max(1, int(spoken * _HEARD_WORDS_PER_S)))
        step = spoken / count
        start = self.base + onset
        words = [
            DeepgramWord(
                word=re.sub(r"[^\w']", "", tok).lower() or tok.lower(),
                start=round(start + i * step, 3),
                end=round(start + (i + 1) * step, 3),
                punctuated_word=tok,
            )
            for i, tok in enumerate(tokens[:count])
        ]
        msg = self.results(words, 0.9, is_final=False, speech_final=False, from_finalize=False)
        self.queue(msg, self.fake.latency)

    def advance(self) -> None:
        """Emit what the script says for the audio received so far."""
        now, base = self.now, self.base
        for i, u in enumerate(self.utterances):
            st = self.states[i]
            words = self.heard_words(i)
            if u.end <= base or not words:
                continue  # all of it was before this connection's audio
            speech_at = max(u.start, base)
            if not st.started and now >= speech_at:
                st.started = True
                if self.vad_events:
                    msg = {
                        "type": "SpeechStarted",
                        "channel": [0],
                        "timestamp": round(speech_at - base, 3),
                    }
                    self.queue(msg, self.latency_of(i))
            pending = words[st.final_upto :]
            if st.final_done:
                pass
            elif now >= u.end + (self.endpointing or 0.0):
                self.finalize_utterance(
                    i, pending, speech_final=self.endpointing is not None, from_finalize=False
                )
            elif self.interim and u.interim:
                heard = [w for w in pending if w.end <= now]
                if (
                    len(heard) > st.interim_count
                    and now - st.last_interim_at >= self.fake.interim_interval
                ):
                    st.interim_count = len(heard)
                    st.last_interim_at = now
                    msg = self.results(
                        heard, u.confidence, is_final=False, speech_final=False, from_finalize=False
                    )
                    self.queue(msg, self.latency_of(i))
            if (
                self.utterance_end is not None
                and self.interim
                and st.final_done
                and st.last_word_end is not None
                and not st.utterance_end_sent
                and now >= st.last_word_end + self.utterance_end
            ):
                st.utterance_end_sent = True
                msg = {
                    "type": "UtteranceEnd",
                    "channel": [0, self.channels],
                    "last_word_end": round(st.last_word_end - base, 3),
                }
                self.queue(msg, self.latency_of(i))

    def finalize_utterance(
        self, index: int, words: list[DeepgramWord], *, speech_final: bool, from_finalize: bool
    ) -> None:
        st = self.states[index]
        st.final_upto += len(words)
        st.final_done = st.final_upto >= len(self.heard_words(index))
        st.interim_count = 0
        if words:
            st.last_word_end = words[-1].end
        msg = self.results(
            words,
            self.utterances[index].confidence,
            is_final=True,
            speech_final=speech_final,
            from_finalize=from_finalize,
        )
        self.queue(msg, self.latency_of(index))

    def flush_pending(self, *, from_finalize: bool) -> bool:
        """Finalize words already heard (Finalize / CloseStream); True if any were pending."""
        now = self.now
        flushed = False
        for i in range(len(self.utterances)):
            st = self.states[i]
            if not st.started or st.final_done:
                continue
            heard = [w for w in self.heard_words(i)[st.final_upto :] if w.start < now]
            if heard:
                self.finalize_utterance(i, heard, speech_final=False, from_finalize=from_finalize)
                flushed = True
        return flushed


class FakeDeepgram(FakeServer):
    """Fake Deepgram live STT websocket on 127.0.0.1, scripted by utterances and faults."""

    def __init__(
        self,
        *,
        api_key: str | None = "test-key",
        utterances: list[DeepgramUtterance] | None = None,
        latency: float = 0.15,
        interim_interval: float = 0.3,
        inactivity_timeout: float = 10.0,
        faults: list[DeepgramFault] | None = None,
        resume_dropped_calls: bool = True,
        hearing: DeepgramHearing | None = None,
    ) -> None:
        super().__init__()
        self.hearing = hearing
        self.api_key = api_key
        self.utterances = list(utterances or [])
        self.latency = latency
        self.interim_interval = interim_interval
        self.inactivity_timeout = inactivity_timeout
        self.faults = list(faults or [])
        self.resume_dropped_calls = resume_dropped_calls
        self.connections: list[DeepgramConnection] = []
        self.rejected: list[tuple[int, dict[str, str]]] = []  # (HTTP status, headers) refused
        self._calls: list[_Call] = []
        self._streams: dict[int, _Stream] = {}
        self._server: Server | None = None
        self.outages = 0  # go_down() calls

    # --- lifecycle ----------------------------------------------------------------------
    @property
    def url(self) -> str:
        """Base websocket URL (what the SDK's `production` environment and DEEPGRAM_BASE_URL take)."""
        return f"ws://127.0.0.1:{self.port}"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def listen_url(self) -> str:
        return f"{self.url}/v1/listen"

    async def start(self) -> None:
        self._server = await serve(
            self._handler,
            "127.0.0.1",
            self.port,  # 0 at first; the same port again after an outage
            process_request=self._process_request,
            process_response=self._process_response,
            max_size=2**22,
            close_timeout=2.0,  # a client that never answers our close frame cannot stall stop()
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            server, self._server = self._server, None
            server.close()
            await server.wait_closed()

    async def go_down(self) -> None:
        """An outage: open connections are aborted (no close frame) and new ones refused
        (nothing listens on the port) until ``come_back``."""
        self.outages += 1
        for stream in list(self._streams.values()):
            self._drop(stream)
        if self._server is not None:
            server, self._server = self._server, None
            server.close(close_connections=False)
            await server.wait_closed()
        self._notify()

    async def come_back(self) -> None:
        """End an outage: listen again on the same port (the URL clients have stays valid)."""
        if self._server is None:
            await self.start()
        self._notify()

    # --- recorded totals ---------------------------------------------------------------
    @property
    def connection_count(self) -> int:
        return len(self.connections)

    @property
    def total_audio_bytes(self) -> int:
        return sum(c.audio_bytes for c in self.connections)

    @property
    def keepalive_count(self) -> int:
        return sum(c.keepalives for c in self.connections)

    @property
    def finalize_count(self) -> int:
        return sum(c.finalizes for c in self.connections)

    @property
    def close_stream_count(self) -> int:
        return sum(c.close_streams for c in self.connections)

    def sent_of_type(self, kind: str) -> list[dict[str, Any]]:
        """Every message of one type sent on any connection, in connection order."""
        return [m for c in self.connections for m in c.sent_of_type(kind)]

    def final_transcripts(self) -> list[str]:
        """Transcripts of every non-empty final result sent so far."""
        out = []
        for m in self.sent_of_type("Results"):
            text = m["channel"]["alternatives"][0]["transcript"]
            if m["is_final"] and text:
                out.append(text)
        return out

    # --- acting now ------------------------------------------------------------------------
    def _open(self, connection: int | None) -> list[_Stream]:
        return [s for i, s in self._streams.items() if connection is None or i == connection]

    async def drop(self, connection: int | None = None) -> None:
        """Abort open connections now (no close frame), like a network failure."""
        for stream in self._open(connection):
            self._drop(stream)

    async def close_connections(
        self, code: int = 1011, reason: str = "", connection: int | None = None
    ) -> None:
        """Close open connections now with a close frame."""
        for stream in self._open(connection):
            await self._close(stream, code, reason)

    async def send_error(
        self,
        description: str = "The fake was told to fail here.",
        *,
        variant: str = "fake_fault",
        code: str = "FAKE-0001",
        close_code: int | None = 1011,
        connection: int | None = None,
    ) -> None:
        """Send an `Error` message on open connections, then close them unless close_code is None."""
        for stream in self._open(connection):
            await self._send_error(stream, description, variant, code, close_code)

    # --- handshake ------------------------------------------------------------------------
    def _process_request(self, ws: ServerConnection, request: Request) -> Response | None:
        parts = urlsplit(request.path)
        headers = {k.lower(): v for k, v in request.headers.raw_items()}
        if parts.path.rstrip("/") != "/v1/listen":
            return self._refuse(
                ws, HTTPStatus.NOT_FOUND, "NOT_FOUND", f"no route {parts.path}", headers
            )
        if self.api_key is not None:
            auth = request.headers.get("Authorization", "")
            scheme, _, key = auth.partition(" ")
            if scheme.lower() not in ("token", "bearer") or key.strip() != self.api_key:
                return self._refuse(
                    ws, HTTPStatus.UNAUTHORIZED, "INVALID_AUTH", "Invalid credentials.", headers
                )
        params = dict(parse_qsl(parts.query))
        encoding = params.get("encoding")
        if encoding not in _BYTES_PER_SAMPLE or "sample_rate" not in params:
            return self._refuse(
                ws,
                HTTPStatus.BAD_REQUEST,
                "Bad Request",
                "FakeDeepgram needs raw audio: encoding=linear16|mulaw|alaw and sample_rate",
                headers,
            )
        if (
            params.get("utterance_end_ms")
            and params.get("interim_results", "false").lower() != "true"
        ):
            return self._refuse(
                ws,
                HTTPStatus.BAD_REQUEST,
                "Bad Request",
                "utterance_end_ms requires interim_results=true",
                headers,
            )
        return None

    def _refuse(
        self,
        ws: ServerConnection,
        status: HTTPStatus,
        err_code: str,
        msg: str,
        headers: dict[str, str],
    ) -> Response:
        self.rejected.append((int(status), headers))
        self._notify()
        body = json.dumps({"err_code": err_code, "err_msg": msg, "request_id": str(uuid.uuid4())})
        response = ws.respond(status, body)
        response.headers["Content-Type"] = "application/json"
        return response

    def _process_response(self, ws: ServerConnection, request: Request, response: Response) -> None:
        response.headers["dg-request-id"] = str(uuid.uuid4())

    # --- connection --------------------------------------------------------------------------
    async def _handler(self, ws: ServerConnection) -> None:
        assert ws.request is not None
        parts = urlsplit(ws.request.path)
        query = parse_qsl(parts.query)
        params = dict(query)
        conn = DeepgramConnection(
            index=len(self.connections),
            path=parts.path,
            params=params,
            query=query,
            headers=_headers_dict(ws.request.headers),
            bytes_per_second=int(params["sample_rate"])
            * int(params.get("channels", "1"))
            * _BYTES_PER_SAMPLE[params["encoding"]],
        )
        self.connections.append(conn)
        stream = _Stream(self, ws, conn)
        self._attach_call(stream)
        self._streams[conn.index] = stream
        self._notify()
        tasks = [
            asyncio.create_task(stream.sender(), name=f"fake-deepgram-send-{conn.index}"),
            asyncio.create_task(self._watchdog(stream), name=f"fake-deepgram-idle-{conn.index}"),
        ]
        try:
            await self._check_faults(stream, 0)
            async for message in ws:
                if conn.close_code is not None:
                    continue  # the fake is closing it: what still arrives is not taken in
                stream.last_activity = stream.loop.time()
                if isinstance(message, bytes):
                    await self._on_audio(stream, message)
                else:
                    await self._on_text(stream, message)
        except ConnectionClosed:
            pass
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if stream.close_task is not None:
                await asyncio.gather(stream.close_task, return_exceptions=True)
            self._streams.pop(conn.index, None)
            conn.closed = True
            if conn.close_code is None:
                conn.close_code = ws.close_code
                conn.close_reason = ws.close_reason or ""
            # A connection that ended without a clean close from the client may be followed by
            # a reconnect that continues the same call.
            clean = not conn.closed_by_fake and ws.close_code in (1000, 1001)
            if not clean:
                self._expect_resume(stream)
            self._notify()

    def _attach_call(self, stream: _Stream) -> None:
        call = None
        if self.resume_dropped_calls:
            call = next((c for c in reversed(self._calls) if c.awaiting_resume), None)
        if call is None:
            call = _Call(index=len(self._calls))
            self._calls.append(call)
            stream.offset_bytes = 0
            stream.conn.start_offset = 0.0
        else:
            call.awaiting_resume = False  # found by content once its first audio arrives
        call.latest = stream.conn.index
        stream.call = call
        stream.conn.call = call.index

    def _align(self, stream: _Stream, force: bool) -> bool:
        """Place a reconnected connection's audio within its call's audio; False: need more."""
        if stream.offset_bytes is not None:
            return True
        assert stream.call is not None
        history, audio = stream.call.audio, stream.conn.audio
        sample = _BYTES_PER_SAMPLE[stream.conn.params["encoding"]] * stream.channels
        probe_len = max(int(stream.bps * _ALIGN_PROBE_SECONDS) // sample * sample, sample)
        if len(audio) < probe_len and not force:
            return False
        probe = bytes(audio[: min(probe_len, len(audio))])
        end = len(history)
        offset = len(history)  # nothing resent: the new audio continues the call
        while probe:
            pos = history.rfind(probe, 0, end)
            if pos < 0:
                break
            if pos % sample == 0:
                offset = pos
                break
            end = pos + len(probe) - 1
        stream.offset_bytes = offset
        stream.conn.start_offset = offset / stream.bps
        logger.debug(
            "FakeDeepgram: connection %d resumes call at %.3f s",
            stream.conn.index,
            stream.conn.start_offset,
        )
        return True

    async def _on_audio(self, stream: _Stream, chunk: bytes) -> None:
        stream.received_at = timing.now()
        conn = stream.conn
        limit = self._fault_limit(stream)
        if limit is not None and len(conn.audio) + len(chunk) >= limit:
            chunk = chunk[: max(limit - len(conn.audio), 0)]
        conn.audio += chunk
        if self._align(stream, force=False):
            self._extend_call(stream)
            stream.listen()
            stream.advance()
        self._notify()
        await self._check_faults(stream, len(conn.audio))

    def _extend_call(self, stream: _Stream) -> None:
        assert stream.call is not None and stream.offset_bytes is not None
        history = stream.call.audio
        heard_to = stream.offset_bytes + len(stream.conn.audio)
        if heard_to > len(history):
            history += stream.conn.audio[len(history) - stream.offset_bytes :]

    async def _on_text(self, stream: _Stream, text: str) -> None:
        stream.received_at = timing.now()
        conn = stream.conn
        try:
            message = json.loads(text)
        except ValueError:
            message = {"type": None, "raw": text}
        conn.control_messages.append(message)
        kind = message.get("type") if isinstance(message, dict) else None
        if kind == "KeepAlive":
            conn.keepalives += 1
        elif kind == "Finalize":
            conn.finalizes += 1
            self._align(stream, force=True)
            self._extend_call(stream)
            stream.listen()
            stream.close_heard()
            if not stream.flush_pending(from_finalize=True):
                msg = stream.results([], 0.0, is_final=True, speech_final=False, from_finalize=True)
                stream.queue(msg, self.latency)
        elif kind == "CloseStream":
            conn.close_streams += 1
            if not stream.closing:
                stream.closing = True
                self._align(stream, force=True)
                self._extend_call(stream)
                stream.listen()
                stream.close_heard()
                stream.flush_pending(from_finalize=False)
                stream.queue(stream.metadata(), self.latency)
                stream.queue(None, self.latency)
        else:
            logger.debug("FakeDeepgram: ignoring text message %r", text[:200])
        self._notify()

    async def _watchdog(self, stream: _Stream) -> None:
        while True:
            idle_for = stream.loop.time() - stream.last_activity
            if idle_for >= self.inactivity_timeout:
                await self._close(stream, 1011, _INACTIVITY_REASON)
                return
            await asyncio.sleep(self.inactivity_timeout - idle_for)

    # --- faults -------------------------------------------------------------------------------
    def _fault_bytes(self, stream: _Stream, fault: DeepgramFault) -> int:
        if fault.after_bytes is not None:
            return fault.after_bytes
        seconds = fault.after_seconds or 0.0
        return int(seconds * stream.bps)

    def _faults_for(self, stream: _Stream) -> list[DeepgramFault]:
        index = stream.conn.index
        return [f for f in self.faults if f.connection is None or f.connection == index]

    def _fault_limit(self, stream: _Stream) -> int | None:
        """Bytes after which a fault ends this connection: audio past it is never taken in."""
        limits = [
            self._fault_bytes(stream, f)
            for f in self._faults_for(stream)
            if f.kind != "error" or f.close_code is not None
        ]
        return min(limits) if limits else None

    async def _check_faults(self, stream: _Stream, received: int) -> None:
        for fault in self._faults_for(stream):
            if received >= self._fault_bytes(stream, fault):
                self.faults.remove(fault)
                logger.debug(
                    "FakeDeepgram: injecting %s on connection %d", fault.kind, stream.conn.index
                )
                if fault.kind == "drop":
                    self._drop(stream)
                elif fault.kind == "close":
                    await self._close(stream, fault.close_code or 1011, fault.reason)
                else:
                    await self._send_error(
                        stream, fault.description, fault.variant, fault.code, fault.close_code
                    )
                return

    def _drop(self, stream: _Stream) -> None:
        stream.conn.closed_by_fake = True
        stream.conn.close_code = 1006
        self._expect_resume(stream)
        stream.ws.transport.abort()

    def _expect_resume(self, stream: _Stream) -> None:
        # Marked as soon as the fake ends it, so a client that reconnects at once finds it;
        # never once a newer connection has taken the call over.
        call = stream.call
        if call is not None and call.latest == stream.conn.index:
            call.awaiting_resume = True

    async def _close(self, stream: _Stream, code: int, reason: str) -> None:
        if stream.close_task is not None:
            return
        stream.conn.closed_by_fake = code != 1000
        stream.conn.close_code = code
        stream.conn.close_reason = reason
        if stream.conn.closed_by_fake:
            self._expect_resume(stream)
        # The closing handshake runs beside the receive loop, which must keep draining
        # (and discarding) what the client still sends, or the client's close frame would
        # sit unread behind a full receive queue until the close timeout.
        stream.close_task = asyncio.create_task(stream.ws.close(code, reason))

    async def _send_error(
        self, stream: _Stream, description: str, variant: str, code: str, close_code: int | None
    ) -> None:
        await stream.send(
            {
                "type": "Error",
                "variant": variant,
                "description": description,
                "code": code,
                "message": description,
            }
        )
        if close_code is not None:
            await self._close(stream, close_code, description[:100])


def _headers_dict(headers: Headers) -> dict[str, str]:
    return {k.lower(): v for k, v in headers.raw_items()}
