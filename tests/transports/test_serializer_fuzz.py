"""Property: every serializer meets any input with wire events or a WireProtocolError, nothing else."""

from __future__ import annotations

import base64
import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from voxpipe.transports.telnyx import TelnyxSerializer
from voxpipe.transports.twilio import TwilioSerializer
from voxpipe.transports.vonage import VonageSerializer
from voxpipe.transports.wire import WireEvent, WireProtocolError

EVENTS = [
    "connected",
    "start",
    "media",
    "dtmf",
    "mark",
    "stop",
    "error",
    "clear",
    "websocket:connected",
    "websocket:notify",
    "websocket:cleared",
    "websocket:dtmf",
    "bogus",
]
KEYS = [
    "event",
    "start",
    "media",
    "dtmf",
    "mark",
    "stop",
    "payload",
    "digit",
    "name",
    "track",
    "streamSid",
    "callSid",
    "customParameters",
    "mediaFormat",
    "encoding",
    "sampleRate",
    "channels",
    "call_control_id",
    "client_state",
    "media_format",
    "sample_rate",
    "content-type",
    "stream_id",
    "uuid",
]

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False),
    st.text(max_size=30),
    st.sampled_from(EVENTS),
    st.sampled_from(["audio/x-mulaw", "PCMU", "L16", "audio/l16;rate=16000", "inbound"]),
    st.binary(max_size=400).map(lambda b: base64.b64encode(b).decode()),
)
json_values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=8), children, max_size=6),
    ),
    max_leaves=10,
)
messages = st.one_of(
    st.dictionaries(st.sampled_from(KEYS), json_values, max_size=6)
    .map(lambda d: {"event": d.pop("event", "media"), **d})
    .map(json.dumps),
    json_values.map(json.dumps),
    st.text(max_size=200),
    st.binary(max_size=700),
)

SERIALIZERS = [TwilioSerializer, TelnyxSerializer, VonageSerializer]


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(SERIALIZERS), st.lists(messages, min_size=1, max_size=3))
def test_any_input_gives_events_or_a_protocol_error(cls: type, batch: list[str | bytes]) -> None:
    serializer = cls()
    for message in batch:
        try:
            events = serializer.parse(message)
        except WireProtocolError as exc:
            assert str(exc)  # says what was wrong
            continue
        assert isinstance(events, list)
        assert all(isinstance(e, WireEvent) for e in events)
    # Whatever it went through, it can still build its outbound messages.
    for out in (serializer.audio(b"\xff" * 160), serializer.clear(), serializer.mark("m")):
        assert isinstance(out, str | bytes)
