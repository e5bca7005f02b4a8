"""TwilioSerializer: Twilio's stream messages in, media/mark/clear out."""

from __future__ import annotations

import base64
import json

import pytest

from voxpipe.transports.twilio import TwilioSerializer
from voxpipe.transports.wire import (
    WireAudio,
    WireConnected,
    WireDTMF,
    WireMark,
    WireProtocolError,
    WireStart,
    WireStop,
)

SID = "MZ0123456789abcdef0123456789abcdef"


def start_msg(**over: object) -> str:
    start = {
        "accountSid": "AC1",
        "streamSid": SID,
        "callSid": "CA42",
        "tracks": ["inbound"],
        "customParameters": {"From": "+15550001", "To": "+15550002", "locale": "fr-FR"},
        "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
    }
    start.update(over)
    return json.dumps({"event": "start", "sequenceNumber": "1", "streamSid": SID, "start": start})


def media_msg(audio: bytes, track: str = "inbound") -> str:
    return json.dumps(
        {
            "event": "media",
            "sequenceNumber": "2",
            "streamSid": SID,
            "media": {
                "track": track,
                "chunk": "1",
                "timestamp": "5",
                "payload": base64.b64encode(audio).decode(),
            },
        }
    )


def test_inbound_messages_parse_to_wire_events() -> None:
    s = TwilioSerializer()
    assert s.parse('{"event":"connected","protocol":"Call","version":"1.0.0"}') == [WireConnected()]
    [start] = s.parse(start_msg())
    assert isinstance(start, WireStart)
    assert (start.call_id, start.stream_id, start.caller, start.called) == (
        "CA42",
        SID,
        "+15550001",
        "+15550002",
    )
    assert start.custom_parameters["locale"] == "fr-FR"
    assert (start.audio_format.encoding, start.audio_format.sample_rate) == ("mulaw", 8000)
    audio = bytes(range(160))
    assert s.parse(media_msg(audio)) == [WireAudio(audio)]
    assert s.parse(media_msg(audio, track="outbound")) == []
    dtmf = {"event": "dtmf", "streamSid": SID, "dtmf": {"track": "inbound_track", "digit": "7"}}
    assert s.parse(json.dumps(dtmf)) == [WireDTMF("7")]
    mark = {"event": "mark", "sequenceNumber": "4", "streamSid": SID, "mark": {"name": "m1"}}
    assert s.parse(json.dumps(mark)) == [WireMark("m1")]
    stop = {"event": "stop", "streamSid": SID, "stop": {"accountSid": "AC1", "callSid": "CA42"}}
    assert s.parse(json.dumps(stop)) == [WireStop()]


def test_outbound_messages_round_trip() -> None:
    s = TwilioSerializer()
    s.parse(start_msg())
    audio = bytes(range(256)) * 2
    media = json.loads(s.audio(audio))
    assert media == {
        "event": "media",
        "streamSid": SID,
        "media": {"payload": base64.b64encode(audio).decode()},
    }
    assert json.loads(s.clear()) == {"event": "clear", "streamSid": SID}
    mark = json.loads(s.mark('turn-1 "quoted"'))
    assert mark == {"event": "mark", "streamSid": SID, "mark": {"name": 'turn-1 "quoted"'}}
    # Twilio echoes our mark back with a sequence number: it parses to the same name.
    echoed = dict(mark, sequenceNumber="9")
    assert s.parse(json.dumps(echoed)) == [WireMark('turn-1 "quoted"')]
    # What we send as media, Twilio would deliver as the same bytes.
    assert s.parse(media_msg(base64.b64decode(media["media"]["payload"]))) == [WireAudio(audio)]


@pytest.mark.parametrize(
    "message, why",
    [
        ("not json", "malformed JSON"),
        ("[1,2]", "JSON object"),
        ('{"event": 5}', "event"),
        ('{"event": "bogus"}', "unknown event"),
        ('{"event": "media", "media": {"payload": "@@@"}}', "base64"),
        ('{"event": "media", "media": {"payload": ""}}', "empty"),
        ('{"event": "media", "media": {}}', "payload"),
        ('{"event": "media", "media": "x"}', "object"),
        ('{"event": "dtmf", "dtmf": {"digit": "x"}}', "DTMF"),
        ('{"event": "mark", "mark": {}}', "name"),
        ('{"event": "start", "start": {"callSid": "CA1"}}', "streamSid"),
        (b"\x00\x01", "binary"),
    ],
)
def test_malformed_messages_raise_protocol_errors(message: str | bytes, why: str) -> None:
    with pytest.raises(WireProtocolError, match=why):
        TwilioSerializer().parse(message)


def test_oversized_media_and_wrong_format_are_refused() -> None:
    s = TwilioSerializer()
    with pytest.raises(WireProtocolError, match="exceeds|too large"):
        s.parse(media_msg(b"\xff" * 40000))
    with pytest.raises(WireProtocolError, match="unsupported media format"):
        s.parse(start_msg(mediaFormat={"encoding": "audio/l16", "sampleRate": 16000}))
    with pytest.raises(WireProtocolError, match="exceeds"):
        s.parse(" " * 70000)
