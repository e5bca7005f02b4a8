"""Browser calls: the page at ``/``, ``GET /webrtc/config`` and ``POST /webrtc/offer``.

The page (``static/``) asks for the microphone, opens an ``events`` data channel, gathers
its ICE candidates and posts the SDP offer ``{"sdp": ..., "type": "offer"}`` (optionally
``"parameters": {...}``, handed to the bot as custom parameters). The answer comes back as
``{"sdp": ..., "type": "answer", "call_id": ...}``. The bot's call starts only once the peer
connection is up: an offer whose browser does not connect within ``WEBRTC_OFFER_TIMEOUT_S``
expires and releases its connection and its place under ``MAX_CALLS``, having started no
pipeline, opened no provider socket and written nothing. The call ends when the browser hangs
up, the connection fails, or the bot ends it.

Access (``WEBRTC=off|token|open``, see ``voxpipe.server.access``): with ``token`` the config
and offer requests carry ``Authorization: Bearer <WEBRTC_TOKEN or a JWT signed with it>``;
the page takes the token from its URL fragment (``/#token=...``). ``/webrtc/config`` gives
browsers STUN servers and expiring TURN credentials (``voxpipe.server.turn``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response

from voxpipe.call import Call, build_task, call_locale
from voxpipe.logs import call_ended, call_started, security_event
from voxpipe.pipelines.task import PipelineTask
from voxpipe.processors.turn.params import transport_turn_kwargs
from voxpipe.server.access import WebRTCAccess, client_address
from voxpipe.server.limits import CallSlot
from voxpipe.server.metrics import FrameCounter
from voxpipe.server.sessions import CallSession
from voxpipe.server.turn import browser_ice_servers, with_server_credentials

if TYPE_CHECKING:
    from voxpipe.server.app import ServerState
    from voxpipe.transports.webrtc import WebRTCTransport

__all__ = ["STATIC_DIR", "webrtc_router"]

logger = logging.getLogger(__name__)

CARRIER = "webrtc"
STATIC_DIR = Path(__file__).with_name("static")
# The only files the page needs; nothing else under static/ is served.
_STATIC_FILES = {"app.js": "text/javascript; charset=utf-8"}
MAX_OFFER_BYTES = 64 * 1024  # a browser's audio offer is a few KB
MAX_PARAMETERS = 32


def _state(request: Request) -> ServerState:
    return request.app.state.voxpipe  # type: ignore[no-any-return]


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def ice_server_setting(settings: Any) -> Any:
    """The operator's ICE servers (``WEBRTC_ICE_SERVERS``); none by default, so nothing leaves."""
    return getattr(settings, "webrtc_ice_servers", None)


def _access(st: ServerState) -> WebRTCAccess:
    if st.webrtc_access is None:  # a ServerState built by hand: decide as create_app would
        token = st.settings.webrtc_token
        st.webrtc_access = WebRTCAccess.resolve(
            st.settings.webrtc, token.get_secret_value() if token else None, st.bind_host
        )
    return st.webrtc_access


def _refused(st: ServerState, request: Request, what: str) -> JSONResponse | None:
    """A 404 (WEBRTC=off) or 401 (no or bad token) for ``request``, or None when admitted."""
    access = _access(st)
    if access.mode == "off":
        return _error(404, "browser calls are off on this server (WEBRTC=off)")
    why = access.refusal(request)
    if why is None:
        return None
    st.metrics.calls_refused[CARRIER, "unauthorized"] += 1
    security_event(
        "webrtc_token_refused", client_address(request), f"{what} refused: {why}", path=what
    )
    response = _error(401, f"browser calls need a token: {why}")
    response.headers["WWW-Authenticate"] = 'Bearer realm="voxpipe webrtc"'
    return response


def webrtc_router() -> APIRouter:
    """Routes for browser calls; the app must carry ``app.state.voxpipe`` (``create_app`` does)."""
    router = APIRouter()
    running: set[asyncio.Task[None]] = set()  # offer and call tasks, referenced until done

    @router.get("/", include_in_schema=False)
    async def index(request: Request) -> Response:
        if _access(_state(request)).mode == "off":
            return _error(404, "browser calls are off on this server (WEBRTC=off)")
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html; charset=utf-8")

    @router.get("/static/{name}", include_in_schema=False)
    async def static(request: Request, name: str) -> Response:
        media_type = _STATIC_FILES.get(name)
        if media_type is None or _access(_state(request)).mode == "off":
            return _error(404, f"no static file {name!r}")
        return FileResponse(STATIC_DIR / name, media_type=media_type)

    @router.get("/webrtc/config", include_in_schema=False)
    async def config(request: Request) -> Response:
        st = _state(request)
        refused = _refused(st, request, "/webrtc/config")
        if refused is not None:
            return refused
        from voxpipe.transports.webrtc import ice_servers_from

        settings = st.settings
        secret = settings.turn_secret.get_secret_value() if settings.turn_secret else None
        servers = browser_ice_servers(
            ice_servers_from(ice_server_setting(settings)), secret, settings.turn_ttl_s
        )
        # Credentials expire: no cache may keep them past their lifetime, or share them.
        return JSONResponse({"iceServers": servers}, headers={"Cache-Control": "no-store"})

    @router.post("/webrtc/offer", include_in_schema=False)
    async def offer(request: Request) -> Response:
        st = _state(request)
        refused = _refused(st, request, "/webrtc/offer")
        if refused is not None:
            return refused
        body = await request.body()
        if len(body) > MAX_OFFER_BYTES:
            return _error(413, f"offer of {len(body)} bytes exceeds {MAX_OFFER_BYTES}")
        parsed = _parse_offer(body)
        if isinstance(parsed, JSONResponse):
            return parsed
        sdp, parameters = parsed
        try:
            from voxpipe.transports.webrtc import (
                WebRTCTransport,
                ice_servers_from,
                webrtc_params,
            )
        except ImportError as exc:
            st.metrics.calls_refused[CARRIER, "no-webrtc"] += 1
            return _error(501, str(exc))
        slot = st.call_limiter.acquire(CARRIER)
        if slot is None:
            st.metrics.calls_refused[CARRIER, "busy"] += 1
            why = st.call_limiter.describe(CARRIER)
            logger.warning("browser offer refused: %s", why)
            return JSONResponse(
                {"error": f"busy: {why}"}, status_code=503, headers={"Retry-After": "5"}
            )
        call_id = f"{CARRIER}-{secrets.token_hex(6)}"
        log = logging.LoggerAdapter(logger, {"call_id": call_id})
        settings = st.settings
        secret = settings.turn_secret.get_secret_value() if settings.turn_secret else None
        # The locale row's turn-taking where it sets one; the call itself chooses the row again
        # when it starts (the same in-memory table, so the same row).
        chosen = await call_locale(settings, carrier=CARRIER, custom_parameters=parameters)
        try:
            transport = WebRTCTransport(
                webrtc_params(
                    allow_interruptions=settings.allow_interruptions,
                    **transport_turn_kwargs(settings, chosen.row),
                ),
                ice_servers=with_server_credentials(
                    ice_servers_from(ice_server_setting(settings)), secret, settings.turn_ttl_s
                ),
                batched_vad=st.batched_vad,
                connect_timeout_s=settings.webrtc_offer_timeout_s,
                name=CARRIER,
                call_id=call_id,
            )
        except Exception as exc:
            slot.release()
            log.exception("[%s] could not set up the WebRTC transport", call_id)
            return _error(500, f"could not set up WebRTC: {type(exc).__name__}: {exc}")
        try:
            answer = await transport.accept_offer(sdp, "offer")
        except Exception as exc:
            slot.release()
            await transport.close("bad offer")
            st.metrics.calls_refused[CARRIER, "bad-offer"] += 1
            log.warning("[%s] offer refused: %s", call_id, exc)
            return _error(400, f"cannot answer this offer: {exc}")
        runner = asyncio.get_running_loop().create_task(
            _answered_offer(st, transport, call_id, parameters, slot, client_address(request)),
            name=f"webrtc-offer:{call_id}",
        )
        running.add(runner)
        runner.add_done_callback(running.discard)
        return JSONResponse({"sdp": answer.sdp, "type": answer.type, "call_id": call_id})

    return router


async def _answered_offer(
    st: ServerState,
    transport: WebRTCTransport,
    call_id: str,
    parameters: dict[str, str],
    slot: CallSlot,
    client: str | None,
) -> None:
    """Wait for the browser's connection; only then build the bot and run the call."""
    log = logging.LoggerAdapter(logger, {"call_id": call_id})
    try:
        connected = asyncio.ensure_future(transport.connected.wait())
        gone = asyncio.ensure_future(transport.wire_closed.wait())
        try:
            # The transport's own watchdog closes the wire at the offer timeout; the extra
            # second only guards against a watchdog that never fires.
            await asyncio.wait(
                {connected, gone},
                timeout=st.settings.webrtc_offer_timeout_s + 1.0,
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            connected.cancel()
            gone.cancel()
        if not transport.connected.is_set() or transport.wire_closed.is_set():
            reason = transport.closed_reason or (
                f"browser did not connect within {st.settings.webrtc_offer_timeout_s:g} s"
            )
            st.metrics.calls_refused[CARRIER, "not-connected"] += 1
            log.info("[%s] offer expired: %s", call_id, reason)
            await transport.close(f"offer expired: {reason}")
            return
        try:
            call = await _make_call(st, transport, call_id, parameters)
            task = build_task(call, await st.bot(call))
        except Exception as exc:
            await transport.close("bot failed to start")
            st.metrics.calls_refused[CARRIER, "bot-error"] += 1
            log.exception("[%s] the bot failed to build its pipeline: %s", call_id, exc)
            return
        await _run_call(st, transport, call, task, client)
    finally:
        slot.release()
        await transport.close("call ended")  # idempotent: a no-op when already closed


def _parse_offer(body: bytes) -> tuple[str, dict[str, str]] | JSONResponse:
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        return _error(400, 'the offer must be JSON: {"sdp": "...", "type": "offer"}')
    if not isinstance(data, dict):
        return _error(400, 'the offer must be a JSON object: {"sdp": "...", "type": "offer"}')
    sdp, kind = data.get("sdp"), data.get("type")
    if kind != "offer" or not isinstance(sdp, str) or not sdp.startswith("v=0"):
        return _error(400, 'expected {"sdp": "v=0...", "type": "offer"} from RTCPeerConnection')
    raw = data.get("parameters") or {}
    if not isinstance(raw, dict) or len(raw) > MAX_PARAMETERS:
        return _error(400, f"'parameters' must be an object of at most {MAX_PARAMETERS} strings")
    parameters = {str(k)[:64]: str(v)[:256] for k, v in raw.items()}
    return sdp, parameters


async def _make_call(
    st: ServerState, transport: WebRTCTransport, call_id: str, parameters: dict[str, str]
) -> Call:
    chosen = await call_locale(st.settings, carrier=CARRIER, custom_parameters=parameters)
    return Call(
        transport=transport,
        call_id=call_id,
        settings=st.settings,
        carrier=CARRIER,
        custom_parameters=parameters,
        locale=chosen.locale,
        locale_row=chosen.row,
        consent_policy=chosen.consent_policy,
        audio_in=transport.params.audio_in,
        audio_out=transport.params.audio_out,
        allow_interruptions=st.settings.allow_interruptions,
        # The server made the id, so this call start owns its records (see Call.owner).
        owner=secrets.token_hex(16),
    )


async def _run_call(
    st: ServerState,
    transport: WebRTCTransport,
    call: Call,
    task: PipelineTask,
    client: str | None = None,
) -> None:
    """Run one browser call to its end, registered, counted, and always cleaned up."""
    call_id = call.call_id
    log = logging.LoggerAdapter(logger, {"call_id": call_id})
    counter = FrameCounter(st.metrics)
    task.add_observer(counter)
    task.on_downstream(counter.on_output)
    task.on_upstream(counter.on_output)
    if st.record_dir is not None:
        from voxpipe.server.media import call_recorder

        task.add_observer(call_recorder(st, call, task))
    loop = asyncio.get_running_loop()
    runner = loop.create_task(task.run(), name=f"call:{call_id}")

    async def end(reason: str) -> None:
        # The sweeper (no audio for too long) or shutdown: the browser counts as gone.
        await transport.close(reason)
        await transport.on_wire_closed(reason)

    session = CallSession(
        call_id=call_id, carrier=CARRIER, last_activity=lambda: transport.last_activity, end=end
    )
    st.registry.add(session)
    st.metrics.calls_started[CARRIER] += 1
    call_started(call_id, CARRIER, client)
    how = "bot-ended"
    gone = loop.create_task(transport.wire_closed.wait())
    try:
        await asyncio.wait({runner, gone}, return_when=asyncio.FIRST_COMPLETED)
        if not runner.done():
            how = "caller-hung-up"
            # on_wire_closed ends the call gracefully, bounded by the transport's own timeout.
            limit = transport.params.hangup_timeout_secs + task.end_timeout + 1.0
            try:
                async with asyncio.timeout(limit):
                    await asyncio.shield(runner)
            except TimeoutError:
                log.warning(
                    "[%s] call did not end %.0f s after hang-up: cancelling", call_id, limit
                )
                await task.cancel("did not end after hang-up")
        elif task.end_reason == "fatal error":
            how = "bot-error"
        await asyncio.gather(runner, return_exceptions=True)
    except asyncio.CancelledError:
        how = "server-shutdown"
        await task.cancel("server shutting down")
        raise
    finally:
        gone.cancel()
        if not runner.done():
            runner.cancel()
            await asyncio.gather(runner, return_exceptions=True)
        await transport.close("call ended")
        st.registry.remove(session)
        st.metrics.calls_ended[CARRIER, how] += 1
        call_ended(
            session.call_id,
            CARRIER,
            how,
            loop.time() - session.started_at,
            task.end_reason or transport.closed_reason,
            frames_in=transport.frames_in,
            frames_out=transport.track.audio_frames_out,
        )
