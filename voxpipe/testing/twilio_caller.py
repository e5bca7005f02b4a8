"""A Twilio caller simulator: dials a voxpipe server as Twilio would and records what comes back.

``TwilioCaller`` speaks Twilio's Media Streams protocol over a real websocket: ``connected``,
``start`` (with custom parameters), 20 ms ``media`` chunks of 8 kHz mu-law from a WAV or raw
audio (in real time, or the audio as fast as possible followed by real-time silence, as a live
phone line keeps sending), ``dtmf`` and finally ``stop``. Like Twilio it plays the audio it
receives in real time from a buffer, echoes each ``mark`` once the audio before it has played
(all pending marks at once on ``clear``), and it can barge in: switch to other speech at a
chosen instant. Everything received is logged with its time since the stream started::

    caller = await TwilioCaller.dial("http://127.0.0.1:8000", audio=read_caller_wav("in.wav"))
    log = await caller.run(until=lambda log: log.media_seconds >= 2.0, timeout=20)
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import secrets
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from voxpipe.audio import MULAW_SILENCE, pcm16_to_mulaw, read_wav, resample_pcm16

__all__ = [
    "BargeIn",
    "CallerLog",
    "TwilioCaller",
    "chunk_lateness",
    "read_caller_wav",
]

logger = logging.getLogger(__name__)

CHUNK_BYTES = 160  # 20 ms of 8 kHz mu-law
CHUNK_S = 0.02
_SILENCE = bytes([MULAW_SILENCE])


def read_caller_wav(path: str | Path) -> bytes:
    """A WAV file as 8 kHz mu-law (what a phone line carries), mixed to mono."""
    wav = read_wav(path)
    pcm = wav.pcm
    if wav.num_channels > 1:
        import numpy as np

        samples = np.frombuffer(pcm, dtype="<i2").reshape(-1, wav.num_channels)
        pcm = samples.mean(axis=1).astype("<i2").tobytes()
    if wav.sample_rate != 8000:
        pcm = resample_pcm16(pcm, wav.sample_rate, 8000)
    return pcm16_to_mulaw(pcm)


@dataclass(slots=True)
class BargeIn:
    """Start speaking ``audio`` (mu-law 8 kHz) at a chosen instant, replacing what was left.

    The instant is ``at`` seconds after the stream started, or ``after_reply`` seconds after
    the first bot audio arrived (whichever is set).
    """

    audio: bytes
    at: float | None = None
    after_reply: float | None = None


@dataclass(slots=True)
class CallerLog:
    """What the simulated caller saw, times in seconds since it sent ``start``."""

    media: list[tuple[float, bytes]] = field(default_factory=list)
    media_times: list[float] = field(default_factory=list)  # arrival times, also when not kept
    media_sizes: list[int] = field(default_factory=list)
    marks: list[tuple[float, str]] = field(default_factory=list)  # marks received
    mark_echoes: list[tuple[float, str]] = field(default_factory=list)  # marks echoed back
    clears: list[float] = field(default_factory=list)
    errors: list[tuple[float, str]] = field(default_factory=list)  # unexpected messages
    sent_chunks: int = 0
    barge_in_t: float | None = None
    stop_t: float | None = None
    close_code: int | None = None
    close_reason: str = ""
    closed_by_server: bool = False
    worker: str = ""  # the pid of the server worker that took the stream (x-voxpipe-worker)
    said: list[float] = field(default_factory=list)  # when each ``say`` began going out
    speech_ends: list[float] = field(default_factory=list)  # when each ``say``'s end went out

    @property
    def media_seconds(self) -> float:
        return sum(self.media_sizes) / 8000

    def audio(self, since: float = 0.0, until: float = float("inf")) -> bytes:
        """The received mu-law audio that arrived within [since, until)."""
        return b"".join(a for t, a in self.media if since <= t < until)


def chunk_lateness(times: list[float], sizes: list[int], *, gap_s: float = 0.5) -> list[float]:
    """How late each received chunk was for real-time playout, in seconds (0 when on time).

    Chunks of one utterance are due one after the other from the first one's arrival (at
    8000 bytes a second); a chunk arriving after the playout buffer has been empty for more
    than ``gap_s`` starts a new utterance.
    """
    out: list[float] = []
    due: float | None = None
    for t, size in zip(times, sizes, strict=True):
        if due is None or t - due > gap_s:
            due = t
        out.append(max(0.0, t - due))
        due += size / 8000
    return out


class TwilioCaller:
    """One simulated Twilio call to a stream websocket (see the module docstring)."""

    def __init__(
        self,
        url: str,
        *,
        audio: bytes = b"",
        custom_parameters: dict[str, str] | None = None,
        call_sid: str | None = None,
        account_sid: str = "AC00000000000000000000000000000000",
        stream_sid: str | None = None,
        realtime: bool = True,
        tail_silence_s: float = 1.0,
        barge_in: BargeIn | None = None,
        dtmf: list[tuple[float, str]] | None = None,
        keep_audio: bool = True,
        echo_marks: bool = True,
    ) -> None:
        self.url = url
        self.audio = audio
        self.custom_parameters = dict(custom_parameters or {})
        self.call_sid = call_sid or "CA" + secrets.token_hex(16)
        self.account_sid = account_sid
        self.stream_sid = stream_sid or "MZ" + secrets.token_hex(16)
        self.realtime = realtime
        self.tail_silence_s = tail_silence_s
        self.barge_in = barge_in
        self.dtmf = sorted(dtmf or [])
        self.keep_audio = keep_audio
        self.echo_marks = echo_marks
        self.log = CallerLog()
        self._seq = 0
        self._t0 = 0.0
        self._play_end = 0.0
        self._pending_marks: dict[int, tuple[asyncio.TimerHandle, str]] = {}
        self._mark_ids = 0
        self._changed = asyncio.Event()
        self._ws: Any = None
        self._first_reply_t: float | None = None
        self._say: tuple[bytes, int | None] | None = None

    # ------------------------------------------------------------------ dialling

    @classmethod
    async def dial(
        cls,
        base_url: str,
        *,
        path: str = "/twilio/voice",
        form: dict[str, str] | None = None,
        auth_token: str | None = None,
        call_sid: str | None = None,
        http: Any = None,
        **kwargs: Any,
    ) -> TwilioCaller:
        """POST the voice webhook like Twilio, read the TwiML, and return a caller for its stream.

        ``http``: an ``httpx.AsyncClient`` to reuse (many dials share one in a load test).
        """
        import httpx

        from voxpipe.server.signature import SIGNATURE_HEADER, compute_signature

        call_sid = call_sid or "CA" + secrets.token_hex(16)
        account_sid = kwargs.get("account_sid", "AC00000000000000000000000000000000")
        data = {
            "CallSid": call_sid,
            "AccountSid": account_sid,
            "From": "+15550100001",
            "To": "+15550100002",
            "FromCountry": "US",
            "CallStatus": "ringing",
            "Direction": "inbound",
            **(form or {}),
        }
        url = base_url.rstrip("/") + path
        headers = {}
        if auth_token:
            headers[SIGNATURE_HEADER] = compute_signature(auth_token, url, data)
        if http is not None:
            resp = await http.post(url, data=data, headers=headers)
        else:
            async with httpx.AsyncClient(timeout=10) as client:
                resp = await client.post(url, data=data, headers=headers)
        if resp.status_code != 200:
            raise RuntimeError(f"voice webhook answered {resp.status_code}: {resp.text[:200]}")
        stream_url, params = parse_twiml_stream(resp.text)
        return cls(stream_url, custom_parameters=params, call_sid=call_sid, **kwargs)

    # ------------------------------------------------------------------ speaking

    def say(self, audio: bytes, *, speech_end: int | None = None) -> None:
        """Speak ``audio`` (mu-law 8 kHz) from the next chunk on, in real time, then silence.

        ``speech_end``: the byte of ``audio`` where the speech ends; the moment the chunk
        holding it goes out is logged in ``log.speech_ends`` (the start in ``log.said``).
        """
        self._say = (audio, speech_end)
        self._changed.set()

    @property
    def elapsed(self) -> float:
        """Seconds since ``start`` went out (the log's time base)."""
        return self._now()

    @property
    def playout_end(self) -> float:
        """When the audio received so far ends playing (the log's time base), as Twilio plays."""
        return self._play_end

    # ------------------------------------------------------------------ running

    def _now(self) -> float:
        return asyncio.get_running_loop().time() - self._t0

    def _next_seq(self) -> str:
        self._seq += 1
        return str(self._seq)

    async def _send(self, message: dict[str, Any] | str) -> None:
        text = message if isinstance(message, str) else json.dumps(message)
        try:
            await self._ws.send(text)
        except Exception as exc:  # the server may close at any time; that ends the run
            logger.debug("send failed: %s", exc)
            raise _Closed() from exc

    async def run(
        self,
        *,
        until: Callable[[CallerLog], bool] | None = None,
        hangup_after: float | None = None,
        timeout: float = 30.0,
        open_timeout: float = 10.0,
    ) -> CallerLog:
        """Run the call: send audio until ``until(log)`` holds, ``hangup_after`` seconds passed,
        the server closed the socket, or ``timeout``; then send ``stop`` and close."""
        from websockets.asyncio.client import connect

        loop = asyncio.get_running_loop()
        async with asyncio.timeout(open_timeout):
            self._ws = await connect(
                self.url, compression=None, max_size=2**20, open_timeout=open_timeout
            )
        ws = self._ws
        response = getattr(ws, "response", None)
        if response is not None:
            self.log.worker = response.headers.get("x-voxpipe-worker", "")
        receiver: asyncio.Task[None] | None = None
        try:
            await self._send({"event": "connected", "protocol": "Call", "version": "1.0.0"})
            self._t0 = loop.time()
            self._play_end = 0.0
            await self._send(self._start_message())
            receiver = loop.create_task(self._receive())
            sender = loop.create_task(self._send_audio())
            sender.add_done_callback(lambda _: self._changed.set())
            limit = min(timeout, hangup_after) if hangup_after is not None else timeout
            end = loop.time() + limit
            while not (until is not None and until(self.log)):
                if receiver.done() or (sender.done() and sender.exception()):
                    break
                remaining = end - loop.time()
                if remaining <= 0:
                    if hangup_after is None:
                        logger.warning("caller %s: timed out after %.1f s", self.call_sid, limit)
                    break
                self._changed.clear()
                # Re-check now and then too: ``until`` may depend on things outside. (No
                # cancellation-based timeout here: on Python 3.11 one racing a wake-up can be
                # lost, and this loop would never end.)
                waiter = loop.create_task(self._changed.wait())
                await asyncio.wait({waiter}, timeout=min(remaining, 0.1))
                waiter.cancel()
            sender.cancel()
            (failure,) = await asyncio.gather(sender, return_exceptions=True)
            if isinstance(failure, Exception):
                raise failure
            if not receiver.done():
                self.log.stop_t = self._now()
                try:
                    await self._send(self._stop_message())
                except _Closed:
                    pass
        finally:
            for handle, _ in self._pending_marks.values():
                handle.cancel()
            await ws.close()
            if receiver is not None:
                await asyncio.wait({receiver}, timeout=5)
                receiver.cancel()
            if self.log.close_code is None:
                self.log.close_code = ws.close_code
                self.log.close_reason = ws.close_reason or ""
        return self.log

    def _start_message(self) -> dict[str, Any]:
        return {
            "event": "start",
            "sequenceNumber": self._next_seq(),
            "streamSid": self.stream_sid,
            "start": {
                "accountSid": self.account_sid,
                "streamSid": self.stream_sid,
                "callSid": self.call_sid,
                "tracks": ["inbound"],
                "customParameters": self.custom_parameters,
                "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
            },
        }

    def _stop_message(self) -> dict[str, Any]:
        return {
            "event": "stop",
            "sequenceNumber": self._next_seq(),
            "streamSid": self.stream_sid,
            "stop": {"accountSid": self.account_sid, "callSid": self.call_sid},
        }

    def _media_message(self, chunk_no: int, payload: bytes) -> str:
        # Built by hand: a load test sends thousands of these a second.
        return (
            '{"event":"media","sequenceNumber":"'
            + self._next_seq()
            + '","streamSid":"'
            + self.stream_sid
            + '","media":{"track":"inbound","chunk":"'
            + str(chunk_no + 1)
            + '","timestamp":"'
            + str(chunk_no * 20)
            + '","payload":"'
            + base64.b64encode(payload).decode("ascii")
            + '"}}'
        )

    def _barge_due(self) -> bool:
        b = self.barge_in
        if b is None or self.log.barge_in_t is not None:
            return False
        now = self._now()
        if b.at is not None:
            return now >= b.at
        if b.after_reply is not None and self._first_reply_t is not None:
            return now >= self._first_reply_t + b.after_reply
        return False

    async def _send_audio(self) -> None:
        loop = asyncio.get_running_loop()
        tail = _SILENCE * int(self.tail_silence_s * 8000)
        script = self.audio + tail
        pos = 0
        chunk_no = 0
        dtmf = list(self.dtmf)
        fast = not self.realtime and bool(self.audio)
        # Chunk n is due at pace_t + (n - pace_n) * 20 ms.
        pace_t, pace_n = self._t0, 0
        speech_end: int | None = None
        try:
            while True:
                if self._say is not None:
                    said, speech_end = self._say
                    self._say = None
                    self.log.said.append(self._now())
                    script = said + tail
                    pos = 0
                    if fast:
                        fast = False
                        pace_t, pace_n = loop.time(), chunk_no
                if self._barge_due():
                    assert self.barge_in is not None
                    self.log.barge_in_t = self._now()
                    script = self.barge_in.audio + tail
                    pos = 0
                    if fast:  # a barge-in is speech: it goes at the pace of speech
                        fast = False
                        pace_t, pace_n = loop.time(), chunk_no
                while dtmf and dtmf[0][0] <= self._now():
                    _, digit = dtmf.pop(0)
                    await self._send(
                        {
                            "event": "dtmf",
                            "sequenceNumber": self._next_seq(),
                            "streamSid": self.stream_sid,
                            "dtmf": {"track": "inbound_track", "digit": digit},
                        }
                    )
                chunk = script[pos : pos + CHUNK_BYTES]
                if len(chunk) < CHUNK_BYTES:
                    # A live line keeps sending (silence) until someone hangs up.
                    chunk = chunk + _SILENCE * (CHUNK_BYTES - len(chunk))
                await self._send(self._media_message(chunk_no, chunk))
                self.log.sent_chunks += 1
                if speech_end is not None and speech_end < pos + CHUNK_BYTES:
                    self.log.speech_ends.append(self._now())
                    speech_end = None
                    self._changed.set()
                pos += CHUNK_BYTES
                chunk_no += 1
                if fast:
                    if pos < len(self.audio):
                        if chunk_no % 25 == 0:
                            await asyncio.sleep(0)  # let replies in while blasting audio
                        continue
                    fast = False  # the speech is out: the line goes on in real time
                    pace_t, pace_n = loop.time(), chunk_no
                await asyncio.sleep(max(0.0, pace_t + (chunk_no - pace_n) * CHUNK_S - loop.time()))
        except _Closed:
            self._changed.set()

    async def _receive(self) -> None:
        from websockets.exceptions import ConnectionClosed

        ws = self._ws
        try:
            async for message in ws:
                self._on_message(message)
                self._changed.set()
        except ConnectionClosed:
            pass
        finally:
            rcvd = ws.protocol.close_rcvd
            if rcvd is not None:
                self.log.close_code = rcvd.code
                self.log.close_reason = rcvd.reason
                # The server closed first when its close frame arrived before ours went out.
                self.log.closed_by_server = ws.protocol.close_rcvd_then_sent is not False
            self._changed.set()

    def _on_message(self, message: str | bytes) -> None:
        now = self._now()
        if not isinstance(message, str):
            # Twilio treats a binary frame as an error: record it, as Twilio would log it.
            self.log.errors.append((now, f"binary frame of {len(message)} bytes"))
            return
        try:
            data = json.loads(message)
            event = data["event"]
            if data.get("streamSid") != self.stream_sid:
                self.log.errors.append((now, f"{event} for another streamSid"))
        except (ValueError, KeyError, TypeError, AttributeError):
            self.log.errors.append((now, f"malformed message {message[:80]!r}"))
            return
        if event == "media":
            try:
                audio = base64.b64decode(data["media"]["payload"], validate=True)
            except (ValueError, KeyError, TypeError):
                self.log.errors.append((now, "media with a bad payload"))
                return
            if self._first_reply_t is None:
                self._first_reply_t = now
            self.log.media_times.append(now)
            self.log.media_sizes.append(len(audio))
            if self.keep_audio:
                self.log.media.append((now, audio))
            # Twilio's playout: audio plays in real time after what is already buffered.
            self._play_end = max(now, self._play_end) + len(audio) / 8000
        elif event == "mark":
            try:
                name = str(data["mark"]["name"])
            except (KeyError, TypeError):
                self.log.errors.append((now, "mark without a name"))
                return
            self.log.marks.append((now, name))
            if not self.echo_marks:
                return
            if self._play_end <= now:
                self._echo_mark(name)
            else:
                loop = asyncio.get_running_loop()
                self._mark_ids += 1
                key = self._mark_ids
                handle = loop.call_at(self._t0 + self._play_end, self._played_mark, key)
                self._pending_marks[key] = (handle, name)
        elif event == "clear":
            self.log.clears.append(now)
            self._play_end = now
            pending, self._pending_marks = self._pending_marks, {}
            for key in sorted(pending):  # Twilio returns every pending mark at once, in order
                handle, name = pending[key]
                handle.cancel()
                self._echo_mark(name)
        else:
            self.log.errors.append((now, f"unexpected event {event!r}"))

    def _played_mark(self, key: int) -> None:
        entry = self._pending_marks.pop(key, None)
        if entry is not None:
            self._echo_mark(entry[1])

    def _echo_mark(self, name: str) -> None:
        self.log.mark_echoes.append((self._now(), name))
        msg = json.dumps(
            {
                "event": "mark",
                "sequenceNumber": self._next_seq(),
                "streamSid": self.stream_sid,
                "mark": {"name": name},
            }
        )
        asyncio.get_running_loop().create_task(self._send_quiet(msg))
        self._changed.set()

    async def _send_quiet(self, msg: str) -> None:
        try:
            await self._send(msg)
        except _Closed:
            pass


class _Closed(Exception):
    """The websocket is gone."""


def parse_twiml_stream(twiml: str) -> tuple[str, dict[str, str]]:
    """The ``<Stream url>`` and its ``<Parameter>``s from a ``<Connect><Stream>`` TwiML answer."""
    root = ET.fromstring(twiml)
    stream = root.find("./Connect/Stream")
    if stream is None or not stream.get("url"):
        raise ValueError(f"TwiML has no <Connect><Stream url=...>: {twiml[:200]}")
    params = {p.get("name", ""): p.get("value", "") for p in stream.findall("Parameter")}
    return stream.get("url", ""), params
