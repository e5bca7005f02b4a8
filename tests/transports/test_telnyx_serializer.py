"""TelnyxSerializer: Telnyx's stream messages in, media/mark/clear out."""

from __future__ import annotations

import base64
import json

import pytest

from voxpipe.transports.telnyx import TelnyxSerializer
from voxpipe.transports.wire import (
    WireAudio,
    WireConnected,
    WireDTMF,
    WireMark,
    WireProtocolError,
    WireStart,
    WireStop,
)


def start_msg(encoding: str = "PCMU", rate: int = 8000, client_state: str | None = None) -> str:
    start: dict[str, object] = {
        "call_control_id": "v2:abc",
        "call_session_id": "sess-1",
        "from": "+15550001",
        "to": "+15550002",
        "media_format": {"encoding": encoding, "sample_rate": rate, "channels": 1},
    }
    if client_state is not None:
        start["client_state"] = client_state
    return json.dumps(
        {"event": "start", "sequence_number": "1", "start": start, "stream_id": "st-1"}
    )


def media_msg(audio: bytes) -> str:
    return json.dumps(
        {
            "event": "media",
            "sequence_number": "4",
            "media": {
                "track": "inbound",
                "chunk": "2",
                "timestamp": "5",
                "payload": base64.b64encode(audio).decode(),
            },
            "stream_id": "st-1",
        }
    )


def test_inbound_messages_parse_to_wire_events() -> None:
    s = TelnyxSerializer()
    assert s.parse('{"event":"connected","version":"1.0.0"}') == [WireConnected()]
    state = base64.b64encode(json.dumps({"locale": "de-DE", "n": 3}).encode()).decode()
    [start] = s.parse(start_msg(client_state=state))
    assert isinstance(start, WireStart)
    assert (start.call_id, start.stream_id, start.caller, start.called) == (
        "v2:abc",
        "st-1",
        "+15550001",
        "+15550002",
    )
    assert start.custom_parameters["locale"] == "de-DE"
    assert start.custom_parameters["n"] == "3"
    assert s.parse(media_msg(b"\x01" * 160)) == [WireAudio(b"\x01" * 160)]
    dtmf = {"event": "dtmf", "stream_id": "st-1", "sequence_number": "5", "dtmf": {"digit": "#"}}
    assert s.parse(json.dumps(dtmf)) == [WireDTMF("#")]
    assert s.parse('{"event":"mark","stream_id":"st-1","mark":{"name":"a"}}') == [WireMark("a")]
    assert s.parse('{"event":"stop","stream_id":"st-1"}') == [WireStop()]


def test_outbound_messages_round_trip() -> None:
    s = TelnyxSerializer()
    s.parse(start_msg())
    audio = bytes(range(160))
    out = json.loads(s.audio(audio))
    assert out == {"event": "media", "media": {"payload": base64.b64encode(audio).decode()}}
    assert json.loads(s.clear()) == {"event": "clear"}
    mark = json.loads(s.mark("m-7"))
    assert mark == {"event": "mark", "mark": {"name": "m-7"}}
    assert s.parse(json.dumps({**mark, "stream_id": "st-1"})) == [WireMark("m-7")]


def test_l16_format_and_plain_client_state() -> None:
    s = TelnyxSerializer()
    state = base64.b64encode(b"just-a-string").decode()
    [start] = s.parse(start_msg("L16", 16000, client_state=state))
    assert isinstance(start, WireStart)
    assert (start.audio_format.encoding, start.audio_format.sample_rate) == ("pcm16", 16000)
    assert start.custom_parameters["client_state"] == "just-a-string"
    with pytest.raises(WireProtocolError, match="whole number"):
        s.parse(media_msg(b"\x01" * 641))  # odd length cannot be PCM16


@pytest.mark.parametrize(
    "message, why",
    [
        ('{"event":"error","payload":{"code":100002,"title":"Unknown error"}}', "100002"),
        (
            '{"event":"start","start":{"call_control_id":"x","media_format":{"encoding":"OPUS"}}}',
            "unsupported",
        ),
        ('{"event":"start","start":{"call_control_id":"x","client_state":"%%"}}', "client_state"),
        ('{"event":"media","media":{"payload":"a"}}', "base64"),
        ('{"event":"nope"}', "unknown event"),
    ],
)
def test_errors(message: str, why: str) -> None:
    with pytest.raises(WireProtocolError, match=why):
        TelnyxSerializer().parse(message)
