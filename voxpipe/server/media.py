"""The media websockets: one handler per carrier stream, running one bot call per connection.

A stream is accepted, its start message read, its stream token redeemed and its call id
checked against the token (``voxpipe.server.call_start``: a websocket nobody was told about, or
one claiming another call's id, is closed with 1008 and the reason); then the bot builds the pipeline
for the call and the receive loop feeds the transport until the caller hangs up, the bot ends
the call, the socket goes silent, or the stream is refused for bad input.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import secrets
from pathlib import Path
from typing import TYPE_CHECKING, Any

from starlette.websockets import WebSocket

from voxpipe.call import Call, build_task, call_locale
from voxpipe.logs import call_ended, call_started
from voxpipe.pipelines.task import PipelineTask
from voxpipe.processors.turn.params import transport_turn_kwargs
from voxpipe.server.call_start import StreamRefused, authenticate_start
from voxpipe.server.capacity import DRAIN_REASON
from voxpipe.server.metrics import FrameCounter
from voxpipe.server.security_events import client_address
from voxpipe.server.sessions import CallSession
from voxpipe.server.webhooks import TOKEN_PARAM
from voxpipe.transports.base import Transport
from voxpipe.transports.params import MEDIA_STREAM_CHUNK_MS, TransportParams
from voxpipe.transports.telnyx import TelnyxSerializer
from voxpipe.transports.twilio import TwilioSerializer
from voxpipe.transports.vonage import VonageSerializer
from voxpipe.transports.websocket import (
    CLOSE_GOING_AWAY,
    CLOSE_INTERNAL_ERROR,
    CLOSE_NORMAL,
    WebSocketWireSink,
    WireClosed,
    WireReceiver,
    WireRefused,
)
from voxpipe.transports.wire import Serializer, WireStart

if TYPE_CHECKING:
    from voxpipe.server.state import ServerState

__all__ = ["SERIALIZERS", "media_stream", "preload_providers"]

logger = logging.getLogger(__name__)

SERIALIZERS: dict[str, type[Any]] = {
    "twilio": TwilioSerializer,
    "telnyx": TelnyxSerializer,
    "vonage": VonageSerializer,
}
_SAFE = re.compile(r"[^A-Za-z0-9_.-]+")
WORKER_HEADER = b"x-voxpipe-worker"


def preload_providers(settings: Any) -> list[str]:
    """Import the provider clients the settings select, before the first call.

    Imported on a first call instead (the OpenAI SDK alone: ~0.5 s of CPU, seconds on a
    busy machine), the import stalls the event loop under every call already up. Returns the
    modules imported; one that cannot be imported is left to fail with its own message in
    the call that needs it.
    """
    from importlib import import_module

    from voxpipe.processors.llm.factory import uses_cloud_llm

    wanted = []
    if settings.deepgram_api_key is not None:
        wanted.append("voxpipe.processors.stt.deepgram")
    if uses_cloud_llm(settings):
        wanted.append("voxpipe.processors.llm.openai")
    if settings.elevenlabs_api_key is not None:
        wanted.append("voxpipe.processors.tts.elevenlabs")
    done = []
    for name in wanted:
        try:
            import_module(name)
        except ImportError as exc:
            logger.debug("not preloaded: %s (%s)", name, exc)
            continue
        done.append(name)
    return done


async def media_stream(websocket: WebSocket, carrier: str, path_token: str | None = None) -> None:
    """Serve one carrier media stream from accept to close."""
    st: ServerState = websocket.app.state.voxpipe
    serializer: Serializer = SERIALIZERS[carrier]()
    # Which worker process took the stream (issue 15): callers and load tests see the spread.
    await websocket.accept(headers=[(WORKER_HEADER, str(os.getpid()).encode())])
    receiver = WireReceiver(
        websocket, serializer, carrier=carrier, limits=st.limits, stats=st.metrics_sink
    )
    sink = WebSocketWireSink(websocket, serializer, on_send=st.metrics_sink.sent(carrier))
    try:
        start = await receiver.wait_for_start()
    except WireClosed as exc:
        logger.info("%s stream closed before it started: %s", carrier, exc)
        st.metrics.calls_refused[carrier, "closed-before-start"] += 1
        await sink.close(CLOSE_NORMAL, "stream ended before it started")
        return
    except WireRefused as exc:
        st.metrics.calls_refused[carrier, "bad-start"] += 1
        logger.warning("%s stream refused before start: %s", carrier, exc.reason)
        await sink.close(exc.code, exc.reason)
        return
    params = dict(start.custom_parameters)
    token = path_token or params.get(TOKEN_PARAM)
    params.pop(TOKEN_PARAM, None)
    start.custom_parameters = params
    try:
        # The call id and caller come from the token the signed webhook issued (issue 18).
        identity = await authenticate_start(st, carrier, start, token, client_address(websocket))
    except StreamRefused as exc:
        st.metrics.calls_refused[carrier, exc.metric] += 1
        await sink.close(exc.code, exc.reason)
        return
    await _run_call(st, carrier, start, receiver, sink, owner=identity.owner)


async def _run_call(
    st: ServerState,
    carrier: str,
    start: WireStart,
    receiver: WireReceiver,
    sink: WebSocketWireSink,
    *,
    owner: str = "",
) -> None:
    call_id = start.call_id or start.stream_id or f"{carrier}-{secrets.token_hex(6)}"
    log = logging.LoggerAdapter(logger, {"call_id": call_id})
    receiver.label = call_id
    sink.label = call_id
    fmt = start.audio_format
    params = start.custom_parameters
    country = params.get("FromCountry") or None
    # From the worker's locale table (in memory, refreshed in the background; never raises).
    chosen = await call_locale(
        st.settings, carrier=carrier, caller=start.caller, country=country, custom_parameters=params
    )
    tparams = TransportParams(
        audio_in=fmt,
        audio_out=fmt,
        allow_interruptions=st.settings.allow_interruptions,
        chunk_ms=MEDIA_STREAM_CHUNK_MS,
        # The locale row's turn-taking where it sets one (a language that pauses longer).
        **transport_turn_kwargs(st.settings, chosen.row),
    )
    try:
        transport = Transport(sink, tparams, batched_vad=st.batched_vad, name=carrier)
        call = Call(
            transport=transport,
            call_id=call_id,
            settings=st.settings,
            carrier=carrier,
            caller=start.caller,
            called=start.called,
            country=country,
            custom_parameters=params,
            locale=chosen.locale,
            locale_row=chosen.row,
            consent_policy=chosen.consent_policy,
            audio_in=fmt,
            audio_out=fmt,
            allow_interruptions=st.settings.allow_interruptions,
            owner=owner,
            stream_url=_stream_url(st, carrier, call_id, start),
        )
        task = build_task(call, await st.bot(call))
    except Exception as exc:
        st.metrics.calls_refused[carrier, "bot-error"] += 1
        log.exception("the bot failed to build its pipeline")
        await sink.close(CLOSE_INTERNAL_ERROR, f"bot failed to start: {type(exc).__name__}")
        return
    counter = FrameCounter(st.metrics)
    task.add_observer(counter)
    task.on_downstream(counter.on_output)
    task.on_upstream(counter.on_output)
    if st.record_dir is not None:
        task.add_observer(call_recorder(st, call, task))

    loop = asyncio.get_running_loop()
    runner = loop.create_task(task.run(), name=f"call:{call_id}")
    receiving: asyncio.Task[str] | None = None
    ended_by = ""

    async def end(reason: str) -> None:
        # The sweeper (socket silent) or shutdown: stop reading; the call ends from there.
        nonlocal ended_by
        ended_by = ended_by or reason
        if receiving is not None and not receiving.done():
            receiving.cancel()
        elif not runner.done():
            await task.cancel(reason)

    session = CallSession(
        call_id=call_id, carrier=carrier, last_activity=lambda: receiver.last_message_at, end=end
    )
    st.registry.add(session)
    st.metrics.calls_started[carrier] += 1
    call_started(session.call_id, carrier, receiver.client)
    close_code, close_reason, how = CLOSE_NORMAL, "call ended", "bot-ended"
    try:
        # Audio fed before the StartFrame went through would be dropped: wait for it.
        inp = transport.input()
        while not inp.started and not runner.done():
            await asyncio.sleep(0)
        receiving = loop.create_task(receiver.run(transport), name=f"recv:{call_id}")
        await asyncio.wait({runner, receiving}, return_when=asyncio.FIRST_COMPLETED)
        if not receiving.done():
            # The pipeline ended first: the bot hung up (or failed). Stop reading.
            how = "bot-ended" if task.end_reason != "fatal error" else "bot-error"
            receiving.cancel()
            await asyncio.gather(receiving, return_exceptions=True)
        else:
            how, close_code, close_reason = _receive_outcome(receiving, ended_by)
            # on_wire_closed ended the call gracefully; bounded by the transport's own timeout.
            limit = tparams.hangup_timeout_secs + task.end_timeout + 1.0
            await asyncio.wait({runner}, timeout=limit)
            if not runner.done():
                log.warning("call did not end %.0f s after hang-up: cancelling", limit)
                await task.cancel("did not end after hang-up")
        await asyncio.gather(runner, return_exceptions=True)
    except asyncio.CancelledError:
        how, close_code, close_reason = "server-shutdown", CLOSE_GOING_AWAY, "server shutting down"
        await task.cancel("server shutting down")
        raise
    finally:
        if not runner.done():
            runner.cancel()
            await asyncio.gather(runner, return_exceptions=True)
        await sink.close(close_code, close_reason)
        st.registry.remove(session)
        st.metrics.calls_ended[carrier, how] += 1
        call_ended(
            session.call_id,
            carrier,
            how,
            loop.time() - session.started_at,
            task.end_reason or receiver.end_reason,
            messages=receiver.messages,
            bad_messages=receiver.bad_messages,
            audio_s=round(receiver.audio_seconds, 2),
        )
    if how in ("bot-ended", "bot-error") and carrier == "twilio" and st.call_control is not None:
        result = await st.call_control.hangup(start.call_id)
        log.info("REST hang-up: %s", result)
        st.hangups.append((start.call_id, result))


def _stream_url(st: ServerState, carrier: str, call_id: str, start: WireStart) -> Any:
    """Fresh stream URLs of this call for the bot (a caller returned from a transfer)."""
    if carrier not in ("telnyx", "vonage"):
        return None
    from voxpipe.server.carrier_transfer_routes import stream_url_for

    return stream_url_for(st, carrier, call_id, caller=start.caller, called=start.called)


def _receive_outcome(receiving: asyncio.Task[str], ended_by: str) -> tuple[str, int, str]:
    """(how the call ended, close code, close reason) from a finished receive loop."""
    if receiving.cancelled():
        if ended_by == DRAIN_REASON:
            return "drained", CLOSE_GOING_AWAY, "server draining"
        return "silent", CLOSE_GOING_AWAY, (ended_by or "ended by the server")[:120]
    exc = receiving.exception()
    if isinstance(exc, WireRefused):
        return "refused", exc.code, exc.reason
    if exc is not None:
        logger.error("receive loop failed", exc_info=exc)
        return "error", CLOSE_INTERNAL_ERROR, "internal error"
    return "caller-hung-up", CLOSE_NORMAL, "call ended"


def call_recorder(st: ServerState, call: Call, task: PipelineTask) -> Any:
    from voxpipe.state import make_transcript_cipher
    from voxpipe.testing.recording import FrameRecorder, pipeline_requires_consent
    from voxpipe.testing.service_tape import attach_tape

    assert st.record_dir is not None
    st.record_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    name = _SAFE.sub("_", call.call_id)[:80] or "call"
    path = Path(st.record_dir) / f"{name}.jsonl"
    n = 1
    while path.exists():
        n += 1
        path = Path(st.record_dir) / f"{name}-{n}.jsonl"
    meta = dict(call.metadata())
    meta.pop("owner", None)  # a replay of this recording is another call start, not this one
    meta["bot"] = st.bot_name
    meta["audio_format"] = {
        "encoding": call.audio_in.encoding,
        "sample_rate": call.audio_in.sample_rate,
    }
    # The transcript's rules: the bot's consent (held until known), payment pauses, the key.
    recorder = FrameRecorder(
        path,
        clock=task.clock,
        call_id=call.call_id,
        metadata=meta,
        cipher=make_transcript_cipher(st.settings),
        require_consent=pipeline_requires_consent(task.pipeline.processors()),
    )
    # What the providers return goes into the recording too: `voxpipe replay --offline`.
    attach_tape(task.pipeline.processors(), recorder.service)
    return recorder
