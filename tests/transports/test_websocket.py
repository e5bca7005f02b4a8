"""The websocket receive loop and sink, against an in-memory ASGI websocket."""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

import pytest

from voxpipe.transports.twilio import TwilioSerializer
from voxpipe.transports.vonage import VonageSerializer
from voxpipe.transports.websocket import (
    WebSocketWireSink,
    WireClosed,
    WireLimits,
    WireReceiver,
    WireRefused,
)
from voxpipe.transports.wire import WireAudio, WireDTMF, WireEvent, WireMark


class FakeWebSocket:
    """Hands out queued ASGI messages; records what is sent."""

    def __init__(self, messages: list[str | bytes | None]) -> None:
        self.inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        for m in messages:
            self.push(m)
        self.sent: list[str | bytes] = []
        self.closed: tuple[int, str] | None = None
        self.fail_sends = False

    def push(self, m: str | bytes | None) -> None:
        if m is None:
            self.inbox.put_nowait({"type": "websocket.disconnect", "code": 1006})
        elif isinstance(m, bytes):
            self.inbox.put_nowait({"type": "websocket.receive", "bytes": m})
        else:
            self.inbox.put_nowait({"type": "websocket.receive", "text": m})

    async def receive(self) -> dict[str, Any]:
        return await self.inbox.get()

    async def send_text(self, data: str) -> None:
        if self.fail_sends:
            raise RuntimeError("socket gone")
        self.sent.append(data)

    async def send_bytes(self, data: bytes) -> None:
        self.sent.append(data)

    async def close(self, code: int = 1000, reason: str | None = None) -> None:
        self.closed = (code, reason or "")


class Target:
    def __init__(self) -> None:
        self.events: list[WireEvent] = []
        self.closed: list[str] = []

    async def handle_wire_event(self, event: WireEvent) -> None:
        self.events.append(event)

    async def on_wire_closed(self, reason: str = "caller hung up") -> None:
        self.closed.append(reason)


def start(sid: str = "CA1") -> str:
    return json.dumps(
        {"event": "start", "streamSid": "MZ1", "start": {"streamSid": "MZ1", "callSid": sid}}
    )


def media(audio: bytes = b"\x01" * 160) -> str:
    return json.dumps({"event": "media", "media": {"payload": base64.b64encode(audio).decode()}})


async def test_events_flow_until_stop_and_out_of_order_ones_are_skipped() -> None:
    ws = FakeWebSocket(
        [
            '{"event":"connected"}',
            media(),  # before start: skipped
            start(),
            media(b"\x02" * 160),
            '{"event":"dtmf","dtmf":{"digit":"9"}}',
            '{"event":"mark","mark":{"name":"m"}}',
            start("CA2"),  # a second start: skipped
            '{"event":"connected"}',  # too late: skipped
            "x" * 70_000,  # oversized: skipped
            '{"event":"stop"}',
            media(),  # after stop: never read
        ]
    )
    rx = WireReceiver(ws, TwilioSerializer(), carrier="twilio")
    first = await rx.wait_for_start()
    assert first.call_id == "CA1" and rx.label == "CA1"
    target = Target()
    reason = await rx.run(target)
    assert reason == "caller hung up (stop)"
    assert target.events == [WireAudio(b"\x02" * 160), WireDTMF("9"), WireMark("m")]
    assert target.closed == ["caller hung up (stop)"]
    assert rx.bad_messages == 4


async def test_disconnect_and_no_start() -> None:
    rx = WireReceiver(FakeWebSocket([start(), media(), None]), TwilioSerializer(), carrier="twilio")
    await rx.wait_for_start()
    target = Target()
    await rx.run(target)
    assert target.closed == ["disconnected (code 1006)"]
    with pytest.raises(WireClosed):
        await WireReceiver(FakeWebSocket([None]), TwilioSerializer(), carrier="t").wait_for_start()
    quiet = WireReceiver(
        FakeWebSocket([]), TwilioSerializer(), carrier="t", limits=WireLimits(start_timeout_s=0.05)
    )
    with pytest.raises(WireRefused, match="no start message within 0.05 s"):
        await quiet.wait_for_start()


async def test_flood_and_garbage_refuse_the_stream() -> None:
    now = [0.0]
    ws = FakeWebSocket([start()] + [media()] * 20)
    rx = WireReceiver(
        ws,
        TwilioSerializer(),
        carrier="twilio",
        limits=WireLimits(rate_per_s=10, burst_messages=8),
        clock=lambda: now[0],
    )
    await rx.wait_for_start()
    target = Target()
    with pytest.raises(WireRefused, match="message flood") as info:
        await rx.run(target)
    assert info.value.code == 1008
    assert len(target.events) == 7  # the burst allowance, then refused
    assert target.closed == ["stream refused: message flood: more than 10 messages/s (burst 8)"]

    junk = WireReceiver(
        FakeWebSocket([start()] + ["{"] * 5),
        TwilioSerializer(),
        carrier="twilio",
        limits=WireLimits(max_bad_messages=3),
    )
    await junk.wait_for_start()
    with pytest.raises(WireRefused, match="too many malformed"):
        await junk.run(Target())


async def test_sink_sends_serialized_messages_and_fails_loudly_when_gone() -> None:
    ws = FakeWebSocket([])
    sent: list[int] = []
    sink = WebSocketWireSink(ws, TwilioSerializer("MZ9"), on_send=lambda: sent.append(1))
    await sink.send_audio(b"\x05" * 160)
    await sink.send_mark("m1")
    await sink.send_clear()
    kinds = [json.loads(m)["event"] for m in ws.sent]  # type: ignore[arg-type]
    assert kinds == ["media", "mark", "clear"] and len(sent) == 3
    ws.fail_sends = True
    with pytest.raises(ConnectionError):
        await sink.send_audio(b"\x05" * 160)
    assert sink.closed
    with pytest.raises(ConnectionError):
        await sink.send_clear()


async def test_vonage_sink_sends_whole_20ms_frames() -> None:
    ws = FakeWebSocket([])
    sink = WebSocketWireSink(ws, VonageSerializer(16000))
    await sink.send_audio(b"\x01\x00" * 800)  # 50 ms
    assert [len(m) for m in ws.sent] == [640, 640, 640]
    await sink.close(1000, "bye")
    assert ws.closed == (1000, "bye")
