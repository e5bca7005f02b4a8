"""Telnyx media streaming (bidirectional): JSON messages with base64 PCMU (or L16) audio.

In: ``connected``, ``start`` (call control id, from/to, client_state, media format), ``media``,
``dtmf``, ``mark``, ``error``, ``stop``. Out: ``media``, ``mark``, ``clear``.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from voxpipe.transports._wirejson import (
    b64,
    check_digit,
    decode_payload,
    get_int,
    get_obj,
    get_str,
    load_object,
    string_map,
)
from voxpipe.transports.wire import (
    AudioFormat,
    WireAudio,
    WireConnected,
    WireDTMF,
    WireEvent,
    WireMark,
    WireProtocolError,
    WireStart,
    WireStop,
)

__all__ = ["TelnyxSerializer"]

# Telnyx encoding name -> voxpipe encoding.
_ENCODINGS = {"PCMU": "mulaw", "L16": "pcm16"}


class TelnyxSerializer:
    """Parses Telnyx's stream messages into wire events and builds media/mark/clear for one call."""

    carrier = "telnyx"
    frame_exact = False

    def __init__(self) -> None:
        self.audio_format = AudioFormat("mulaw", 8000, 1)
        self.stream_id = ""

    def _width(self) -> int:
        return 2 if self.audio_format.encoding == "pcm16" else 1

    # ------------------------------------------------------------------ inbound

    def parse(self, message: str | bytes) -> list[WireEvent]:
        data = load_object(message)
        event = data.get("event")
        if event == "media":
            media = get_obj(data, "media")
            if media.get("track", "inbound") != "inbound":
                return []
            return [WireAudio(decode_payload(media.get("payload"), sample_width=self._width()))]
        if event == "connected":
            return [WireConnected()]
        if event == "start":
            return [self._start(data)]
        if event == "mark":
            return [WireMark(get_str(get_obj(data, "mark"), "name"))]
        if event == "dtmf":
            return [WireDTMF(check_digit(get_str(get_obj(data, "dtmf"), "digit")))]
        if event == "stop":
            return [WireStop()]
        if event == "error":
            # Telnyx reports a problem with something we sent: surfaced as a protocol error so
            # it is logged with the call id; the call goes on.
            payload = get_obj(data, "payload", required=False)
            raise WireProtocolError(
                "Telnyx reported an error: "
                f"{payload.get('code', '?')} {payload.get('title', '')} {payload.get('detail', '')}".strip()
            )
        if not isinstance(event, str):
            raise WireProtocolError("message has no 'event' string")
        raise WireProtocolError(f"unknown event {event!r:.40}")

    def _start(self, data: dict[str, Any]) -> WireStart:
        start = get_obj(data, "start")
        stream_id = get_str(data, "stream_id", required=False) or get_str(
            start, "stream_id", required=False
        )
        call_id = get_str(start, "call_control_id")
        fmt = get_obj(start, "media_format", required=False)
        name = get_str(fmt, "encoding", required=False, default="PCMU").upper()
        rate = get_int(fmt, "sample_rate", 8000)
        channels = get_int(fmt, "channels", 1)
        encoding = _ENCODINGS.get(name)
        if encoding is None or channels != 1 or rate not in (8000, 16000):
            raise WireProtocolError(
                f"unsupported media format {name} {rate} Hz x{channels}: "
                "configure the Telnyx stream for PCMU 8 kHz (or L16) mono"
            )
        params = _client_state(start.get("client_state"))
        caller = get_str(start, "from", required=False)
        called = get_str(start, "to", required=False)
        params.setdefault("From", caller)
        params.setdefault("To", called)
        if start.get("call_session_id") is not None:
            params.setdefault("call_session_id", get_str(start, "call_session_id"))
        self.stream_id = stream_id
        self.audio_format = AudioFormat(encoding, rate, 1)
        return WireStart(
            stream_id=stream_id,
            call_id=call_id,
            caller=caller,
            called=called,
            custom_parameters=params,
            audio_format=AudioFormat(encoding, rate, 1),
            raw=dict(start),
        )

    # ------------------------------------------------------------------ outbound

    def audio(self, audio: bytes) -> str:
        return '{"event":"media","media":{"payload":"' + b64(audio) + '"}}'

    def clear(self) -> str:
        return '{"event":"clear"}'

    def mark(self, name: str) -> str:
        return json.dumps({"event": "mark", "mark": {"name": name}})


def _client_state(value: Any) -> dict[str, str]:
    """Telnyx's ``client_state`` is base64 of whatever the app set: a JSON object becomes the
    custom parameters, anything else is kept whole under ``client_state``."""
    if value is None or value == "":
        return {}
    if not isinstance(value, str):
        raise WireProtocolError("'client_state' must be a base64 string")
    try:
        text = base64.b64decode(value, validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        raise WireProtocolError("'client_state' is not valid base64 UTF-8") from None
    try:
        obj = json.loads(text)
    except (json.JSONDecodeError, RecursionError):
        return {"client_state": text}
    if isinstance(obj, dict):
        return string_map(obj, "client_state")
    return {"client_state": text}
