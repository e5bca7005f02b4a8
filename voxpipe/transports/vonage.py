"""Vonage voice websockets: raw little-endian PCM16 in binary frames, JSON events in text frames.

In: ``websocket:connected`` (content type and the headers set in the NCCO), binary audio,
``websocket:notify`` (our mark echoed), ``websocket:cleared``, ``websocket:dtmf``. The call ends
with the socket (Vonage sends no stop event). Out: binary 20 ms frames, ``{"action":"clear"}``,
``{"action":"notify","payload":{...}}``.
"""

from __future__ import annotations

import json
import re
from typing import Any

from voxpipe.transports._wirejson import (
    check_audio_length,
    check_digit,
    get_obj,
    get_str,
    load_object,
    string_map,
)
from voxpipe.transports.wire import (
    AudioFormat,
    WireAudio,
    WireCleared,
    WireConnected,
    WireDTMF,
    WireEvent,
    WireMark,
    WireProtocolError,
    WireStart,
)

__all__ = ["VonageSerializer"]

_CONTENT_TYPE = re.compile(r"^\s*audio/l16\s*;\s*rate\s*=\s*(\d+)\s*$", re.IGNORECASE)
_RESERVED = {"event", "content-type"}


class VonageSerializer:
    """Parses Vonage websocket messages into wire events and builds audio/notify/clear."""

    carrier = "vonage"
    # Vonage plays only whole 20 ms frames: the sink splits audio, ``audio`` pads the last one.
    frame_exact = True

    def __init__(self, sample_rate: int = 16000) -> None:
        self.audio_format = AudioFormat("pcm16", sample_rate, 1)

    # ------------------------------------------------------------------ inbound

    def parse(self, message: str | bytes) -> list[WireEvent]:
        if isinstance(message, bytes | bytearray | memoryview):
            audio = bytes(message)
            check_audio_length(audio, 2)
            return [WireAudio(audio)]
        data = load_object(message)
        event = data.get("event")
        if event == "websocket:connected":
            return [WireConnected(), self._start(data)]
        if event == "websocket:notify":
            payload = get_obj(data, "payload", required=False)
            name = payload.get("name")
            if not isinstance(name, str):
                # A notify we did not send (no name): report the whole payload as the name.
                name = json.dumps(payload, sort_keys=True)
            return [WireMark(name)]
        if event == "websocket:cleared":
            return [WireCleared()]
        if event == "websocket:dtmf":
            digit = data.get("digit")
            if digit is None and isinstance(data.get("dtmf"), dict):
                digit = data["dtmf"].get("digits", data["dtmf"].get("digit"))
            if not isinstance(digit, str):
                raise WireProtocolError("websocket:dtmf without a digit")
            # Vonage may batch several keys in one event.
            if not digit:
                raise WireProtocolError("websocket:dtmf with an empty digit")
            return [WireDTMF(check_digit(d)) for d in digit]
        if not isinstance(event, str):
            raise WireProtocolError("message has no 'event' string")
        raise WireProtocolError(f"unknown event {event!r:.40}")

    def _start(self, data: dict[str, Any]) -> WireStart:
        content_type = get_str(data, "content-type")
        match = _CONTENT_TYPE.match(content_type)
        if match is None or int(match.group(1)) not in (8000, 16000, 24000):
            raise WireProtocolError(
                f"unsupported content-type {content_type!r:.60}: "
                "use audio/l16;rate=8000, 16000 or 24000 in the NCCO"
            )
        rate = int(match.group(1))
        headers = {
            k: v for k, v in data.items() if k not in _RESERVED and not isinstance(v, dict | list)
        }
        params = string_map(headers, "headers")
        self.audio_format = AudioFormat("pcm16", rate, 1)
        return WireStart(
            stream_id=params.get("uuid", ""),
            call_id=params.get("uuid", "") or params.get("conversation_uuid", ""),
            caller=params.get("from", params.get("From", "")),
            called=params.get("to", params.get("To", "")),
            custom_parameters=params,
            audio_format=AudioFormat("pcm16", rate, 1),
            raw=dict(data),
        )

    # ------------------------------------------------------------------ outbound

    def audio(self, audio: bytes) -> bytes:
        frame = self.audio_format.bytes_per_20ms
        short = len(audio) % frame
        if short:
            # Vonage drops partial frames: pad the tail with silence.
            audio = audio + b"\x00" * (frame - short)
        return audio

    def clear(self) -> str:
        return '{"action":"clear"}'

    def mark(self, name: str) -> str:
        return json.dumps({"action": "notify", "payload": {"name": name}})
