"""The voxpipe server: a FastAPI app that answers carrier webhooks and runs a bot per call.

Endpoints: ``POST /twilio/voice`` (TwiML), ``WS /twilio/stream``; ``POST /telnyx/voice`` (TeXML),
``WS /telnyx/stream/{token}``; ``GET|POST /vonage/answer`` (NCCO), ``WS /vonage/stream/{token}``
(each carrier's only when it is served, see ``voxpipe.server.carriers``);
``GET /`` (browser page), ``GET /webrtc/config``, ``POST /webrtc/offer`` (WebRTC, unless
``WEBRTC=off``); ``/api/...`` (the records API, ``voxpipe.records.api``); ``GET /healthz``;
``GET /metrics`` (Prometheus text; ``METRICS_TOKEN``).
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
from voxpipe.server.carriers import UnsafeSettingsError, carrier_access
from voxpipe.server.limits import CallLimiter, EdgeMiddleware, parse_carrier_limits
from voxpipe.server.media import media_stream
from voxpipe.server.metrics import CONTENT_TYPE, ServerMetrics
from voxpipe.server.sessions import SessionRegistry
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
    if batched_vad is True:
        from voxpipe.processors.vad.batched import BatchedVAD

        batched_vad = BatchedVAD()
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
        settings.max_calls, parse_carrier_limits(settings.max_calls_per_carrier)
    )
    metrics_token = settings.metrics_token.get_secret_value() if settings.metrics_token else None
    if metrics_token is None and not is_loopback(bind_host):
        logger.warning(
            "METRICS_TOKEN is not set: GET /metrics is open to anyone who reaches %s", bind_host
        )
    silence = silence_timeout_s or settings.ws_ping_interval_s + settings.ws_ping_timeout_s
    registry = SessionRegistry(silence_timeout_s=silence)
    metrics = ServerMetrics(active_calls=lambda: len(registry))
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
        try:
            yield
        finally:
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

    app.add_middleware(
        EdgeMiddleware,
        limiter=call_limiter,
        max_body_bytes=settings.max_body_bytes,
        on_refused=refused,
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

    # Browser calls: the page at / and POST /webrtc/offer (aiortc is imported on first offer).
    if webrtc_access.mode != "off":
        from voxpipe.server.webrtc import ice_server_setting, webrtc_router

        warn_about_configured_turn(ice_server_setting(settings), settings.turn_secret)
        app.include_router(webrtc_router())

    app.include_router(records_router())  # the records API under /api/ (issue 12)
    if settings.desk_token is not None:  # the agent desk (issue 11): live escalations
        from voxpipe.server.desk import desk_router

        app.include_router(desk_router(settings.desk_token.get_secret_value()))

    @app.get("/healthz", include_in_schema=False)
    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok", "active_calls": len(registry), "bot": bot_name})

    @app.get("/metrics", include_in_schema=False)
    async def metrics_route(request: Request) -> Response:
        refused = metrics_refusal(request, metrics_token)
        if refused is not None:
            return refused
        return Response(metrics.render(), media_type=CONTENT_TYPE)

    return app


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
