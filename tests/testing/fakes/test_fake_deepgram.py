"""FakeDeepgram against the official deepgram-sdk client and a plain websockets client."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import numpy as np
import pytest
import websockets
from deepgram import AsyncDeepgramClient
from deepgram.core.api_error import ApiError
from deepgram.environment import DeepgramClientEnvironment
from websockets.exceptions import ConnectionClosed, ConnectionClosedError, InvalidStatus

from voxpipe.testing.fakes import DeepgramFault, DeepgramUtterance, FakeDeepgram

RATE = 8000  # mu-law 8 kHz: 8000 bytes per second
FRAME = 160  # 20 ms
QUERY = "model=nova-2&encoding=mulaw&sample_rate=8000&channels=1"


def audio(seconds: float, seed: int = 0) -> bytes:
    """Varied mu-law bytes (not constant, so a resend can be located in what was sent)."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, int(seconds * RATE), dtype=np.uint8).tobytes()


def sdk_client(dg: FakeDeepgram, key: str = "test-key") -> AsyncDeepgramClient:
    env = DeepgramClientEnvironment(
        base=dg.http_url, production=dg.url, agent=dg.url, agent_rest=dg.http_url
    )
    return AsyncDeepgramClient(api_key=key, environment=env)


def frames(data: bytes) -> list[bytes]:
    return [data[i : i + FRAME] for i in range(0, len(data), FRAME)]


async def plain_connect(dg: FakeDeepgram, query: str = QUERY) -> Any:
    return await websockets.connect(
        f"{dg.listen_url}?{query}", additional_headers={"Authorization": "Token test-key"}
    )


async def send_all(ws: Any, data: bytes) -> None:
    for frame in frames(data):
        try:
            await ws.send(frame)
        except ConnectionClosed:
            return


async def messages_until_close(ws: Any) -> list[dict[str, Any]]:
    out = []
    try:
        async for raw in ws:
            out.append(json.loads(raw))
    except ConnectionClosed:
        pass
    return out


HELLO = DeepgramUtterance("Hello there, friend.", start=0.2, end=0.8)


async def test_sdk_happy_path_interims_final_utterance_end_metadata() -> None:
    async with FakeDeepgram(utterances=[HELLO], latency=0.02) as dg:
        client = sdk_client(dg)
        received = []
        async with client.listen.v1.connect(
            model="nova-2",
            encoding="mulaw",
            sample_rate=8000,
            channels=1,
            interim_results="true",
            endpointing=300,
            utterance_end_ms=1000,
            vad_events="true",
            smart_format="true",
            punctuate="true",
        ) as sock:
            for frame in frames(audio(2.0)):
                await sock.send_media(frame)
            await sock.send_close_stream()
            async for message in sock:
                received.append(message)

    kinds = [m.type for m in received]
    assert kinds[0] == "SpeechStarted"
    assert received[0].timestamp == pytest.approx(0.2)
    results = [m for m in received if m.type == "Results"]
    interims = [r for r in results if not r.is_final]
    finals = [r for r in results if r.is_final]
    assert interims and all(r.channel.alternatives[0].transcript for r in interims)
    assert "Hello there, friend.".startswith(interims[0].channel.alternatives[0].transcript)
    assert len(finals) == 1
    final = finals[0]
    alt = final.channel.alternatives[0]
    assert alt.transcript == "Hello there, friend."
    assert final.speech_final is True and final.from_finalize is False
    assert alt.confidence == pytest.approx(0.98)
    assert [w.word for w in alt.words] == ["hello", "there", "friend"]
    assert [w.punctuated_word for w in alt.words] == ["Hello", "there,", "friend."]
    assert alt.words[0].start == pytest.approx(0.2) and alt.words[-1].end == pytest.approx(0.8)
    # The final span runs from the stream start to the endpoint (0.8 s + 300 ms endpointing).
    assert final.start == pytest.approx(0.0)
    assert final.start + final.duration >= 1.1
    assert kinds.index("UtteranceEnd") > kinds.index("Results")
    utterance_end = next(m for m in received if m.type == "UtteranceEnd")
    assert utterance_end.last_word_end == pytest.approx(0.8)
    assert kinds[-1] == "Metadata"
    assert received[-1].duration == pytest.approx(2.0)
    assert received[-1].request_id == final.metadata.request_id

    conn = dg.connections[0]
    assert conn.params["model"] == "nova-2"
    assert conn.params["encoding"] == "mulaw" and conn.params["sample_rate"] == "8000"
    assert conn.headers["authorization"] == "Token test-key"
    assert dg.total_audio_bytes == 2 * RATE
    assert dg.connection_count == 1 and dg.close_stream_count == 1
    assert conn.close_code == 1000 and not conn.closed_by_fake


async def test_sdk_wrong_key_is_refused_with_401() -> None:
    async with FakeDeepgram(api_key="right-key") as dg:
        client = sdk_client(dg, key="wrong-key")
        with pytest.raises(ApiError) as info:
            async with client.listen.v1.connect(model="nova-2", encoding="mulaw", sample_rate=8000):
                pass
        assert info.value.status_code == 401
        assert dg.rejected[0][0] == 401
        assert dg.connection_count == 0


async def test_sdk_keepalive_and_finalize_mid_utterance() -> None:
    words = DeepgramUtterance("one two three four", start=0.2, end=1.0)
    async with FakeDeepgram(utterances=[words], latency=0.01) as dg:
        client = sdk_client(dg)
        async with client.listen.v1.connect(
            model="nova-2", encoding="mulaw", sample_rate=8000, endpointing=300
        ) as sock:
            data = audio(2.0)
            for frame in frames(data[: int(0.6 * RATE)]):
                await sock.send_media(frame)
            await sock.send_keep_alive()
            await sock.send_finalize()
            first = await sock.recv()
            for frame in frames(data[int(0.6 * RATE) :]):
                await sock.send_media(frame)
            second = await sock.recv()
            await sock.send_finalize()
            third = await sock.recv()
            await sock.send_close_stream()
    # Words begun before 0.6 s (one 0.2, two 0.4) come with from_finalize.
    assert first.type == "Results" and first.is_final and first.from_finalize
    assert first.channel.alternatives[0].transcript == "one two"
    # The rest when the endpoint is reached, on the next span.
    assert second.is_final and second.speech_final and not second.from_finalize
    assert second.channel.alternatives[0].transcript == "three four"
    assert second.start == pytest.approx(first.start + first.duration)
    # Finalize with nothing pending still answers, empty.
    assert third.from_finalize and third.channel.alternatives[0].transcript == ""
    assert dg.keepalive_count == 1 and dg.finalize_count == 2


async def test_options_off_no_interims_no_vad_and_endpointing_false() -> None:
    async with FakeDeepgram(utterances=[HELLO], latency=0.0) as dg:
        ws = await plain_connect(dg, QUERY + "&endpointing=false")
        await send_all(ws, audio(1.0))
        await ws.send(json.dumps({"type": "CloseStream"}))
        got = await messages_until_close(ws)
    results = [m for m in got if m["type"] == "Results"]
    assert [m["type"] for m in got] == ["Results", "Metadata"]
    assert results[0]["is_final"] is True and results[0]["speech_final"] is False
    # Without punctuate/smart_format the transcript is plain words.
    assert results[0]["channel"]["alternatives"][0]["transcript"] == "hello there friend"
    assert "punctuated_word" not in results[0]["channel"]["alternatives"][0]["words"][0]


async def test_results_wait_for_the_configured_latency() -> None:
    async with FakeDeepgram(utterances=[HELLO], latency=0.15) as dg:
        ws = await plain_connect(dg, QUERY + "&endpointing=100")
        await send_all(ws, audio(1.0))
        sent_at = time.monotonic()
        first = json.loads(await ws.recv())
        elapsed = time.monotonic() - sent_at
        await ws.close()
    assert first["is_final"] and first["channel"]["alternatives"][0]["transcript"]
    assert elapsed >= 0.14


async def test_inactivity_closes_with_1011_and_keepalive_prevents_it() -> None:
    async with FakeDeepgram(inactivity_timeout=0.2) as dg:
        ws = await plain_connect(dg)
        # KeepAlive every 0.05 s for 0.3 s: longer than the timeout, yet the socket stays open.
        for _ in range(6):
            await ws.send(json.dumps({"type": "KeepAlive"}))
            await asyncio.sleep(0.05)
        assert not dg.connections[0].closed
        with pytest.raises(ConnectionClosedError) as info:
            await ws.recv()
    assert info.value.rcvd is not None and info.value.rcvd.code == 1011
    assert "net0001" in info.value.rcvd.reason
    assert dg.keepalive_count == 6
    assert dg.connections[0].closed_by_fake


async def test_sdk_error_fault_sends_error_then_closes() -> None:
    fault = DeepgramFault(kind="error", after_seconds=0.5, description="Something broke.")
    async with FakeDeepgram(utterances=[HELLO], faults=[fault]) as dg:
        client = sdk_client(dg)
        received = []
        with pytest.raises(ConnectionClosedError):
            async with client.listen.v1.connect(
                model="nova-2", encoding="mulaw", sample_rate=8000
            ) as sock:
                for frame in frames(audio(1.0)):
                    await sock.send_media(frame)
                async for message in sock:
                    received.append(message)
    assert [m.type for m in received] == ["Error"]
    assert received[0].description == "Something broke." and received[0].variant == "fake_fault"
    assert dg.connections[0].close_code == 1011
    # Audio past the fault point was never taken in.
    assert dg.total_audio_bytes == int(0.5 * RATE)


async def test_close_fault_with_1008() -> None:
    fault = DeepgramFault(kind="close", after_bytes=800, close_code=1008, reason="bad audio")
    async with FakeDeepgram(faults=[fault]) as dg:
        ws = await plain_connect(dg)
        await send_all(ws, audio(0.5))
        with pytest.raises(ConnectionClosedError) as info:
            await ws.recv()
    assert info.value.rcvd is not None
    assert (info.value.rcvd.code, info.value.rcvd.reason) == (1008, "bad audio")
    assert dg.total_audio_bytes == 800


FOUR = DeepgramUtterance("one two three four", start=1.0, end=2.0)


async def _dropped_then_reconnect(resend_from: float) -> FakeDeepgram:
    data = audio(3.0, seed=7)
    fault = DeepgramFault(kind="drop", after_seconds=1.5)
    async with FakeDeepgram(utterances=[FOUR], latency=0.0, faults=[fault]) as dg:
        ws = await plain_connect(dg)
        await send_all(ws, data)
        with pytest.raises(ConnectionClosedError):
            await ws.recv()
        assert dg.connections[0].close_code == 1006
        ws = await plain_connect(dg)
        await send_all(ws, data[int(resend_from * RATE) :])
        await ws.send(json.dumps({"type": "CloseStream"}))
        await messages_until_close(ws)
    return dg


async def test_drop_mid_utterance_and_reconnect_with_resend_loses_nothing() -> None:
    dg = await _dropped_then_reconnect(resend_from=0.8)
    first, second = dg.connections
    assert first.audio_bytes == int(1.5 * RATE) and first.closed_by_fake
    assert first.sent_of_type("Results") == []  # the endpoint was never reached there
    assert second.call == first.call  # the reconnect continues the same call
    assert second.start_offset == pytest.approx(0.8)
    assert dg.final_transcripts() == ["one two three four"]
    words = second.sent_of_type("Results")[0]["channel"]["alternatives"][0]["words"]
    assert words[0]["start"] == pytest.approx(0.2)  # times are relative to the new stream


async def test_reconnect_without_resend_loses_the_words_before_the_drop() -> None:
    dg = await _dropped_then_reconnect(resend_from=1.5)
    assert dg.connections[1].start_offset == pytest.approx(1.5)
    assert dg.final_transcripts() == ["three four"]


async def test_drop_now_and_send_error_now() -> None:
    async with FakeDeepgram() as dg:
        ws = await plain_connect(dg)
        await dg.wait_for(lambda: dg.connection_count == 1)
        await dg.send_error("Rate limited.", variant="rate_limit", close_code=None)
        error = json.loads(await ws.recv())
        assert error["type"] == "Error" and error["description"] == "Rate limited."
        await dg.drop()
        with pytest.raises(ConnectionClosedError):
            await ws.recv()
    assert dg.connections[0].close_code == 1006


async def test_concurrent_connections_are_separate_calls() -> None:
    async with FakeDeepgram(utterances=[HELLO], latency=0.0) as dg:
        a, b = await plain_connect(dg), await plain_connect(dg)
        await asyncio.gather(send_all(a, audio(1.5, 1)), send_all(b, audio(1.5, 2)))
        for ws in (a, b):
            await ws.send(json.dumps({"type": "CloseStream"}))
        await asyncio.gather(messages_until_close(a), messages_until_close(b))
    assert [c.call for c in dg.connections] == [0, 1]
    assert dg.final_transcripts() == ["hello there friend", "hello there friend"]


@pytest.mark.parametrize(
    ("path", "query", "status"),
    [
        ("/v1/listen", "model=nova-2", 400),  # raw audio needs encoding and sample_rate
        ("/v1/listen", QUERY + "&utterance_end_ms=1000", 400),  # needs interim_results=true
        ("/v1/speak", QUERY, 404),
    ],
)
async def test_bad_requests_are_refused(path: str, query: str, status: int) -> None:
    async with FakeDeepgram() as dg:
        with pytest.raises(InvalidStatus) as info:
            await websockets.connect(
                f"{dg.url}{path}?{query}", additional_headers={"Authorization": "Token test-key"}
            )
    assert info.value.response.status_code == status
    assert dg.rejected[0][0] == status
