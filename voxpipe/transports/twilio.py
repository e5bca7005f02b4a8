"""Twilio Media Streams (bidirectional ``<Connect><Stream>``): 8 kHz mu-law JSON messages.

In: ``connected``, ``start`` (call ids, custom parameters, media format), ``media``, ``dtmf``,
``mark`` (an echo of ours), ``stop``. Out: ``media``, ``mark``, ``clear`` and nothing else
(anything else is an error at Twilio).
"""

from __future__ import annotations

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

__all__ = ["TwilioSerializer"]

_MULAW = "audio/x-mulaw"


class TwilioSerializer:
    """Parses Twilio's stream messages into wire events and builds media/mark/clear for one call."""

    carrier = "twilio"
    frame_exact = False

    def __init__(self, stream_sid: str = "") -> None:
        self.audio_format = AudioFormat("mulaw", 8000, 1)
        self.stream_sid = ""
        self._sid_json = '""'
        if stream_sid:
            self._set_stream_sid(stream_sid)

    def _set_stream_sid(self, sid: str) -> None:
        self.stream_sid = sid
        # Encoded once: every outbound media message embeds it.
        self._sid_json = json.dumps(sid)

    # ------------------------------------------------------------------ inbound

    def parse(self, message: str | bytes) -> list[WireEvent]:
        data = load_object(message)
        event = data.get("event")
        if event == "media":
            media = get_obj(data, "media")
            track = media.get("track", "inbound")
            if track not in ("inbound", "inbound_track"):
                return []  # an outbound-track fork carries our own audio: not the caller
            return [WireAudio(decode_payload(media.get("payload")))]
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
        if not isinstance(event, str):
            raise WireProtocolError("message has no 'event' string")
        raise WireProtocolError(f"unknown event {event!r:.40}")

    def _start(self, data: dict[str, Any]) -> WireStart:
        start = get_obj(data, "start")
        sid = get_str(start, "streamSid", required=False) or get_str(data, "streamSid")
        call_sid = get_str(start, "callSid")
        fmt = get_obj(start, "mediaFormat", required=False)
        encoding = get_str(fmt, "encoding", required=False, default=_MULAW)
        rate = get_int(fmt, "sampleRate", 8000)
        channels = get_int(fmt, "channels", 1)
        if encoding != _MULAW or rate != 8000 or channels != 1:
            raise WireProtocolError(
                f"unsupported media format {encoding} {rate} Hz x{channels}: "
                "Twilio streams are audio/x-mulaw 8000 Hz mono"
            )
        params = string_map(start.get("customParameters"), "customParameters")
        self._set_stream_sid(sid)
        return WireStart(
            stream_id=sid,
            call_id=call_sid,
            caller=params.get("From", ""),
            called=params.get("To", ""),
            custom_parameters=params,
            audio_format=AudioFormat("mulaw", 8000, 1),
            raw=dict(start),
        )

    # ------------------------------------------------------------------ outbound

    def audio(self, audio: bytes) -> str:
        # Built by hand: this runs 50 times a second per call, and base64 needs no escaping.
        return (
            '{"event":"media","streamSid":'
            + self._sid_json
            + ',"media":{"payload":"'
            + b64(audio)
            + '"}}'
        )

    def clear(self) -> str:
        return '{"event":"clear","streamSid":' + self._sid_json + "}"

    def mark(self, name: str) -> str:
        return json.dumps({"event": "mark", "streamSid": self.stream_sid, "mark": {"name": name}})
