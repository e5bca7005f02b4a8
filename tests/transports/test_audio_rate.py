"""The receive loop admits caller audio at most ``audio_rate`` times real time (plus a burst),
measured in audio seconds on the loop's clock, here a hand-driven one."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from voxpipe.transports.twilio import TwilioSerializer
from voxpipe.transports.vonage import VonageSerializer
from voxpipe.transports.websocket import CLOSE_POLICY, WireLimits, WireReceiver, WireRefused
from voxpipe.transports.wire import WireStart


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


class Target:
    def __init__(self) -> None:
        self.audio = 0

    async def handle_wire_event(self, event: Any) -> None:
        self.audio += len(event.audio)

    async def on_wire_closed(self, reason: str = "") -> None:
        pass


def _media(n_bytes: int) -> str:
    payload = base64.b64encode(b"\xff" * n_bytes).decode()
    return json.dumps({"event": "media", "streamSid": "MZ1", "media": {"payload": payload}})


def _receiver(clock: Clock, serializer: Any = None, **limits: Any) -> WireReceiver:
    serializer = serializer or TwilioSerializer()
    rx = WireReceiver(
        object(),  # type: ignore[arg-type]  # _dispatch never touches the socket
        serializer,
        carrier="twilio",
        limits=WireLimits(**limits),
        clock=clock,
    )
    rx.start = WireStart(call_id="CA1", audio_format=serializer.audio_format)
    rx.started_at = clock()
    return rx


async def _feed(rx: WireReceiver, target: Target, message: str | bytes) -> None:
    for event in rx.serializer.parse(message):
        await rx._dispatch(event, target)


async def test_real_time_and_up_to_the_rate_are_admitted_for_a_long_call() -> None:
    clock = Clock()
    rx, target = _receiver(clock), Target()
    # Ten minutes at 1.45x real time (a carrier catching up all along) stays in.
    for i in range(int(600 / 0.02)):
        clock.t = 100.0 + i * 0.02 / 1.45
        await _feed(rx, target, _media(160))
    assert rx.audio_seconds == pytest.approx(600.0)


async def test_the_burst_then_faster_than_the_rate_is_refused() -> None:
    clock = Clock()
    rx, target = _receiver(clock, audio_burst_s=5.0, audio_rate=1.5), Target()
    for _ in range(250):  # 5 s of audio at once: the burst allowance
        await _feed(rx, target, _media(160))
    with pytest.raises(WireRefused) as refused:
        await _feed(rx, target, _media(160))
    assert refused.value.code == CLOSE_POLICY == 1008
    assert "faster than 1.5x real time" in refused.value.reason
    assert target.audio == 250 * 160  # the message over the limit went nowhere

    # Two seconds later three more seconds of audio are allowed (5 + 1.5 * 2 = 8).
    clock2 = Clock()
    rx2, target2 = _receiver(clock2), Target()
    for _ in range(250):
        await _feed(rx2, target2, _media(160))
    clock2.t += 2.0
    for _ in range(149):
        await _feed(rx2, target2, _media(160))
    with pytest.raises(WireRefused):
        for _ in range(3):
            await _feed(rx2, target2, _media(160))


async def test_big_messages_count_by_their_audio_not_their_number() -> None:
    # 300 messages of 4 s (the 20 minutes in seconds): the second message is refused.
    clock = Clock()
    rx, target = _receiver(clock, max_message_bytes=10**6), Target()
    await _feed(rx, target, _media(4 * 8000))
    with pytest.raises(WireRefused):
        await _feed(rx, target, _media(4 * 8000))


async def test_pcm16_audio_is_measured_at_its_own_rate() -> None:
    clock = Clock()
    serializer = VonageSerializer()
    rx, target = _receiver(clock, serializer), Target()
    fmt = serializer.audio_format
    second = fmt.bytes_per_20ms * 50
    for _ in range(5):
        await _feed(rx, target, b"\x00" * second)
    assert rx.audio_seconds == pytest.approx(5.0)
    with pytest.raises(WireRefused):
        await _feed(rx, target, b"\x00" * fmt.bytes_per_20ms)
