"""The Twilio caller simulator speaks Twilio's protocol and plays received audio like Twilio."""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

import pytest
from websockets.asyncio.server import ServerConnection, serve

from voxpipe.testing.twilio_caller import BargeIn, TwilioCaller, chunk_lateness


class FakeBotServer:
    """A stream websocket that records what the caller sends and runs a scripted reply."""

    def __init__(self, script: Any = None) -> None:
        self.received: list[tuple[float, dict[str, Any]]] = []
        self.script = script
        self.port = 0

    async def handler(self, ws: ServerConnection) -> None:
        loop = asyncio.get_running_loop()
        started = asyncio.Event()
        reply = None
        async for message in ws:
            data = json.loads(message)
            self.received.append((loop.time(), data))
            if data["event"] == "start" and self.script is not None:
                started.set()
                reply = loop.create_task(self.script(ws, data["streamSid"], self))
            if data["event"] == "stop":
                break
        if reply is not None:
            reply.cancel()

    def events(self, kind: str) -> list[tuple[float, dict[str, Any]]]:
        return [(t, d) for t, d in self.received if d["event"] == kind]


async def run_with(script: Any, **caller_kwargs: Any) -> tuple[FakeBotServer, Any]:
    fake = FakeBotServer(script)
    async with serve(fake.handler, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        run_kwargs = caller_kwargs.pop("_run", {})
        caller = TwilioCaller(f"ws://127.0.0.1:{port}/stream", **caller_kwargs)
        log = await caller.run(**run_kwargs)
    return fake, log


def media(sid: str, audio: bytes) -> str:
    return json.dumps(
        {"event": "media", "streamSid": sid, "media": {"payload": base64.b64encode(audio).decode()}}
    )


async def test_protocol_messages_and_real_time_pacing() -> None:
    fake = FakeBotServer()
    async with serve(fake.handler, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        caller = TwilioCaller(
            f"ws://127.0.0.1:{port}/stream",
            audio=bytes(range(256)) * 25,  # 0.8 s
            custom_parameters={"From": "+15550001", "voxpipe_token": "t"},
            tail_silence_s=0.0,
            dtmf=[(0.1, "5")],
        )
        log = await caller.run(hangup_after=0.5)
    kinds = [d["event"] for _, d in fake.received]
    assert kinds[:2] == ["connected", "start"] and kinds[-1] == "stop"
    start = fake.received[1][1]
    assert start["start"]["customParameters"] == {"From": "+15550001", "voxpipe_token": "t"}
    assert start["start"]["callSid"] == caller.call_sid
    assert start["start"]["mediaFormat"] == {
        "encoding": "audio/x-mulaw",
        "sampleRate": 8000,
        "channels": 1,
    }
    medias = fake.events("media")
    seqs = [int(d["sequenceNumber"]) for _, d in fake.received[1:]]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    assert [d["media"]["chunk"] for _, d in medias[:3]] == ["1", "2", "3"]
    assert [d["media"]["timestamp"] for _, d in medias[:3]] == ["0", "20", "40"]
    assert all(len(base64.b64decode(d["media"]["payload"])) == 160 for _, d in medias)
    # Real time: 0.5 s of call is about 25 chunks, not the whole 0.8 s of audio at once.
    assert 20 <= len(medias) <= 28
    assert fake.events("dtmf")[0][1]["dtmf"] == {"track": "inbound_track", "digit": "5"}
    assert log.sent_chunks == len(medias)


async def test_marks_are_echoed_after_playout_and_at_once_on_clear() -> None:
    async def bot(ws: ServerConnection, sid: str, fake: FakeBotServer) -> None:
        for _ in range(25):  # 0.5 s of audio, sent at once
            await ws.send(media(sid, b"\x01" * 160))
        await ws.send(json.dumps({"event": "mark", "streamSid": sid, "mark": {"name": "a"}}))
        await asyncio.sleep(0.7)  # (the far end's timeline, not a wait for an event)
        for _ in range(50):
            await ws.send(media(sid, b"\x02" * 160))
        await ws.send(json.dumps({"event": "mark", "streamSid": sid, "mark": {"name": "b"}}))
        await asyncio.sleep(0.2)
        await ws.send(json.dumps({"event": "clear", "streamSid": sid}))

    fake, log = await run_with(
        bot, _run={"until": lambda log: len(log.mark_echoes) == 2, "timeout": 5}
    )
    echoes = dict((name, t) for t, name in log.mark_echoes)
    received = dict((name, t) for t, name in log.marks)
    # "a" came back once its 0.5 s of audio had played, not before.
    assert 0.45 <= echoes["a"] - received["a"] <= 0.7
    # "b" was pending (1 s of audio queued) when the clear came: returned at once.
    assert abs(echoes["b"] - log.clears[0]) < 0.05
    assert [d["mark"]["name"] for _, d in fake.events("mark")] == ["a", "b"]


async def test_barge_in_switches_audio_at_the_chosen_instant() -> None:
    fake, log = await run_with(
        None,
        audio=b"\x01" * 8000,
        barge_in=BargeIn(b"\x02" * 1600, at=0.3),
        tail_silence_s=0.5,
        _run={"hangup_after": 0.6},
    )
    assert log.barge_in_t is not None and 0.3 <= log.barge_in_t < 0.35
    t_start = fake.events("start")[0][0]
    firsts = [base64.b64decode(d["media"]["payload"])[0] for _, d in fake.events("media")]
    switch = firsts.index(2)
    # Chunk n is sent at n * 20 ms: the first barge-in chunk is the one due at 0.3 s.
    assert switch == 15
    assert 0.28 <= fake.events("media")[switch][0] - t_start < 0.4
    assert 1 not in firsts[switch:]  # what was left of the first audio is gone
    assert firsts[switch : switch + 10] == [2] * 10 and firsts[-1] == 0xFF


async def test_fast_mode_sends_the_audio_at_once_then_real_time_silence() -> None:
    fake = FakeBotServer()
    async with serve(fake.handler, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        caller = TwilioCaller(
            f"ws://127.0.0.1:{port}/stream", audio=b"\x03" * 16000, realtime=False, tail_silence_s=5
        )
        await caller.run(hangup_after=0.4)
    medias = fake.events("media")
    speech = [t for t, d in medias if base64.b64decode(d["media"]["payload"])[0] == 3]
    silence = [t for t, d in medias if base64.b64decode(d["media"]["payload"])[0] == 0xFF]
    assert len(speech) == 100
    assert speech[-1] - speech[0] < 0.3  # 2 s of speech well under real time
    assert 10 <= len(silence) <= 25  # then about 20 ms of silence per 20 ms


def test_chunk_lateness() -> None:
    # Three on-time chunks, one 30 ms late, then a new utterance after a long pause.
    times = [0.0, 0.02, 0.04, 0.09, 2.0, 2.02]
    sizes = [160] * 6
    late = chunk_lateness(times, sizes)
    assert late == pytest.approx([0.0, 0.0, 0.0, 0.03, 0.0, 0.0])
