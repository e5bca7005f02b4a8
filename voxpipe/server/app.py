"""The voxpipe server: a FastAPI app that answers carrier webhooks and runs a bot per call.

Endpoints: ``POST /twilio/voice`` (TwiML), ``WS /twilio/stream``; ``POST /telnyx/voice`` (TeXML),
``WS /telnyx/stream/{token}``; ``GET|POST /vonage/answer`` (NCCO), ``WS /vonage/stream/{token}``
(each carrier's only when it is served, see ``voxpipe.server.carriers``);
``GET /`` (browser page), ``GET /webrtc/config``, ``POST /webrtc/offer`` (WebRTC, unless
``WEBRTC=off``); ``/api/...`` (the records API, ``voxpipe.records.api``); ``GET /healthz``
(liveness and every worker's load), ``GET /readyz`` (503 while draining or full);
``GET /metrics`` (Prometheus text, all workers merged; ``METRICS_TOKEN``).
Every request passes ``EdgeMiddleware`` first (body cap, JSON depth, call limits).
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from fastapi import FastAPI, WebSocket
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from voxpipe.call import Bot, load_bot
from voxpipe.config.settings import VoxpipeSettings, get_settings
from voxpipe.records.api import records_router
from voxpipe.records.compliance import check_compliance
from voxpipe.records.runtime import start_background as start_records_background
from voxpipe.server.access import WebRTCAccess, metrics_refusal
from voxpipe.server.bind import is_loopback
from voxpipe.server.capacity import Capacity, WorkerIdentity, effective_capacity
from voxpipe.server.carriers import UnsafeSettingsError, carrier_access
from voxpipe.server.garbage import GarbageSweeper
from voxpipe.server.limits import CallLimiter, EdgeMiddleware, busy_twiml, parse_carrier_limits
from voxpipe.server.media import media_stream, preload_providers
from voxpipe.server.metrics import CONTENT_TYPE, ServerMetrics
from voxpipe.server.sessions import SessionRegistry
from voxpipe.server.siblings import LOCAL_HEADER, ask_siblings, merge_metrics
from voxpipe.server.state import MetricsSink, ServerState
from voxpipe.server.tokens import StreamTokens
from voxpipe.server.turn import warn_about_configured_turn
from voxpipe.server.twilio_rest import TwilioCallControl
from voxpipe.server.used_tokens import MemoryUsedTokens, RedisUsedTokens, UsedTokens
from voxpipe.server.webhooks import telnyx_voice, twilio_voice, vonage_answer
from voxpipe.transports.websocket import WireLimits

__all__ = ["ServerState", "UnsafeSettingsError", "create_app"]

logger = logging.getLogger(__name__)


def _token_secret(settings: VoxpipeSettings, given: bytes | None) -> bytes | None:
    if given:
        return given
    if settings.stream_token_secret is not None:
        return settings.stream_token_secret.get_secret_value().encode()
    if settings.twilio_auth_token is not None:
        # Every worker of one service shares the auth token, so their tokens agree.
        key = settings.twilio_auth_token.get_secret_value().encode()
        return hmac.new(key, b"voxpipe stream tokens v1", hashlib.sha256).digest()
    logger.warning(
        "neither STREAM_TOKEN_SECRET nor TWILIO_AUTH_TOKEN is set: stream tokens use a random "
        "per-process secret, which only works with a single worker"
    )
    return None


def _used_tokens(settings: VoxpipeSettings) -> UsedTokens:
    """Where used stream tokens are remembered: Redis (all workers) when configured."""
    if settings.redis_url:
        return RedisUsedTokens.from_url(
            settings.redis_url,
            prefix=settings.redis_key_prefix,
            socket_timeout_s=settings.redis_socket_timeout_s,
        )
    return MemoryUsedTokens()


def create_app(
    bot: str | Path | Bot,
    settings: VoxpipeSettings | None = None,
    *,
    record_dir: str | Path | None = None,
    stream_token_secret: bytes | None = None,
    stream_token_ttl_s: float = 60.0,
    require_stream_token: bool = True,
    silence_timeout_s: float | None = None,
    limits: WireLimits | None = None,
    batched_vad: Any = True,
    host: str | None = None,
) -> FastAPI:
    """The server app for ``bot`` (a bot file path, a ``module:function``, or the function).

    ``host`` (default ``HOST``) is the address the server will listen on: what is open by
    default (WebRTC) depends on whether it is a loopback address (``voxpipe.server.bind``).

    ``silence_timeout_s`` (default ``WS_PING_INTERVAL_S + WS_PING_TIMEOUT_S``): a call whose
    socket sent nothing for that long is ended. ``batched_vad``: True shares one batched Silero
    VAD across all calls (the default), None gives each call its own, or pass a ``BatchedVAD``.
    The carriers served follow CARRIERS, their secrets and HOST (the address the server binds);
    raises UnsafeSettingsError for ALLOW_UNSIGNED_WEBHOOKS on a non-loopback HOST.
    """
    settings = settings or get_settings()
    bind_host = host if host is not None else settings.host
    carriers = carrier_access(settings, bind_host)
    check_compliance(settings, record_dir)  # COMPLIANCE_PROFILE (issue 12)
    if callable(bot) and not isinstance(bot, str | Path):
        bot_fn: Bot = bot
        bot_name = getattr(bot, "__module__", "bot")
    else:
        bot_fn = load_bot(bot)
        bot_name = str(bot)
    preload_providers(settings)  # not on a first call, under the calls already up
    if batched_vad is True:
        from voxpipe.processors.vad.batched import SERVED_GATHER_S, BatchedVAD

        batched_vad = BatchedVAD(gather_s=SERVED_GATHER_S)
    auth_token = (
        settings.twilio_auth_token.get_secret_value() if settings.twilio_auth_token else None
    )
    call_control = None
    if auth_token and settings.twilio_account_sid:
        call_control = TwilioCallControl(
            settings.twilio_account_sid, auth_token, base_url=settings.twilio_api_base_url
        )
    webrtc_access = WebRTCAccess.resolve(
        settings.webrtc,
        settings.webrtc_token.get_secret_value() if settings.webrtc_token else None,
        bind_host,
    )
    call_limiter = CallLimiter(
        effective_capacity(settings.max_calls, settings.max_calls_per_worker),
        parse_carrier_limits(settings.max_calls_per_carrier),
    )
    metrics_token = settings.metrics_token.get_secret_value() if settings.metrics_token else None
    if metrics_token is None and not is_loopback(bind_host):
        logger.warning(
            "METRICS_TOKEN is not set: GET /metrics is open to anyone who reaches %s", bind_host
        )
    silence = silence_timeout_s or settings.ws_ping_interval_s + settings.ws_ping_timeout_s
    registry = SessionRegistry(silence_timeout_s=silence)
    metrics = ServerMetrics(active_calls=lambda: len(registry))
    identity = WorkerIdentity.from_env()
    capacity = Capacity(call_limiter, registry, identity, drain_timeout_s=settings.drain_timeout_s)
    worker_registry = None
    if settings.redis_url:
        from voxpipe.server.worker_registry import WorkerRegistry

        worker_registry = WorkerRegistry.from_url(
            settings.redis_url,
            socket_timeout_s=settings.redis_socket_timeout_s,
            prefix=settings.redis_key_prefix,
            url=settings.worker_url,
            heartbeat_s=settings.worker_heartbeat_s,
            load=capacity.load,
        )
        capacity.on_drain = worker_registry.publish
    state = ServerState(
        settings=settings,
        bot=bot_fn,
        bot_name=bot_name,
        tokens=StreamTokens(
            _token_secret(settings, stream_token_secret),
            ttl_s=stream_token_ttl_s,
            used=_used_tokens(settings),
        ),
        metrics=metrics,
        metrics_sink=MetricsSink(metrics),
        registry=registry,
        limits=limits or WireLimits(),
        batched_vad=batched_vad,
        record_dir=Path(record_dir) if record_dir else None,
        twilio_auth_token=auth_token,
        call_control=call_control,
        require_stream_token=require_stream_token,
        bind_host=bind_host,
        webrtc_access=webrtc_access,
        call_limiter=call_limiter,
        carriers=carriers,
        capacity=capacity,
        worker_registry=worker_registry,
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        from voxpipe.config.shared_locales import shared_locale_table
        from voxpipe.state.shared import close_shared_stores, shared_stores

        # Read the locale table before the first call (which then never waits on it).
        await shared_locale_table(settings)
        orphans = None
        purge = start_records_background(settings)  # retention purge, call-end webhook
        if settings.redis_url:
            # Sessions outlive workers only in a shared store: sweep what dead workers left.
            from voxpipe.state import make_sweeper

            stores = await shared_stores(settings)
            orphans = make_sweeper(settings, stores.sessions, stores.transcripts)
            orphans.start()
        sip = await _start_sip(state, app)  # direct SIP (issue 16): SIP_LISTEN / --sip
        sweeper = GarbageSweeper(
            metrics.calls_ended.total, settings.gc_sweep_interval_s, observe=metrics.gc_sweep
        )
        sweeper.start()
        if worker_registry is not None:
            worker_registry.start()
        try:
            yield
        finally:
            await sweeper.stop()
            if worker_registry is not None:
                await worker_registry.stop()
            await registry.close_all()
            if sip is not None:
                await sip.stop()
            await state.tokens.close()
            if orphans is not None:
                await orphans.stop()
            await purge.stop()
            await close_shared_stores()

    app = FastAPI(
        title="voxpipe", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None
    )
    app.state.voxpipe = state

    def refused(carrier: str, reason: str) -> None:
        metrics.calls_refused[carrier, reason] += 1

    from voxpipe.config.locale_texts import LocaleTexts

    busy_text = LocaleTexts.for_locale(settings.default_locale).text("server.busy")
    app.add_middleware(
        EdgeMiddleware,
        limiter=call_limiter,
        max_body_bytes=settings.max_body_bytes,
        on_refused=refused,
        busy_answer=busy_twiml(busy_text, settings.default_locale),
        overflow=_overflow(worker_registry),
    )

    # --- routes: carriers (issue 18) --- only carriers served (see voxpipe.server.carriers)
    # have routes; the others' URLs answer 404 and start nothing.
    if carriers.serves("twilio"):
        app.add_api_route("/twilio/voice", twilio_voice, methods=["POST"], include_in_schema=False)

        @app.websocket("/twilio/stream")
        async def twilio_stream(websocket: WebSocket) -> None:
            await media_stream(websocket, "twilio")

        # Warm transfer (issue 11): Twilio's signed callbacks and the hold audio.
        from voxpipe.server.transfer_routes import transfer_router

        app.include_router(transfer_router(metrics))

    if carriers.serves("telnyx"):
        app.add_api_route("/telnyx/voice", telnyx_voice, methods=["POST"], include_in_schema=False)

        @app.websocket("/telnyx/stream/{token}")
        async def telnyx_stream(websocket: WebSocket, token: str) -> None:
            await media_stream(websocket, "telnyx", token)

    if carriers.serves("vonage"):
        app.add_api_route(
            "/vonage/answer", vonage_answer, methods=["GET", "POST"], include_in_schema=False
        )

        @app.websocket("/vonage/stream/{token}")
        async def vonage_stream(websocket: WebSocket, token: str) -> None:
            await media_stream(websocket, "vonage", token)

    if carriers.serves("telnyx") or carriers.serves("vonage"):
        # Warm transfer (issue 11): Telnyx's and Vonage's signed callbacks.
        from voxpipe.server.carrier_transfer_routes import carrier_transfer_router

        app.include_router(
            carrier_transfer_router(metrics, hold_audio=not carriers.serves("twilio"))
        )

    # Browser calls: the page at / and POST /webrtc/offer (aiortc is imported on first offer).
    if webrtc_access.mode != "off":
        from voxpipe.server.webrtc import ice_server_setting, webrtc_router

        warn_about_configured_turn(ice_server_setting(settings), settings.turn_secret)
        app.include_router(webrtc_router())

    app.include_router(records_router())  # the records API under /api/ (issue 12)
    if settings.desk_token is not None:  # the agent desk (issue 11): live escalations
        from voxpipe.server.desk import desk_router

        app.include_router(desk_router(settings.desk_token.get_secret_value()))

    def whole_server(request: Request) -> bool:
        # A sibling asking for this worker's own view sends LOCAL_HEADER.
        return identity.count > 1 and LOCAL_HEADER not in request.headers

    @app.get("/healthz", include_in_schema=False)
    async def healthz(request: Request) -> Response:
        # Liveness: 200 while the process serves, draining included (calls are finishing).
        workers = [capacity.load()]
        if whole_server(request):
            for index, answer in sorted((await ask_siblings(identity, "/healthz")).items()):
                try:
                    workers.extend(answer.json()["workers"])
                except Exception:  # an exception from the request, or a bad answer
                    workers.append({"worker": index, "up": False})
        total = sum(int(w.get("active_calls", 0)) for w in workers)
        return JSONResponse(
            {
                "status": "ok",
                "active_calls": total,
                "bot": bot_name,
                "pid": capacity.load()["pid"],
                "draining": capacity.draining,
                "workers": workers,
            }
        )

    @app.get("/readyz", include_in_schema=False)
    async def readyz(request: Request) -> Response:
        ready, why = capacity.ready()
        if not ready and why == "full" and whole_server(request):
            # Full here, but the kernel may hand the next call to a sibling with room.
            answers = await ask_siblings(identity, "/readyz")
            if any(getattr(a, "status_code", 0) == 200 for a in answers.values()):
                ready, why = True, "ready (another worker has room)"
        return JSONResponse({"ready": ready, "state": why}, status_code=200 if ready else 503)

    @app.get("/metrics", include_in_schema=False)
    async def metrics_route(request: Request) -> Response:
        refused = metrics_refusal(request, metrics_token)
        if refused is not None:
            return refused
        own = metrics.render()
        if not whole_server(request):
            return Response(own, media_type=CONTENT_TYPE)
        auth = {"authorization": request.headers["authorization"]} if metrics_token else {}
        texts = [own.decode()]
        for index, answer in sorted((await ask_siblings(identity, "/metrics", auth)).items()):
            if getattr(answer, "status_code", 0) == 200:
                texts.append(answer.text)
            else:
                logger.warning("/metrics: worker %d did not answer: %s", index, answer)
        return Response(merge_metrics(texts), media_type=CONTENT_TYPE)

    return app


def _overflow(worker_registry: Any) -> Any:
    """The middleware's lookup of a server with room (None without a worker registry)."""
    if worker_registry is None:
        return None

    async def find(carrier: str) -> str | None:
        return await worker_registry.find_room()  # type: ignore[no-any-return]

    return find


async def _start_sip(state: ServerState, app: Any) -> Any:
    """The SIP user agent when SIP_LISTEN is set and ``sip`` is among CARRIERS; else None."""
    settings = state.settings
    if not settings.sip_listen or "sip" not in settings.carriers.split(","):
        return None
    from voxpipe.server.transfer_routes import register_transfer_metrics
    from voxpipe.transports.sip.server import SipServer

    server = SipServer(state, settings.sip_listen)
    await server.start()
    register_transfer_metrics(state.metrics)  # REFER transfers count their steps there
    app.state.sip = server  # tests and /metrics readers find the bound port here
    return server
