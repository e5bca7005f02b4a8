"""The voxpipe server: a FastAPI app that answers carrier webhooks and runs a bot per call.

Endpoints: ``POST /twilio/voice`` (TwiML), ``WS /twilio/stream``; ``POST /telnyx/voice`` (TeXML),
``WS /telnyx/stream[/{token}]``; ``GET|POST /vonage/answer`` (NCCO), ``WS /vonage/stream[/{token}]``;
``GET /`` (browser page), ``POST /webrtc/offer`` (WebRTC); ``GET /healthz``;
``GET /metrics`` (Prometheus text).
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import FastAPI, WebSocket
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from voxpipe.call import Bot, load_bot
from voxpipe.config.settings import VoxpipeSettings, get_settings
from voxpipe.server.media import media_stream
from voxpipe.server.metrics import CONTENT_TYPE, ServerMetrics
from voxpipe.server.sessions import SessionRegistry
from voxpipe.server.tokens import StreamTokens
from voxpipe.server.twilio_rest import HangupResult, TwilioCallControl
from voxpipe.server.webhooks import telnyx_voice, twilio_voice, vonage_answer
from voxpipe.transports.websocket import WireLimits

__all__ = ["ServerState", "create_app"]

logger = logging.getLogger(__name__)


class MetricsSink:
    """Adapts ServerMetrics to the counters the websocket receive loop and sink bump."""

    def __init__(self, metrics: ServerMetrics) -> None:
        self._m = metrics

    def wire_message(self, carrier: str, inbound: bool) -> None:
        (self._m.wire_in if inbound else self._m.wire_out)[carrier] += 1

    def wire_error(self, carrier: str) -> None:
        self._m.wire_errors[carrier] += 1

    def sent(self, carrier: str) -> Callable[[], None]:
        out = self._m.wire_out

        def bump() -> None:
            out[carrier] += 1

        return bump


@dataclass(slots=True, eq=False)
class ServerState:
    """Everything the handlers share (``app.state.voxpipe``)."""

    settings: VoxpipeSettings
    bot: Bot
    bot_name: str
    tokens: StreamTokens
    metrics: ServerMetrics
    metrics_sink: MetricsSink
    registry: SessionRegistry
    limits: WireLimits
    batched_vad: Any  # BatchedVAD | None
    record_dir: Path | None
    twilio_auth_token: str | None
    call_control: TwilioCallControl | None
    require_stream_token: bool = True
    hangups: list[tuple[str, HangupResult]] = field(default_factory=list)


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
) -> FastAPI:
    """The server app for ``bot`` (a bot file path, a ``module:function``, or the function).

    ``silence_timeout_s`` (default ``WS_PING_INTERVAL_S + WS_PING_TIMEOUT_S``): a call whose
    socket sent nothing for that long is ended. ``batched_vad``: True shares one batched Silero
    VAD across all calls (the default), None gives each call its own, or pass a ``BatchedVAD``.
    """
    settings = settings or get_settings()
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
    if auth_token is None:
        logger.warning(
            "TWILIO_AUTH_TOKEN is not set: Twilio webhook signatures are NOT checked. Set it in "
            "production so only Twilio can start calls."
        )
    call_control = None
    if auth_token and settings.twilio_account_sid:
        call_control = TwilioCallControl(
            settings.twilio_account_sid, auth_token, base_url=settings.twilio_api_base_url
        )
    silence = silence_timeout_s or settings.ws_ping_interval_s + settings.ws_ping_timeout_s
    registry = SessionRegistry(silence_timeout_s=silence)
    metrics = ServerMetrics(active_calls=lambda: len(registry))
    state = ServerState(
        settings=settings,
        bot=bot_fn,
        bot_name=bot_name,
        tokens=StreamTokens(_token_secret(settings, stream_token_secret), ttl_s=stream_token_ttl_s),
        metrics=metrics,
        metrics_sink=MetricsSink(metrics),
        registry=registry,
        limits=limits or WireLimits(),
        batched_vad=batched_vad,
        record_dir=Path(record_dir) if record_dir else None,
        twilio_auth_token=auth_token,
        call_control=call_control,
        require_stream_token=require_stream_token,
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        from voxpipe.config.shared_locales import shared_locale_table
        from voxpipe.state.shared import close_shared_stores, shared_stores

        # Read the locale table before the first call (which then never waits on it).
        await shared_locale_table(settings)
        orphans = None
        if settings.redis_url:
            # Sessions outlive workers only in a shared store: sweep what dead workers left.
            from voxpipe.state import make_sweeper

            stores = await shared_stores(settings)
            orphans = make_sweeper(settings, stores.sessions, stores.transcripts)
            orphans.start()
        try:
            yield
        finally:
            await registry.close_all()
            if orphans is not None:
                await orphans.stop()
            await close_shared_stores()

    app = FastAPI(
        title="voxpipe", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None
    )
    app.state.voxpipe = state

    app.add_api_route("/twilio/voice", twilio_voice, methods=["POST"], include_in_schema=False)
    app.add_api_route("/telnyx/voice", telnyx_voice, methods=["POST"], include_in_schema=False)
    app.add_api_route(
        "/vonage/answer", vonage_answer, methods=["GET", "POST"], include_in_schema=False
    )

    @app.websocket("/twilio/stream")
    async def twilio_stream(websocket: WebSocket) -> None:
        await media_stream(websocket, "twilio")

    @app.websocket("/telnyx/stream")
    async def telnyx_stream(websocket: WebSocket) -> None:
        await media_stream(websocket, "telnyx")

    @app.websocket("/telnyx/stream/{token}")
    async def telnyx_stream_token(websocket: WebSocket, token: str) -> None:
        await media_stream(websocket, "telnyx", token)

    @app.websocket("/vonage/stream")
    async def vonage_stream(websocket: WebSocket) -> None:
        await media_stream(websocket, "vonage")

    @app.websocket("/vonage/stream/{token}")
    async def vonage_stream_token(websocket: WebSocket, token: str) -> None:
        await media_stream(websocket, "vonage", token)

    # Browser calls: the page at / and POST /webrtc/offer (aiortc is imported on first offer).
    from voxpipe.server.webrtc import webrtc_router

    app.include_router(webrtc_router())

    @app.get("/healthz", include_in_schema=False)
    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok", "active_calls": len(registry), "bot": bot_name})

    @app.get("/metrics", include_in_schema=False)
    async def metrics_route(request: Request) -> Response:
        return Response(metrics.render(), media_type=CONTENT_TYPE)

    return app
