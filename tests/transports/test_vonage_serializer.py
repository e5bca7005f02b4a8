"""VonageSerializer: binary PCM16 frames and JSON events."""

from __future__ import annotations

import json

import pytest

from voxpipe.transports.vonage import VonageSerializer
from voxpipe.transports.wire import (
    WireAudio,
    WireCleared,
    WireConnected,
    WireDTMF,
    WireMark,
    WireProtocolError,
    WireStart,
)

CONNECTED = {
    "event": "websocket:connected",
    "content-type": "audio/l16;rate=16000",
    "uuid": "uuid-1",
    "from": "447700900001",
    "to": "447700900002",
    "locale": "en-GB",
}


def test_inbound_messages_parse_to_wire_events() -> None:
    s = VonageSerializer()
    connected, start = s.parse(json.dumps(CONNECTED))
    assert connected == WireConnected()
    assert isinstance(start, WireStart)
    assert (start.call_id, start.caller, start.called) == ("uuid-1", "447700900001", "447700900002")
    assert start.custom_parameters["locale"] == "en-GB"
    assert (start.audio_format.encoding, start.audio_format.sample_rate) == ("pcm16", 16000)
    frame = bytes(range(256)) * 2 + bytes(128)
    assert s.parse(frame) == [WireAudio(frame)]
    assert s.parse('{"event":"websocket:cleared"}') == [WireCleared()]
    assert s.parse('{"event":"websocket:dtmf","digit":"5","duration":260}') == [WireDTMF("5")]
    assert s.parse('{"event":"websocket:dtmf","dtmf":{"digits":"12"}}') == [
        WireDTMF("1"),
        WireDTMF("2"),
    ]


def test_outbound_messages_round_trip() -> None:
    s = VonageSerializer()
    s.parse(json.dumps({**CONNECTED, "content-type": "audio/l16;rate=8000"}))
    assert s.audio_format.bytes_per_20ms == 320
    assert s.audio(b"\x01\x02" * 160) == b"\x01\x02" * 160
    # A short last frame is padded to a whole 20 ms frame (Vonage drops partial ones).
    assert s.audio(b"\x01\x02" * 10) == b"\x01\x02" * 10 + bytes(300)
    assert json.loads(s.clear()) == {"action": "clear"}
    mark = json.loads(s.mark("m1"))
    assert mark == {"action": "notify", "payload": {"name": "m1"}}
    echoed = {"event": "websocket:notify", "payload": mark["payload"]}
    assert s.parse(json.dumps(echoed)) == [WireMark("m1")]


@pytest.mark.parametrize(
    "message, why",
    [
        (b"\x01\x02\x03", "whole number"),
        (b"", "empty"),
        (bytes(40000), "exceeds"),
        (json.dumps({**CONNECTED, "content-type": "audio/opus"}), "content-type"),
        ('{"event":"websocket:dtmf"}', "digit"),
        ('{"event":"websocket:whatever"}', "unknown event"),
        ("{", "malformed JSON"),
    ],
)
def test_errors(message: str | bytes, why: str) -> None:
    with pytest.raises(WireProtocolError, match=why):
        VonageSerializer().parse(message)
