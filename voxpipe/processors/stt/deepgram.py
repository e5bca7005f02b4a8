"""Deepgram live transcription over one websocket per call, with the official ``deepgram-sdk``.

Caller audio goes to Deepgram in the wire's own format (phone calls: 8 kHz mu-law, untouched).
The processor keeps the audio Deepgram has not yet finalized: if the socket drops, it
reconnects and sends that audio again, with what arrived during the gap, so no transcript is
lost (a final result's ``start + duration`` marks how far Deepgram will not change its mind).
A socket that cannot be reopened at once is an outage: reported (``ProviderOutageFrame``
downstream, where an outage policy apologizes), retried with jittered backoff for
``outage_grace_s`` (``PROVIDER_OUTAGE_GRACE_S``), then the call is ended gracefully.
``KeepAlive`` goes out whenever no audio was sent for ``keepalive_interval`` (the caller's
audio stops while transcription is paused, e.g. around card numbers), ``Finalize`` when the
VAD hears the caller stop, and ``CloseStream`` at the end of the call so the last words
arrive before the call ends.

Environment (through ``voxpipe.config.settings``): ``DEEPGRAM_API_KEY``, and
``DEEPGRAM_BASE_URL`` (``wss://api.deepgram.com``; ``ws://127.0.0.1:8080`` for a self-hosted
server or a fake).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import urllib.parse
from collections.abc import AsyncIterator, Sequence
from typing import Any

from voxpipe.frames import CancelFrame, EndFrame, InputAudioFrame, StartFrame, Word
from voxpipe.processors.outage import DEFAULT_OUTAGE_GRACE_S, Backoff
from voxpipe.processors.stt.base import DEFAULT_CONFIDENCE_THRESHOLD, STTService
from voxpipe.processors.stt.convert import AudioConverter

try:
    from deepgram.core.api_error import ApiError
    from deepgram.listen.v1.socket_client import AsyncV1SocketClient
    from websockets.asyncio.client import connect as ws_connect
    from websockets.exceptions import InvalidStatus
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "voxpipe.processors.stt.deepgram needs the 'deepgram' extra: "
        "pip install 'voxpipe[deepgram]'"
    ) from exc

__all__ = ["DeepgramSTTService", "deepgram_urls"]

_WIRE_TO_DEEPGRAM = {"mulaw": "mulaw", "pcm16": "linear16"}
_SEND_CHUNK_SECONDS = 0.5  # largest piece of a resend after a reconnect
_STABLE_SECONDS = 1.0  # a socket open this long (or answered) counts as a recovery
# Audio goes out in pieces of at least this much (Deepgram takes 20-250 ms): a phone frame
# every 20 ms would be 50 websocket frames a second per call, each framed, masked and
# written on its own. Finalize, CloseStream and a reconnect's resend flush what is held.
DEFAULT_SEND_INTERVAL_S = 0.1


def deepgram_urls(base_url: str) -> tuple[str, str]:
    """(websocket base, http base) for a Deepgram endpoint given as ws(s):// or http(s)://."""
    url = base_url.rstrip("/")
    for prefix, ws, http in (
        ("wss://", "wss://", "https://"),
        ("https://", "wss://", "https://"),
        ("ws://", "ws://", "http://"),
        ("http://", "ws://", "http://"),
    ):
        if url.startswith(prefix):
            rest = url[len(prefix) :]
            return ws + rest, http + rest
    raise ValueError(
        f"DEEPGRAM_BASE_URL={base_url!r} is not a URL: use e.g. wss://api.deepgram.com "
        "or ws://127.0.0.1:8080"
    )


class DeepgramSTTService(STTService):
    """Streams caller audio to Deepgram and pushes its interim and final transcripts.

    A lost socket is reopened at once, then with jittered backoff (``reconnect_backoff``)
    for up to ``outage_grace_s``; the outage is reported in ``ProviderOutageFrame``s and the
    caller's audio meanwhile (up to ``max_buffer_seconds``) is sent once the socket is back.

    Model, language and options come from the arguments; the audio encoding and sample rate
    from the call's ``StartFrame`` (the wire's format) unless given. The API key and endpoint
    default to the ``DEEPGRAM_API_KEY`` and ``DEEPGRAM_BASE_URL`` settings.
    """

    provider_name = "deepgram"

    def __init__(
        self,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        model: str = "nova-2",
        language: str = "en-US",
        encoding: str | None = None,
        sample_rate: int | None = None,
        interim_results: bool = True,
        endpointing_ms: int | None = 300,
        utterance_end_ms: int | None = 1000,
        vad_events: bool = False,
        smart_format: bool = True,
        punctuate: bool = True,
        keyterms: Sequence[str] = (),
        extra_params: dict[str, str] | None = None,
        keepalive_interval: float = 5.0,
        max_buffer_seconds: float = 30.0,
        outage_grace_s: float = DEFAULT_OUTAGE_GRACE_S,
        reconnect_backoff: Backoff | None = None,
        close_timeout: float = 3.0,
        confidence_threshold: float = DEFAULT_CONFIDENCE_THRESHOLD,
        audio_passthrough: bool = False,
        raw_messages: bool = True,
        send_interval_s: float = DEFAULT_SEND_INTERVAL_S,
        name: str | None = None,
    ) -> None:
        super().__init__(
            confidence_threshold=confidence_threshold,
            language=language,
            audio_passthrough=audio_passthrough,
            outage_grace_s=outage_grace_s,
            name=name,
        )
        if api_key is None or base_url is None:
            from voxpipe.config.settings import get_settings

            settings = get_settings()
            if api_key is None and settings.deepgram_api_key is not None:
                api_key = settings.deepgram_api_key.get_secret_value()
            base_url = base_url or settings.deepgram_base_url
        if not api_key:
            raise ValueError(
                "DEEPGRAM_API_KEY is not set: set it in the environment (or pass api_key=...) "
                "to use Deepgram, or use the offline STT (PocketSphinxSTTService)."
            )
        if encoding is not None and encoding not in ("mulaw", "linear16"):
            raise ValueError(f"encoding must be 'mulaw' or 'linear16', got {encoding!r}")
        self.model_name = model
        self.base_url = base_url
        self._ws_url, self._http_url = deepgram_urls(base_url)
        self._api_key = api_key
        self._encoding_override = encoding
        self._rate_override = sample_rate
        self.interim_results = interim_results
        self.endpointing_ms = endpointing_ms
        self.utterance_end_ms = utterance_end_ms if interim_results else None
        self.vad_events = vad_events
        self.smart_format = smart_format
        self.punctuate = punctuate
        self.keyterms = list(keyterms)
        self.extra_params = dict(extra_params or {})
        self.keepalive_interval = keepalive_interval
        self.max_buffer_seconds = max_buffer_seconds
        # Capped low: the first attempt after the provider comes back is at most this late.
        self.reconnect_backoff = reconnect_backoff or Backoff(base_s=0.25, cap_s=2.0)
        self.close_timeout = close_timeout
        self.raw_messages = raw_messages  # decode messages here, not as the SDK's models
        self.send_interval_s = max(0.0, send_interval_s)
        self._send_min = 1  # bytes of unsent audio that wake the sender (set on start)

        # Counters for operators and tests.
        self.connects = 0
        self.reconnects = 0
        self.keepalives_sent = 0
        self.utterance_ends = 0

        self._headers = {"Authorization": f"Token {api_key}", "User-Agent": "voxpipe"}
        self._encoding = "linear16"
        self._rate = 16000
        self._width = 2
        self._converter: AudioConverter | None = None
        # Audio not yet finalized by Deepgram, as one byte stream of the call:
        # _buf[0] sits at stream position _buf_start; _sent is how far the current socket got.
        self._buf = bytearray()
        self._buf_start = 0
        self._sent = 0
        self._conn_base = 0  # stream position where the current socket's audio begins
        self._finalize_at: int | None = None  # send Finalize once audio up to here has gone
        self._audio_ready = asyncio.Event()
        self._sock: Any = None
        self._sending = False  # a send on the socket is in progress (audio/Finalize order)
        self._last_send = 0.0
        self._closing = False
        self._close_sent = False  # CloseStream went out on the current socket
        self._closed_cleanly = False
        self._conn_task: asyncio.Task[None] | None = None
        self._answered = False  # Deepgram sent something other than an error on this socket
        self._stable = False  # this socket works (answered, or open for _STABLE_SECONDS)

    # ------------------------------------------------------------------ life cycle

    async def on_start(self, frame: StartFrame) -> None:
        await super().on_start(frame)
        wire = _WIRE_TO_DEEPGRAM.get(self.audio_in_encoding, "linear16")
        self._encoding = self._encoding_override or wire
        self._rate = self._rate_override or frame.audio_in_sample_rate
        self._width = 1 if self._encoding == "mulaw" else 2
        self._converter = AudioConverter(
            "mulaw" if self._encoding == "mulaw" else "pcm16", self._rate
        )
        self._send_min = max(1, int(self.send_interval_s * self._rate) * self._width)
        self._last_send = self.clock.now()
        # Not interruptible: the caller's words must survive the bot being interrupted.
        self._conn_task = self.create_task(
            self._connection_loop(), name="deepgram-connection", interruptible=False
        )
        self.create_task(self._keepalive_loop(), name="deepgram-keepalive", interruptible=False)

    async def on_end(self, frame: EndFrame) -> None:
        # Send what is left, then CloseStream: Deepgram answers with its last results and closes.
        self._closing = True
        self._audio_ready.set()
        task = self._conn_task
        if task is None or task.done():
            return
        try:
            await self.clock.wait_for(asyncio.shield(task), self.close_timeout)
        except TimeoutError:
            self.logger.warning(
                "Deepgram did not close within %.1fs after CloseStream", self.close_timeout
            )
            await self.cancel_task(task)

    async def on_cancel(self, frame: CancelFrame) -> None:
        self._closing = True

    # ------------------------------------------------------------------ audio in

    async def process_audio(self, frame: InputAudioFrame) -> None:
        conv = self._converter
        if conv is None:
            return  # no StartFrame yet
        audio = conv.convert(frame.audio, frame.encoding, frame.sample_rate)
        if not audio:
            return
        self._buf += audio
        limit = int(self.max_buffer_seconds * self._rate) * self._width
        excess = len(self._buf) - limit
        if excess > 0:
            # Deepgram has finalized nothing for a long while (or the socket is gone): keep
            # only the newest audio for a resend.
            excess -= excess % self._width
            del self._buf[:excess]
            self._buf_start += excess
        if self._buf_start + len(self._buf) - self._sent >= self._send_min:
            self._audio_ready.set()

    async def on_user_stopped_speaking(self) -> None:
        # Finalize goes out after the audio already taken in. It starts the reply's critical
        # path, so it is sent from here when the sender is idle (not on the sender's next
        # turn of the event loop); otherwise the sender sends it after the audio in flight.
        self._finalize_at = self._buf_start + len(self._buf)
        sock = self._sock
        if sock is not None and not self._sending and not self._closing:
            try:
                await self._send_pending(sock)
            except Exception as exc:  # a lost socket: the connection loop reconnects
                self.logger.debug("Deepgram Finalize not sent: %r", exc)
        self._audio_ready.set()

    async def on_user_silence_started(self) -> None:
        # The final for the words so far is wanted before the turn is decided (a preemptive
        # reply starts from it); if the caller goes on, their next words make another final.
        await self.on_user_stopped_speaking()

    async def on_pause(self) -> None:
        # Words said just before the pause are transcribed now, not after it.
        await self.on_user_stopped_speaking()

    # ------------------------------------------------------------------ the socket

    def _connect_options(self) -> dict[str, Any]:
        opts: dict[str, Any] = {
            "model": self.model_name,
            "encoding": self._encoding,
            "sample_rate": str(self._rate),
            "channels": "1",
            "interim_results": _flag(self.interim_results),
            "smart_format": _flag(self.smart_format),
            "punctuate": _flag(self.punctuate),
            "vad_events": _flag(self.vad_events),
            "endpointing": "false" if self.endpointing_ms is None else str(self.endpointing_ms),
        }
        if self.language:
            opts["language"] = self.language
        if self.utterance_end_ms is not None:
            opts["utterance_end_ms"] = str(self.utterance_end_ms)
        if self.keyterms:
            opts["keyterm"] = self.keyterms
        if self.extra_params:
            opts["request_options"] = {"additional_query_parameters": dict(self.extra_params)}
        return opts

    def _listen_url(self) -> str:
        """The ``/v1/listen`` URL with the options as query parameters (as the SDK builds it)."""
        opts = self._connect_options()
        extra = opts.pop("request_options", {}).get("additional_query_parameters", {})
        query = urllib.parse.urlencode({**opts, **extra}, doseq=True)
        return f"{self._ws_url}/v1/listen?{query}"

    @contextlib.asynccontextmanager
    async def _connect(self) -> AsyncIterator[AsyncV1SocketClient]:
        """The SDK's socket client over a connection opened here without permessage-deflate
        (the SDK's own connect negotiates it, and audio does not compress: measured, the
        deflate and its legacy framing were a tenth of a served call's CPU)."""
        try:
            ws = await ws_connect(
                self._listen_url(), additional_headers=self._headers, compression=None
            )
        except InvalidStatus as exc:
            status = exc.response.status_code
            raise ApiError(
                status_code=status,
                headers=dict(self._headers),
                body="Websocket initialized with invalid credentials."
                if status == 401
                else "Unexpected error when initializing websocket connection.",
            ) from exc
        async with ws:
            yield AsyncV1SocketClient(websocket=ws)  # type: ignore[arg-type]

    async def _connection_loop(self) -> None:
        failures = 0  # failed attempts since the provider last worked
        # At the end of the call a socket lost before Deepgram's clean close is reopened too:
        # the audio it had not finalized is sent again, so the last words still arrive.
        while not (self._closing and self._closed_cleanly):
            self._answered = False
            self._stable = False
            why = ""
            try:
                async with self._connect() as sock:
                    await self._run_socket(sock)
                if self._closing and self._close_sent:
                    self._closed_cleanly = True
                    return
                why = "Deepgram closed the connection"
                self.logger.warning("%s: reconnecting", why)
            except ApiError as exc:
                status = exc.status_code or 0
                if status in (401, 403):
                    await self.push_error(
                        f"Deepgram refused the API key (HTTP {status}): check DEEPGRAM_API_KEY "
                        "(a valid key from the Deepgram console, with access to live "
                        "transcription).",
                        fatal=True,
                        exc=exc,
                    )
                    return
                if 400 <= status < 500 and status not in (408, 429):
                    await self.push_error(
                        f"Deepgram rejected the connection (HTTP {status}): check the model "
                        f"({self.model_name}), language ({self.language}) and audio options. "
                        f"{exc.body}",
                        fatal=True,
                        exc=exc,
                    )
                    return
                why = f"HTTP {status}"
                self.logger.warning("Deepgram connection failed (HTTP %s): %s", status, exc.body)
            except Exception as exc:
                why = repr(exc)
                self.logger.warning("Deepgram connection lost: %r", exc)
            # A socket that worked (answered, or open a while) starts a fresh count and is
            # retried at once; one that failed at once is an outage, retried with backoff
            # until the grace (PROVIDER_OUTAGE_GRACE_S) runs out. The caller's audio is kept
            # meanwhile and sent when the socket is back.
            if self._stable:
                failures = 0
            self.outage.lost()
            if failures:
                await self.outage.failed(f"Deepgram unreachable at {self._ws_url} ({why})")
            if self.outage.expired:
                await self.outage.give_up(
                    f"Deepgram unreachable at {self._ws_url} for {self.outage.elapsed:.0f} s "
                    f"({why}): check the network and DEEPGRAM_BASE_URL."
                )
                return
            self.reconnects += 1
            delay = self.reconnect_backoff.delay(failures - 1) if failures else 0.0
            failures += 1
            # Never past the grace: the last attempt is made as it runs out.
            await self.clock.sleep(min(delay, max(self.outage.grace_s - self.outage.elapsed, 0)))

    async def _run_socket(self, sock: Any) -> None:
        """Serve one connection until it closes."""
        self.connects += 1
        self._sock = sock
        # Everything not yet finalized goes again: the gap and any unfinished utterance.
        self._conn_base = self._buf_start
        self._sent = self._buf_start
        self._close_sent = False
        self.logger.debug(
            "Deepgram connected (%s %d Hz), resending %.2fs",
            self._encoding,
            self._rate,
            len(self._buf) / (self._rate * self._width),
        )
        sender = self.create_task(self._send_loop(sock), name="deepgram-send", interruptible=False)
        stable = self.create_task(self._stable_after(), name="deepgram-up", interruptible=False)
        try:
            async for message in self._messages(sock):
                if message.get("type") != "Error":
                    self._answered = True
                    if not self._stable:
                        await self._mark_stable()
                await self._on_message(message)
        finally:
            self._sock = None
            await self.cancel_task(sender)
            await self.cancel_task(stable)

    async def _stable_after(self) -> None:
        await self.clock.sleep(_STABLE_SECONDS)
        if not self._stable:
            await self._mark_stable()

    async def _mark_stable(self) -> None:
        """This socket works: an outage is over."""
        self._stable = True
        if self.outage.reported:
            # A time to first transcript measured across the outage says nothing of latency.
            self._ttfb_start = None
        await self.outage.recovered()

    async def _messages(self, sock: Any) -> AsyncIterator[dict[str, Any]]:
        """Deepgram's messages as plain dicts.

        The SDK connects, and sends; its iterator turns every message into a pydantic model
        (a union tried type by type), which measured 0.2-0.3 ms per final transcript on the
        reply's critical path. So the messages are read from the SDK's connection and
        decoded here; if a future SDK hides the connection, its models are used instead.
        """
        ws = getattr(sock, "_websocket", None) if self.raw_messages else None
        if ws is None:
            async for model in sock:
                if not isinstance(model, bytes):
                    yield model.dict() if hasattr(model, "dict") else dict(model)
            return
        async for raw in ws:
            if isinstance(raw, bytes):
                continue
            try:
                message = json.loads(raw)
            except ValueError:
                self.logger.warning("Deepgram sent a message that is not JSON: %.200r", raw)
                continue
            if isinstance(message, dict):
                yield message

    async def _send_loop(self, sock: Any) -> None:
        try:
            await self._send_until_closed(sock)
        except Exception as exc:  # a lost socket: the receiving side reconnects
            self.logger.debug("Deepgram send stopped: %r", exc)

    async def _send_until_closed(self, sock: Any) -> None:
        while True:
            # While on_user_stopped_speaking sends, this waits: it sets _audio_ready after.
            if not self._sending:
                await self._send_pending(sock)
                if self._closing:
                    self._close_sent = True
                    await sock.send_close_stream()
                    return
            self._audio_ready.clear()
            unsent = self._buf_start + len(self._buf) - self._sent
            if not self._sending and unsent >= self._send_min:
                continue  # more came in while the last send was in flight
            await self._audio_ready.wait()

    async def _send_pending(self, sock: Any) -> None:
        """Send the audio not yet sent on ``sock``, then a Finalize that is due; one at a time."""
        if self._sending:
            return
        self._sending = True
        try:
            max_chunk = max(int(_SEND_CHUNK_SECONDS * self._rate) * self._width, self._width)
            while True:
                end = self._buf_start + len(self._buf)
                if self._sent < end:
                    start = max(self._sent, self._buf_start)
                    stop = min(end, start + max_chunk)
                    chunk = bytes(self._buf[start - self._buf_start : stop - self._buf_start])
                    self._sent = stop
                    await sock.send_media(chunk)
                    self._last_send = self.clock.now()
                elif self._finalize_at is not None and self._sent >= self._finalize_at:
                    self._finalize_at = None
                    await sock.send_finalize()
                    self._last_send = self.clock.now()
                else:
                    return
        finally:
            self._sending = False

    async def _keepalive_loop(self) -> None:
        while True:
            due = self._last_send + self.keepalive_interval
            now = self.clock.now()
            if now < due:
                await self.clock.sleep(due - now)
                continue
            sock = self._sock
            if sock is not None and not self._closing:
                try:
                    await sock.send_keep_alive()
                    self.keepalives_sent += 1
                except Exception as exc:  # the connection loop notices and reconnects
                    self.logger.debug("KeepAlive not sent: %r", exc)
            self._last_send = self.clock.now()

    # ------------------------------------------------------------------ messages

    async def _on_message(self, message: dict[str, Any]) -> None:
        kind = message.get("type")
        if kind == "Results":
            try:
                await self._on_results(message)
            except (KeyError, TypeError, ValueError, AttributeError) as exc:
                self.logger.warning("Deepgram sent malformed Results (%r): %.300r", exc, message)
        elif kind == "UtteranceEnd":
            self.utterance_ends += 1
            self.logger.debug("Deepgram utterance end at %s", message.get("last_word_end", 0))
        elif kind == "Error":
            description = message.get("description") or message.get("message", "")
            await self.push_error(
                f"Deepgram error {message.get('code', '')} "
                f"({message.get('variant', '')}): {description}"
            )
        elif kind == "Metadata":
            self.logger.debug("Deepgram metadata: request %s", message.get("request_id", ""))

    async def _on_results(self, message: dict[str, Any]) -> None:
        alternatives = (message.get("channel") or {}).get("alternatives") or []
        alt = alternatives[0] if alternatives else None
        final = bool(message.get("is_final"))
        if final:
            self._mark_finalized(
                float(message.get("start") or 0.0) + float(message.get("duration") or 0.0)
            )
        if alt is None:
            return
        base = self._conn_base / (self._rate * self._width)
        words = [
            Word(
                word=w.get("punctuated_word") or w["word"],
                start=base + float(w["start"]),
                end=base + float(w["end"]),
                confidence=float(w.get("confidence") or 0.0),
            )
            for w in (alt.get("words") or [])
        ]
        await self.push_transcript(
            alt.get("transcript") or "",
            final=final,
            confidence=float(alt.get("confidence") or 0.0),
            words=words,
        )

    def _mark_finalized(self, seconds: float) -> None:
        """Deepgram will not revise audio up to ``seconds`` of this socket: stop keeping it."""
        pos = self._conn_base + int(round(seconds * self._rate)) * self._width
        pos = min(pos, self._sent)
        drop = pos - self._buf_start
        if drop > 0:
            del self._buf[:drop]
            self._buf_start = pos

    @property
    def buffered_seconds(self) -> float:
        """Audio kept for a resend (not yet finalized by Deepgram)."""
        return len(self._buf) / (self._rate * self._width)


def _flag(value: bool) -> str:
    # The SDK puts values into the query as given; Deepgram expects lower-case booleans.
    return "true" if value else "false"
