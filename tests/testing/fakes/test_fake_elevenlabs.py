"""FakeElevenLabs: stream-input over a plain websockets client, HTTP streaming via the SDK."""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import numpy as np
import pytest
import websockets
from elevenlabs.client import AsyncElevenLabs
from elevenlabs.core.api_error import ApiError
from websockets.exceptions import ConnectionClosed, ConnectionClosedError

from voxpipe.audio import mulaw_to_pcm16
from voxpipe.testing.fakes import ElevenLabsFault, ElevenLabsHttpFault, FakeElevenLabs

KEY = {"xi-api-key": "test-key"}
INIT = {"text": " ", "generation_config": {"chunk_length_schedule": [50]}}


async def connect(
    el: FakeElevenLabs, fmt: str = "ulaw_8000", headers: Any = KEY, **params: str
) -> Any:
    url = el.stream_input_url("voice1", model_id="eleven_flash_v2_5", output_format=fmt, **params)
    return await websockets.connect(url, additional_headers=headers)


async def send(ws: Any, *messages: dict[str, Any]) -> None:
    for message in messages:
        await ws.send(json.dumps(message))


async def until_close(ws: Any) -> list[dict[str, Any]]:
    out = []
    try:
        async for raw in ws:
            out.append(json.loads(raw))
    except ConnectionClosed:
        pass
    return out


def chars_of(messages: list[dict[str, Any]]) -> str:
    return "".join("".join(m["normalizedAlignment"]["chars"]) for m in messages if m.get("audio"))


async def test_stream_input_happy_path_ulaw() -> None:
    async with FakeElevenLabs(ms_per_char=60, first_audio_latency=0.01) as el:
        ws = await connect(el)
        await send(
            ws,
            INIT,
            {"text": "Hello there. ", "try_trigger_generation": True},
            {"text": "How are you today? "},
            {"text": ""},
        )
        got = await until_close(ws)
    assert ws.close_code == 1000
    audio_msgs = [m for m in got if m.get("audio")]
    assert got[-1] == {"isFinal": True}
    assert all(m["isFinal"] is None for m in audio_msgs)
    assert chars_of(got) == "Hello there. How are you today? "
    conn = el.connections[0]
    assert conn.generations == ["Hello there. ", "How are you today? "]
    assert conn.params["output_format"] == "ulaw_8000" and conn.voice_id == "voice1"
    assert conn.text == "Hello there. How are you today? "
    total = b""
    for m in audio_msgs:
        audio = base64.b64decode(m["audio"])
        align = m["alignment"]
        assert align == m["normalizedAlignment"]
        n = len(align["chars"])
        assert align["charStartTimesMs"] == [60 * i for i in range(n)]
        assert align["charDurationsMs"] == [60] * n
        assert len(audio) == 60 * n * 8  # 8 bytes of mu-law per ms at 8 kHz
        total += audio
    assert bytes(conn.audio) == total
    # Letters sound, spaces are silent: the audio is a real signal, not filler.
    pcm = np.frombuffer(mulaw_to_pcm16(total), dtype="<i2").astype(np.float64)
    per_char = pcm.reshape(-1, 480)
    loud = np.sqrt((per_char**2).mean(axis=1)) > 1000
    assert list(loud) == [c.isalnum() for c in "Hello there. How are you today? "]


@pytest.mark.parametrize(
    ("fmt", "rate"), [("pcm_16000", 16000), ("pcm_22050", 22050), ("pcm_24000", 24000)]
)
async def test_pcm_formats_have_audio_matching_alignment(fmt: str, rate: int) -> None:
    async with FakeElevenLabs(ms_per_char=50, first_audio_latency=0.0) as el:
        ws = await connect(el, fmt=fmt)
        await send(ws, INIT, {"text": "Testing one two three. "}, {"text": ""})
        got = await until_close(ws)
    audio_msgs = [m for m in got if m.get("audio")]
    samples = sum(len(base64.b64decode(m["audio"])) for m in audio_msgs) // 2
    assert samples == round(len("Testing one two three. ") * 0.05 * rate)
    for m in audio_msgs:
        align = m["alignment"]
        n_samples = len(base64.b64decode(m["audio"])) // 2
        duration_ms = align["charStartTimesMs"][-1] + align["charDurationsMs"][-1]
        assert abs(n_samples / rate * 1000 - duration_ms) <= 1


async def test_buffering_flush_and_final_only_after_empty_text() -> None:
    async with FakeElevenLabs(first_audio_latency=0.0) as el:
        ws = await connect(el)
        await send(ws, {"text": " "}, {"text": "No sentence end yet "})
        conn = el.connections[0]
        await el.wait_for(lambda: len(conn.messages) == 2)
        assert conn.generations == []  # below the 120-char schedule, no sentence end
        await send(ws, {"text": "and now ", "flush": True})
        flushed = []
        while chars_of(flushed) != "No sentence end yet and now ":
            flushed.append(json.loads(await ws.recv()))
        assert not any(m.get("isFinal") for m in flushed)  # flush does not end the stream
        await send(ws, {"text": "bye", "try_trigger_generation": True})
        await el.wait_for(lambda: len(conn.messages) == 4)
        assert len(conn.generations) == 1  # 3 chars: too few for try_trigger_generation
        await send(ws, {"text": ""})
        rest = await until_close(ws)
    assert chars_of(rest) == "bye" and rest[-1] == {"isFinal": True}


async def test_schedule_and_try_trigger_start_generation() -> None:
    async with FakeElevenLabs(first_audio_latency=0.0, try_trigger_min_chars=20) as el:
        ws = await connect(el)
        await send(ws, INIT, {"text": "a" * 30 + " ", "try_trigger_generation": True})
        await send(ws, {"text": "b" * 52 + " "})  # reaches the 50-char schedule
        conn = el.connections[0]
        await el.wait_for(lambda: len(conn.messages) == 3)
        assert conn.generations == ["a" * 30 + " ", "b" * 52 + " "]
        await send(ws, {"text": ""})
        got = await until_close(ws)
    assert chars_of(got) == "a" * 30 + " " + "b" * 52 + " "


async def test_first_audio_latency_is_respected() -> None:
    async with FakeElevenLabs(first_audio_latency=0.12) as el:
        ws = await connect(el)
        await send(ws, INIT)
        started = time.monotonic()
        await send(ws, {"text": "Hi there. "})
        first = json.loads(await ws.recv())
        elapsed = time.monotonic() - started
        await ws.close()
    assert first["audio"] and elapsed >= 0.11


async def test_api_key_in_first_message() -> None:
    async with FakeElevenLabs(first_audio_latency=0.0) as el:
        ws = await connect(el, headers=None)
        await send(ws, {**INIT, "xi_api_key": "test-key"}, {"text": "Fine. "}, {"text": ""})
        got = await until_close(ws)
    assert chars_of(got) == "Fine. " and ws.close_code == 1000


@pytest.mark.parametrize("in_header", [True, False])
async def test_wrong_key_gets_error_and_1008(in_header: bool) -> None:
    async with FakeElevenLabs() as el:
        if in_header:
            ws = await connect(el, headers={"xi-api-key": "nope"})
        else:
            ws = await connect(el, headers=None)
            await send(ws, {**INIT, "xi_api_key": "nope"})
        got = await until_close(ws)
    assert got == [{"message": "Invalid API key", "error": "invalid_api_key", "code": 1008}]
    assert ws.close_code == 1008


@pytest.mark.parametrize("via_query", [True, False])
async def test_inactivity_closes_with_1008(via_query: bool) -> None:
    fake_timeout = None if via_query else 0.15
    async with FakeElevenLabs(inactivity_timeout=fake_timeout) as el:
        params = {"inactivity_timeout": "0.15"} if via_query else {}
        ws = await connect(el, **params)
        await send(ws, INIT)
        with pytest.raises(ConnectionClosedError) as info:
            await ws.recv()
    assert info.value.rcvd is not None and info.value.rcvd.code == 1008
    assert info.value.rcvd.reason.startswith(
        "Have not received a new text input within the timeout"
    )
    assert len(info.value.rcvd.reason.encode()) <= 123


async def test_no_inactivity_timeout_while_still_speaking() -> None:
    slow = FakeElevenLabs(
        inactivity_timeout=0.15, first_audio_latency=0.0, chunk_ms=60, chunk_interval=0.04
    )
    async with slow as el:
        ws = await connect(el)
        await send(ws, INIT, {"text": "abcdefghi ", "flush": True})
        got = []
        with pytest.raises(ConnectionClosedError) as info:
            async for raw in ws:
                got.append(json.loads(raw))
    # Ten chunks 40 ms apart outlast the 150 ms timeout; it only runs once speaking is done.
    assert chars_of(got) == "abcdefghi "
    assert info.value.rcvd is not None and info.value.rcvd.code == 1008


async def test_error_fault_after_messages() -> None:
    fault = ElevenLabsFault(
        kind="error", after_messages=2, message="Quota exceeded", error="quota_exceeded"
    )
    async with FakeElevenLabs(faults=[fault]) as el:
        ws = await connect(el)
        await send(ws, INIT, {"text": "Hello. "})
        got = await until_close(ws)
    assert got == [{"message": "Quota exceeded", "error": "quota_exceeded", "code": 1011}]
    assert ws.close_code == 1011
    assert el.connections[0].generations == []


async def test_drop_fault_after_audio_chunks() -> None:
    fault = ElevenLabsFault(kind="drop", after_audio_chunks=2)
    async with FakeElevenLabs(first_audio_latency=0.0, faults=[fault]) as el:
        ws = await connect(el)
        await send(ws, INIT, {"text": "A rather long sentence to speak here. "})
        got = []
        with pytest.raises(ConnectionClosedError):
            async for raw in ws:
                got.append(json.loads(raw))
    assert len(got) == 2 and all(m.get("audio") for m in got)
    assert el.connections[0].close_code == 1006


async def test_close_connections_now() -> None:
    async with FakeElevenLabs() as el:
        ws = await connect(el)
        await send(ws, INIT)
        await el.wait_for(lambda: len(el.connections[0].messages) == 1)
        await el.close_connections(1011, "internal error")
        with pytest.raises(ConnectionClosedError) as info:
            await ws.recv()
    assert info.value.rcvd is not None and info.value.rcvd.code == 1011


async def test_other_durations_spelling() -> None:
    async with FakeElevenLabs(first_audio_latency=0.0, durations_key="charsDurationsMs") as el:
        ws = await connect(el)
        await send(ws, INIT, {"text": "Ok. "}, {"text": ""})
        got = await until_close(ws)
    assert (
        "charsDurationsMs" in got[0]["alignment"] and "charDurationsMs" not in got[0]["alignment"]
    )


async def test_unsupported_format_is_refused() -> None:
    async with FakeElevenLabs() as el:
        with pytest.raises(websockets.exceptions.InvalidStatus) as info:
            await connect(el, fmt="mp3_44100_128")
    assert info.value.response.status_code == 400


async def test_multi_context_close_context_finishes_generation_and_keeps_socket() -> None:
    async with FakeElevenLabs(first_audio_latency=0.0, chunk_interval=0.02, chunk_ms=60) as el:
        url = el.multi_stream_input_url("voice1", output_format="ulaw_8000")
        ws = await websockets.connect(url, additional_headers=KEY)
        spoken = "A long reply that goes on. "
        await send(
            ws,
            {"text": " ", "context_id": "a"},
            {"text": spoken, "context_id": "a", "flush": True},
            {"text": "Never flushed", "context_id": "a"},
        )
        first = json.loads(await ws.recv())
        assert first["contextId"] == "a" and first["audio"]
        # Closed while its flushed text is still being generated (Pipecat closes each turn's
        # context right after its flush): that audio still comes, then isFinal; the text
        # never flushed is dropped.
        await send(ws, {"context_id": "a", "close_context": True})
        after = []
        while not after or after[-1].get("isFinal") is not True:
            after.append(json.loads(await ws.recv()))
        assert after[-1] == {"isFinal": True, "contextId": "a"}
        chars = "".join("".join(m["alignment"]["chars"]) for m in [first, *after] if m.get("audio"))
        assert chars == spoken
        await send(ws, {"text": "Next. ", "context_id": "b", "flush": True})
        nxt = json.loads(await ws.recv())
        assert nxt["contextId"] == "b" and nxt["audio"]
        await send(ws, {"close_socket": True})
        await until_close(ws)
    assert ws.close_code == 1000
    assert el.connections[0].generations == [spoken, "Next. "]


async def test_multi_context_limit() -> None:
    async with FakeElevenLabs() as el:
        ws = await websockets.connect(
            el.multi_stream_input_url(output_format="pcm_16000"), additional_headers=KEY
        )
        await send(ws, *({"text": " ", "context_id": f"c{i}"} for i in range(6)))
        error = json.loads(await ws.recv())
        await ws.close()
    assert error["error"] == "max_active_conversations"


async def test_http_stream_with_sdk() -> None:
    async with FakeElevenLabs(first_audio_latency=0.0, ms_per_char=60) as el:
        client = AsyncElevenLabs(api_key="test-key", base_url=el.url)
        audio = b"".join(
            [
                chunk
                async for chunk in client.text_to_speech.stream(
                    voice_id="voice1",
                    text="Hi there.",
                    model_id="eleven_flash_v2_5",
                    output_format="ulaw_8000",
                )
            ]
        )
    assert len(audio) == len("Hi there.") * 480
    request = el.http_requests[0]
    assert request.voice_id == "voice1" and request.params["output_format"] == "ulaw_8000"
    assert request.json["model_id"] == "eleven_flash_v2_5" and request.audio_bytes == len(audio)


async def test_http_wrong_key_and_error_fault_and_cut_stream() -> None:
    async with FakeElevenLabs(first_audio_latency=0.0) as el:
        bad = AsyncElevenLabs(api_key="nope", base_url=el.url)
        with pytest.raises(ApiError) as info:
            async for _ in bad.text_to_speech.stream(
                voice_id="v", text="Hi.", output_format="pcm_16000"
            ):
                pass
        assert info.value.status_code == 401
        assert info.value.body == {
            "detail": {"status": "invalid_api_key", "message": "Invalid API key"}
        }

        client = AsyncElevenLabs(api_key="test-key", base_url=el.url)
        el.fail_next_http(ElevenLabsHttpFault(status=503))
        with pytest.raises(ApiError) as info:
            async for _ in client.text_to_speech.stream(
                voice_id="v", text="Hi.", output_format="pcm_16000"
            ):
                pass
        assert info.value.status_code == 503

        el.fail_next_http(ElevenLabsHttpFault(status=None, drop_after_chunks=1))
        received = b""
        with pytest.raises(Exception) as cut:  # the HTTP client's "incomplete body" error
            async for chunk in client.text_to_speech.stream(
                voice_id="v", text="A longer text to cut.", output_format="pcm_16000"
            ):
                received += chunk
        assert "ApiError" not in type(cut.value).__name__
        assert 0 < len(received) < len("A longer text to cut.") * 0.06 * 16000 * 2
    assert [r.status for r in el.http_requests] == [401, 503, 200]


async def test_a_generation_queued_behind_another_waits_its_own_latency() -> None:
    # 2 characters per audio message, one message every 20 ms after the first audio.
    fake = FakeElevenLabs(
        first_audio_latency=0.05, ms_per_char=50, chunk_ms=100, chunk_interval=0.02
    )
    async with fake as el:
        ws = await connect(el)
        await send(ws, INIT)
        sent_at = time.perf_counter()
        await send(ws, {"text": "Hi there. "}, {"text": "Bye. "}, {"text": ""})
        arrivals: list[tuple[float, dict[str, Any]]] = []
        try:
            async for raw in ws:
                arrivals.append((time.perf_counter(), json.loads(raw)))
        except ConnectionClosed:
            pass
    audio = [(t, m) for t, m in arrivals if m.get("audio")]
    assert chars_of([m for _, m in audio]) == "Hi there. Bye. "
    first, second = audio[:5], audio[5:]  # "Hi there. " is 5 messages
    for k, (t, _) in enumerate(first):
        assert t >= sent_at + 0.05 + k * 0.02
    # The second sentence came in while the first was spoken: its latency runs from the end
    # of the first generation, as before.
    assert second[0][0] >= sent_at + 0.05 + 4 * 0.02 + 0.05
