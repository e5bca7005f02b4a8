"""ElevenLabs text-to-speech over the stream-input websocket, with an HTTP streaming fallback.

Each reply gets its own stream-input socket (``eleven_flash_v2_5`` by default); sentences go
out as the LLM completes them (each with ``flush`` so it is spoken at once) and audio comes
back with per-character alignment, which places each word's ``TTSTextFrame`` after its audio.
The output format matches the wire: ``ulaw_8000`` for phone calls, passed through untouched;
``pcm_<rate>`` otherwise. A socket for the next reply is opened ahead of time, so a reply does
not wait for a websocket handshake. An interruption closes the reply's socket.

If a socket fails (refused, dropped, an error message), the reply is not lost: a stream that
failed before any audio is retried once on a new socket, otherwise the words not yet heard
and the rest of the reply are spoken through the HTTP streaming endpoint. When that fails too
the provider is down: the outage is reported (an outage policy says its pre-rendered apology),
replies are skipped (nothing unspoken enters the context) and a socket is opened now and then
(``probe``) until ElevenLabs answers again or the outage grace runs out. Lines for the cache
are rendered over HTTP (one request each, off the reply sockets).

The SDK's realtime helper is synchronous and always uses ``wss``, so the socket is driven with
the ``websockets`` asyncio client; the HTTP fallback uses ``httpx`` (as the SDK itself does).
Environment (through ``voxpipe.config.settings``): ``ELEVENLABS_API_KEY``,
``ELEVENLABS_VOICE_ID``, ``ELEVENLABS_BASE_URL`` (``http://`` means ``ws://``, ``https://`` means
``wss://``).
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from voxpipe.frames import CancelFrame, EndFrame, StartFrame
from voxpipe.processors.outage import DEFAULT_OUTAGE_GRACE_S
from voxpipe.processors.tts.base import TTSService, speech_of
from voxpipe.processors.tts.cache import CachedSpeech
from voxpipe.processors.tts.reply import CharAlignment, TTSReply

try:
    import httpx
    from websockets.asyncio.client import ClientConnection, connect
    from websockets.exceptions import ConnectionClosed, InvalidStatus
    from websockets.protocol import State
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "voxpipe.processors.tts.elevenlabs needs the 'elevenlabs' extra: "
        "pip install 'voxpipe[elevenlabs]'"
    ) from exc

__all__ = ["ElevenLabsTTSService", "output_format_for", "parse_output_format"]

PCM_RATES = (8000, 16000, 22050, 24000, 32000, 44100, 48000)
_AUTH_HELP = (
    "check ELEVENLABS_API_KEY (an API key from the ElevenLabs settings page with "
    "text-to-speech access)"
)


def output_format_for(encoding: str, sample_rate: int) -> str:
    """The ElevenLabs output format that matches a wire (no transcoding where one exists)."""
    if encoding == "mulaw" and sample_rate == 8000:
        return "ulaw_8000"
    if sample_rate in PCM_RATES:
        return f"pcm_{sample_rate}"
    higher = [r for r in PCM_RATES if r >= sample_rate]
    return f"pcm_{higher[0] if higher else PCM_RATES[-1]}"


def parse_output_format(name: str) -> tuple[str, int]:
    """(encoding, sample rate) of a raw ElevenLabs output format name."""
    kind, _, rate = name.partition("_")
    if kind == "ulaw" and rate == "8000":
        return "mulaw", 8000
    if kind == "pcm" and rate.isdigit() and int(rate) in PCM_RATES:
        return "pcm16", int(rate)
    raise ValueError(
        f"output_format {name!r} is not raw audio voxpipe can play: use ulaw_8000 or one of "
        + ", ".join(f"pcm_{r}" for r in PCM_RATES)
    )


def websocket_base(base_url: str) -> str:
    """ws(s):// base for an ElevenLabs http(s):// base URL."""
    url = base_url.rstrip("/")
    if url.startswith("https://"):
        return "wss://" + url[len("https://") :]
    if url.startswith("http://"):
        return "ws://" + url[len("http://") :]
    if url.startswith(("ws://", "wss://")):
        return url
    raise ValueError(
        f"ELEVENLABS_BASE_URL={base_url!r} is not a URL: use e.g. https://api.elevenlabs.io"
    )


def http_base(base_url: str) -> str:
    url = base_url.rstrip("/")
    if url.startswith("wss://"):
        return "https://" + url[len("wss://") :]
    if url.startswith("ws://"):
        return "http://" + url[len("ws://") :]
    return url


class _StreamFailed(Exception):
    """The websocket stream of a reply ended without its final message."""

    def __init__(self, reason: str, *, auth: bool = False) -> None:
        super().__init__(reason)
        self.auth = auth


class _AuthError(Exception):
    """ElevenLabs refused the API key."""


@dataclass(slots=True)
class _Stream:
    """One reply's use of one socket."""

    ws: ClientConnection
    sent: list[str] = field(default_factory=list)  # texts sent on it
    words_heard: int = 0  # whole words whose audio came back on it
    audio_chunks: int = 0
    aligned: bool = False  # audio came with character timings
    ended: bool = False  # the end-of-input message went out


class ElevenLabsTTSService(TTSService):
    """Speaks replies with ElevenLabs (websocket stream-input; HTTP streaming as a fallback).

    The API key, voice and endpoint default to the ``ELEVENLABS_API_KEY``,
    ``ELEVENLABS_VOICE_ID`` and ``ELEVENLABS_BASE_URL`` settings; the output format to the
    wire's (``ulaw_8000`` for phone calls).
    """

    provider_name = "elevenlabs"

    def __init__(
        self,
        *,
        api_key: str | None = None,
        voice_id: str | None = None,
        base_url: str | None = None,
        model: str = "eleven_flash_v2_5",
        output_format: str | None = None,
        language: str | None = None,
        voice_settings: Mapping[str, Any] | None = None,
        chunk_length_schedule: Sequence[int] = (50, 120, 160, 250),
        inactivity_timeout: int = 180,
        prewarm: bool = True,
        http_fallback: bool = True,
        connect_timeout: float = 5.0,
        stall_timeout: float = 5.0,
        outage_grace_s: float = DEFAULT_OUTAGE_GRACE_S,
        name: str | None = None,
    ) -> None:
        super().__init__(outage_grace_s=outage_grace_s, name=name)
        if api_key is None or voice_id is None or base_url is None:
            from voxpipe.config.settings import get_settings

            settings = get_settings()
            if api_key is None and settings.elevenlabs_api_key is not None:
                api_key = settings.elevenlabs_api_key.get_secret_value()
            voice_id = voice_id or settings.elevenlabs_voice_id
            base_url = base_url or settings.elevenlabs_base_url
        if not api_key:
            raise ValueError(
                "ELEVENLABS_API_KEY is not set: set it in the environment (or pass api_key=...) "
                "to use ElevenLabs, or use the offline TTS (EspeakTTSService)."
            )
        if output_format is not None:
            parse_output_format(output_format)  # fail early on a format we cannot play
        self.model_name = model
        self.voice_id = voice_id
        self._api_key = api_key
        self._ws_base = websocket_base(base_url)
        self._http_base = http_base(base_url)
        self._format_override = output_format
        self.output_format = output_format or "pcm_16000"
        self.language = language
        if language:
            self.offline_voice = language.lower()
        self.voice_settings = dict(voice_settings) if voice_settings is not None else None
        self.chunk_length_schedule = list(chunk_length_schedule)
        self.inactivity_timeout = inactivity_timeout
        self.prewarm = prewarm
        self.http_fallback = http_fallback
        self.connect_timeout = connect_timeout
        self.stall_timeout = stall_timeout
        self._encoding = "pcm16"
        self._rate = 16000
        self._spare: asyncio.Task[ClientConnection] | None = None
        self._streams: dict[TTSReply, _Stream] = {}
        self._http: httpx.AsyncClient | None = None
        self._auth_failed = False
        self._sockets: set[ClientConnection] = set()
        # Counters for operators and tests.
        self.sockets_opened = 0
        self.http_requests = 0

    # ------------------------------------------------------------------ life cycle

    async def on_start(self, frame: StartFrame) -> None:
        await super().on_start(frame)
        self.output_format = self._format_override or output_format_for(
            self.audio_out_encoding, self.audio_out_sample_rate
        )
        self._encoding, self._rate = parse_output_format(self.output_format)
        self._keep_warm()

    async def on_end(self, frame: EndFrame) -> None:
        await super().on_end(frame)
        await self._close_spare()

    async def on_cancel(self, frame: CancelFrame) -> None:
        await self._close_spare()

    async def cleanup(self) -> None:
        await super().cleanup()
        await self._close_spare()
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    async def on_reply_interrupted(self, reply: TTSReply) -> None:
        stream = self._streams.pop(reply, None)
        if stream is not None:
            self._close_later(stream.ws)

    # ------------------------------------------------------------------ outages and lines

    def voice_key(self) -> str:
        settings = json.dumps(self.voice_settings, sort_keys=True)
        # The endpoint too: a self-hosted or test server renders differently from the cloud.
        return (
            f"elevenlabs/{self._http_base}/{self.voice_id}/{self.model_name}/"
            f"{self.language}/{settings}"
        )

    async def render_line(self, text: str) -> CachedSpeech:
        reply = TTSReply(0, self.clock)
        await self._speak_http(text, reply)
        reply.finish()
        return speech_of(reply)

    async def probe(self) -> None:
        # A stream-input socket that opens is ElevenLabs answering again.
        await self._close(await self._connect())

    # ------------------------------------------------------------------ sockets

    def _stream_url(self) -> str:
        params = {
            "model_id": self.model_name,
            "output_format": self.output_format,
            "inactivity_timeout": str(self.inactivity_timeout),
        }
        if self.language:
            params["language_code"] = self.language
        return f"{self._ws_base}/v1/text-to-speech/{self.voice_id}/stream-input?{urlencode(params)}"

    async def _connect(self) -> ClientConnection:
        try:
            ws = await connect(
                self._stream_url(),
                additional_headers={"xi-api-key": self._api_key},
                open_timeout=self.connect_timeout,
                max_size=None,
                compression=None,  # audio does not compress; skip the CPU
            )
        except InvalidStatus as exc:
            status = exc.response.status_code
            if status in (401, 403):
                raise _AuthError(f"ElevenLabs refused the API key (HTTP {status})") from exc
            raise
        self.sockets_opened += 1
        self._sockets.add(ws)
        init: dict[str, Any] = {
            "text": " ",
            "generation_config": {"chunk_length_schedule": self.chunk_length_schedule},
        }
        if self.voice_settings is not None:
            init["voice_settings"] = self.voice_settings
        try:
            await ws.send(json.dumps(init))
        except ConnectionClosed:
            pass  # the reason (e.g. a refused key) is read from the socket by the receiver
        except BaseException:
            self._close_later(ws)
            raise
        return ws

    def _warm(self) -> None:
        self._spare = self.create_task(self._connect(), name="elevenlabs-warm", interruptible=False)

    def _keep_warm(self) -> None:
        if self.prewarm and self._spare is None and not self._auth_failed:
            self._warm()

    async def _take_socket(self) -> ClientConnection:
        """A ready socket for a reply: the warm one if it is still open, else a new one."""
        spare, self._spare = self._spare, None
        ws: ClientConnection | None = None
        if spare is not None:
            try:
                # Shielded: an interruption while it connects must not waste the warm socket.
                ws = await asyncio.shield(spare)
            except asyncio.CancelledError:
                if self._spare is None:
                    self._spare = spare
                raise
            except _AuthError:
                raise
            except Exception as exc:
                self.logger.info("warm ElevenLabs socket failed (%r): connecting anew", exc)
            if ws is not None and ws.state is not State.OPEN:
                ws = None
        if ws is None:
            ws = await self._connect()
        return ws

    async def _close_spare(self) -> None:
        spare, self._spare = self._spare, None
        if spare is None:
            return
        if not spare.done():
            await self.cancel_task(spare)
            return
        if not spare.cancelled() and spare.exception() is None:
            await self._close(spare.result())

    def _close_later(self, ws: ClientConnection) -> None:
        self.create_task(self._close(ws), name="elevenlabs-close", interruptible=False)

    async def _close(self, ws: ClientConnection) -> None:
        try:
            await ws.close()
        except Exception as exc:
            self.logger.debug("closing an ElevenLabs socket failed: %r", exc)
        finally:
            self._sockets.discard(ws)

    @property
    def open_sockets(self) -> int:
        """Sockets this processor opened that are not closed yet."""
        return sum(ws.state is not State.CLOSED for ws in self._sockets)

    # ------------------------------------------------------------------ a reply

    async def synthesize_reply(self, reply: TTSReply) -> None:
        first = await reply.next_text()
        if first is None:
            return  # a reply with nothing to say (e.g. only a tool call)
        if self._auth_failed:
            return
        if self.outage.reported:
            # Down: the probe notices its return; this reply is not spoken (nor recorded).
            while await reply.next_text() is not None:
                pass
            return
        todo = [first]  # text to speak next, before the rest of the reply's text
        retried = False
        while True:
            try:
                ws = await self._take_socket() if not retried else await self._connect()
            except _AuthError as exc:
                await self._auth_error(str(exc))
                return
            except Exception as exc:
                await self._fallback(reply, todo, f"cannot connect: {exc!r}")
                return
            stream = _Stream(ws)
            self._streams[reply] = stream
            try:
                await self._run_stream(reply, stream, todo)
                await self.provider_works()
                return
            except _StreamFailed as exc:
                if exc.auth:
                    await self._auth_error(str(exc))
                    return
                todo = self._unheard(reply, stream)
                if stream.audio_chunks == 0 and not retried:
                    retried = True
                    self.logger.warning("ElevenLabs stream failed (%s): retrying once", exc)
                    continue
                await self._fallback(reply, todo, str(exc))
                return
            finally:
                self._streams.pop(reply, None)
                self._close_later(ws)
                self._keep_warm()

    async def _run_stream(self, reply: TTSReply, stream: _Stream, todo: list[str]) -> None:
        """Send the reply's text on the socket and read its audio until the final message."""
        if todo:
            # The first text goes out from this task, right away: a sender task would start
            # only on the next turn of the event loop.
            try:
                await self._send_text(stream, todo[0])
            except ConnectionClosed:
                pass  # the receiver sees the close and decides what to do
            todo = todo[1:]
        sender = self.create_task(self._send_texts(reply, stream, todo), name="elevenlabs-send")
        try:
            await self._receive(reply, stream)
        finally:
            await self.cancel_task(sender)

    async def _send_texts(self, reply: TTSReply, stream: _Stream, todo: list[str]) -> None:
        try:
            for text in todo:
                await self._send_text(stream, text)
            while (more := await reply.next_text()) is not None:
                await self._send_text(stream, more)
            stream.ended = True
            await stream.ws.send(json.dumps({"text": ""}))
        except ConnectionClosed:
            pass  # the receiver sees the close and decides what to do

    async def _send_text(self, stream: _Stream, text: str) -> None:
        stream.sent.append(text)
        # Each sentence is flushed: spoken now, not held for more text.
        await stream.ws.send(json.dumps({"text": text + " ", "flush": True}))

    async def _receive(self, reply: TTSReply, stream: _Stream) -> None:
        ws = stream.ws
        while True:
            if stream.aligned:
                unheard = len(" ".join(stream.sent).split()) > stream.words_heard
            else:  # no timings from this voice/model: only the first audio can be awaited
                unheard = bool(stream.sent) and stream.audio_chunks == 0
            try:
                if unheard or stream.ended:
                    raw = await self.clock.wait_for(ws.recv(), self.stall_timeout)
                else:
                    raw = await ws.recv()  # waiting for the LLM's next sentence
            except TimeoutError:
                if stream.ended and not unheard:
                    return  # everything was heard; the final message is just late
                raise _StreamFailed(f"no audio for {self.stall_timeout:g}s") from None
            except ConnectionClosed as exc:
                raise _StreamFailed(_close_text(exc)) from None
            if isinstance(raw, bytes):
                continue
            try:
                message = json.loads(raw)
            except ValueError:
                continue
            if not isinstance(message, dict):
                continue
            if message.get("error") or ("message" in message and "audio" not in message):
                error = str(message.get("error") or "")
                text = f"ElevenLabs error {error}: {message.get('message', '')}".strip()
                auth = "api_key" in error or "api key" in str(message.get("message", "")).lower()
                raise _StreamFailed(text, auth=auth)
            audio_b64 = message.get("audio")
            if audio_b64:
                audio = base64.b64decode(audio_b64)
                alignment = _alignment(
                    message.get("alignment") or message.get("normalizedAlignment")
                )
                heard = reply.push_audio(audio, self._rate, self._encoding, alignment=alignment)
                stream.aligned = stream.aligned or alignment is not None
                stream.words_heard += heard
                stream.audio_chunks += 1
                if stream.audio_chunks == 1:
                    # The player (woken by this audio) goes first: messages already buffered
                    # behind this one would otherwise all be read before the first audio is
                    # pushed on. Then the next reply's socket opens, off this reply's path.
                    await asyncio.sleep(0)
                    self._keep_warm()
            if message.get("isFinal") or message.get("is_final"):
                return

    def _unheard(self, reply: TTSReply, stream: _Stream) -> list[str]:
        """What this socket was given but did not speak (whole words), to say another way."""
        reply.drop_partial_word()
        words = " ".join(stream.sent).split()
        rest = " ".join(words[stream.words_heard :])
        return [rest] if rest else []

    async def _auth_error(self, reason: str) -> None:
        self._auth_failed = True
        await self.push_error(f"{reason}: {_AUTH_HELP}.", fatal=True)

    # ------------------------------------------------------------------ HTTP fallback

    async def _fallback(self, reply: TTSReply, todo: list[str], reason: str) -> None:
        if not self.http_fallback:
            await self.push_error(f"ElevenLabs stream failed ({reason}); the reply was cut short")
            if reason.startswith("cannot connect"):
                await self.provider_failed(f"ElevenLabs {reason}")
            return
        self.logger.warning("ElevenLabs stream failed (%s): continuing over HTTP", reason)
        await self.push_error(f"ElevenLabs stream failed ({reason}); continuing over HTTP")
        try:
            for text in todo:
                await self._speak_http(text, reply)
            while (more := await reply.next_text()) is not None:
                await self._speak_http(more, reply)
        except _AuthError as exc:
            await self._auth_error(str(exc))
            return
        except (httpx.HTTPError, OSError, RuntimeError) as exc:
            # Neither the socket nor HTTP: ElevenLabs is down (what is left is not spoken).
            await self.push_error(f"ElevenLabs over HTTP failed too: {exc}; the reply was cut")
            await self.provider_failed(f"ElevenLabs unreachable ({reason}; over HTTP: {exc!r})")
            while await reply.next_text() is not None:
                pass
            return
        await self.provider_works()

    async def _speak_http(self, text: str, reply: TTSReply) -> None:
        if self._http is None:
            self._http = httpx.AsyncClient(
                timeout=httpx.Timeout(10.0, connect=self.connect_timeout)
            )
        body: dict[str, Any] = {"text": text, "model_id": self.model_name}
        if self.voice_settings is not None:
            body["voice_settings"] = self.voice_settings
        if self.language:
            body["language_code"] = self.language
        start = reply.audio_seconds
        self.http_requests += 1
        url = f"{self._http_base}/v1/text-to-speech/{self.voice_id}/stream"
        async with self._http.stream(
            "POST",
            url,
            params={"output_format": self.output_format},
            json=body,
            headers={"xi-api-key": self._api_key},
        ) as response:
            if response.status_code in (401, 403):
                raise _AuthError(f"ElevenLabs refused the API key (HTTP {response.status_code})")
            if response.status_code >= 400:
                detail = (await response.aread()).decode("utf-8", "replace")[:300]
                raise RuntimeError(f"ElevenLabs HTTP {response.status_code}: {detail}")
            async for chunk in response.aiter_bytes():
                reply.push_audio(chunk, self._rate, self._encoding)
        # The HTTP stream has no timings: its words are spread over its audio.
        reply.push_proportional_words(text, start)


def _alignment(data: Any) -> CharAlignment | None:
    if not isinstance(data, dict):
        return None
    chars = data.get("chars")
    starts = data.get("charStartTimesMs")
    # The service has been seen spelling this key both ways.
    durations = data.get("charDurationsMs", data.get("charsDurationsMs"))
    if not chars or starts is None or durations is None:
        return None
    return CharAlignment(chars, starts, durations)


def _close_text(exc: ConnectionClosed) -> str:
    frame = exc.rcvd
    if frame is None:
        return "connection lost"
    return f"closed with {frame.code}" + (f": {frame.reason}" if frame.reason else "")
