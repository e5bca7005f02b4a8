"""What every request handler of the server shares (``app.state.voxpipe``).

Kept apart from ``app.py`` so the handler modules (webhooks, media, WebRTC) import this and not
the module that imports them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from voxpipe.call import Bot
from voxpipe.config.settings import VoxpipeSettings
from voxpipe.server.access import WebRTCAccess
from voxpipe.server.capacity import Capacity
from voxpipe.server.carriers import CarrierAccess
from voxpipe.server.limits import CallLimiter
from voxpipe.server.metrics import ServerMetrics
from voxpipe.server.sessions import SessionRegistry
from voxpipe.server.tokens import StreamTokens
from voxpipe.server.twilio_rest import HangupResult, TwilioCallControl
from voxpipe.transports.websocket import WireLimits

__all__ = ["MetricsSink", "ServerState"]


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
    # Which carriers are served and how their webhooks are verified (issue 18).
    carriers: CarrierAccess = field(default_factory=CarrierAccess)
    hangups: list[tuple[str, HangupResult]] = field(default_factory=list)
    # --- the server's edge (issue 18) ---
    bind_host: str = "127.0.0.1"  # the address the server listens on (HOST / --host)
    webrtc_access: WebRTCAccess | None = None
    call_limiter: CallLimiter = field(default_factory=CallLimiter)
    # --- workers, capacity, drain (issue 15) ---
    capacity: Capacity | None = None
    worker_registry: Any = None  # WorkerRegistry when REDIS_URL is set
