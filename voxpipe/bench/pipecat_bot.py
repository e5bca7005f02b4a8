"""Pipecat's own Twilio bot, for `voxpipe bench calls --bot` side by side (the `bench` extra).

Built the way Pipecat's Twilio examples build one, at Pipecat's defaults: a FastAPI app whose
voice webhook answers ``<Connect><Stream>``, a websocket endpoint that reads Twilio's
``connected`` / ``start`` messages (``parse_telephony_websocket``) and runs

    FastAPIWebsocketTransport (TwilioFrameSerializer) in -> DeepgramSTTService
    -> user aggregator (Silero VAD, default turn strategies) -> OpenAILLMService
    -> ElevenLabsTTSService -> transport out -> assistant aggregator

with the pipeline at 8 kHz in and out (Twilio's rate, as the examples set it). Everything else
is left at Pipecat 1.14's defaults: Silero ``VADParams()`` (stop 0.2 s), the default user turn
strategies (start: VAD or transcription; stop: Smart Turn v3.2 on the CPU), Deepgram's default
live options (nova-3, interim results, no endpointing set), ElevenLabs' multi-context
websocket, RTVI on, metrics off. Two departures, neither on the voice path: the serializer's
``auto_hang_up`` is off (the simulated caller hangs up itself; there is no Twilio REST API to
call), and the greeting is a ``TTSSpeakFrame`` of the same sentence voxpipe's support agent
says (no LLM request for it, as on voxpipe's side). The provider clients point at the same
stand-ins as voxpipe's (their ``base_url`` / ``url`` options).

Run as a process: ``python -m voxpipe.bench.pipecat_bot --deepgram URL --openai URL
--elevenlabs URL`` prints ``{"port": N}`` once it listens on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import threading
import time
from typing import Any

from fastapi import FastAPI, Request, WebSocket
from fastapi.responses import Response

__all__ = ["GREETING", "SYSTEM_PROMPT", "create_app"]

GREETING = "Hello, thanks for calling. How can I help you today?"
SYSTEM_PROMPT = (
    "You are the phone support agent of Acme Home Internet. You are speaking on a phone line: "
    "answer in one or two short sentences, no lists, no markdown."
)
API_KEY = "bench-key"
VOICE = "21m00Tcm4TlvDq8ikWAM"


async def _run_call(websocket: Any, urls: dict[str, str]) -> None:
    from pipecat.audio.vad.silero import SileroVADAnalyzer
    from pipecat.frames.frames import TTSSpeakFrame
    from pipecat.pipeline.pipeline import Pipeline
    from pipecat.pipeline.runner import PipelineRunner
    from pipecat.pipeline.task import PipelineParams, PipelineTask
    from pipecat.processors.aggregators.llm_context import LLMContext
    from pipecat.processors.aggregators.llm_response_universal import (
        LLMContextAggregatorPair,
        LLMUserAggregatorParams,
    )
    from pipecat.runner.utils import parse_telephony_websocket
    from pipecat.serializers.twilio import TwilioFrameSerializer
    from pipecat.services.deepgram.stt import DeepgramSTTService
    from pipecat.services.elevenlabs.tts import ElevenLabsTTSService
    from pipecat.services.openai.llm import OpenAILLMService
    from pipecat.transports.websocket.fastapi import (
        FastAPIWebsocketParams,
        FastAPIWebsocketTransport,
    )

    _, call_data = await parse_telephony_websocket(websocket)
    serializer = TwilioFrameSerializer(
        stream_sid=call_data["stream_id"],
        call_sid=call_data["call_id"],
        params=TwilioFrameSerializer.InputParams(auto_hang_up=False),
    )
    transport = FastAPIWebsocketTransport(
        websocket=websocket,
        params=FastAPIWebsocketParams(
            audio_in_enabled=True,
            audio_out_enabled=True,
            add_wav_header=False,
            serializer=serializer,
        ),
    )
    stt = DeepgramSTTService(api_key=API_KEY, base_url=urls["deepgram"])
    llm = OpenAILLMService(
        api_key=API_KEY,
        base_url=urls["openai"],
        settings=OpenAILLMService.Settings(model="gpt-4o"),
    )
    tts = ElevenLabsTTSService(
        api_key=API_KEY,
        url=urls["elevenlabs"].replace("http://", "ws://", 1),
        settings=ElevenLabsTTSService.Settings(voice=VOICE),
    )
    context = LLMContext([{"role": "system", "content": SYSTEM_PROMPT}])
    aggregators = LLMContextAggregatorPair(
        context, user_params=LLMUserAggregatorParams(vad_analyzer=SileroVADAnalyzer())
    )
    pipeline = Pipeline(
        [
            transport.input(),
            stt,
            aggregators.user(),
            llm,
            tts,
            transport.output(),
            aggregators.assistant(),
        ]
    )
    task = PipelineTask(
        pipeline, params=PipelineParams(audio_in_sample_rate=8000, audio_out_sample_rate=8000)
    )

    @transport.event_handler("on_client_connected")  # type: ignore[untyped-decorator]
    async def _greet(_transport: Any, _client: Any) -> None:
        await task.queue_frames([TTSSpeakFrame(GREETING)])

    @transport.event_handler("on_client_disconnected")  # type: ignore[untyped-decorator]
    async def _gone(_transport: Any, _client: Any) -> None:
        await task.cancel()

    await PipelineRunner(handle_sigint=False).run(task)


def create_app(urls: dict[str, str]) -> FastAPI:
    """The FastAPI app: ``POST /twilio/voice`` (TwiML) and the ``/ws`` media stream."""
    app = FastAPI()

    @app.post("/twilio/voice")
    async def voice(request: Request) -> Response:
        host = request.headers.get("host", "127.0.0.1")
        twiml = (
            '<?xml version="1.0" encoding="UTF-8"?><Response><Connect>'
            f'<Stream url="ws://{host}/ws"></Stream></Connect><Pause length="40"/></Response>'
        )
        return Response(content=twiml, media_type="application/xml")

    @app.websocket("/ws")
    async def stream(websocket: WebSocket) -> None:
        await websocket.accept()
        await _run_call(websocket, urls)

    return app


def _exit_with_parent() -> None:
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(0)

    threading.Thread(target=watch, daemon=True, name="parent-watch").start()


def main() -> None:
    """Serve Pipecat's Twilio bot on 127.0.0.1 (an ephemeral port, printed as JSON)."""
    parser = argparse.ArgumentParser(description="Pipecat's Twilio bot for bench calls")
    parser.add_argument("--deepgram", required=True)
    parser.add_argument("--openai", required=True)
    parser.add_argument("--elevenlabs", required=True)
    args = parser.parse_args()
    import uvicorn
    from loguru import logger

    logger.remove()  # Pipecat logs every step at DEBUG: errors only, as voxpipe's server
    logger.add(lambda m: print(m, end="", flush=True, file=__import__("sys").stderr), level="ERROR")
    _exit_with_parent()
    app = create_app(
        {"deepgram": args.deepgram, "openai": args.openai, "elevenlabs": args.elevenlabs}
    )
    # Import the models before the first call (as a served bot would have them warm).
    from pipecat.audio.turn.smart_turn.local_smart_turn_v3 import LocalSmartTurnAnalyzerV3
    from pipecat.audio.vad.silero import SileroVADAnalyzer

    SileroVADAnalyzer()
    LocalSmartTurnAnalyzerV3()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(1024)
    config = uvicorn.Config(app, log_level="error", access_log=False, backlog=1024)
    print(json.dumps({"port": sock.getsockname()[1]}), flush=True)
    uvicorn.Server(config).run(sockets=[sock])


if __name__ == "__main__":
    main()
