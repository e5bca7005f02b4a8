"""Who may use the browser and operator endpoints: WebRTC access modes and bearer tokens.

``WEBRTC=open`` lets anyone who reaches the server start a browser call, ``token`` requires
``Authorization: Bearer <t>`` on ``/webrtc/config`` and ``/webrtc/offer``, ``off`` removes the
routes; ``auto`` (the default) is ``open`` when the server binds to a loopback address and
``token`` otherwise. With ``WEBRTC_TOKEN=S`` a request is admitted when its bearer token is
either ``S`` itself (compared in constant time) or a JWT signed HS256 with key ``S`` that carries
an ``exp`` claim and has not expired: the operator's backend mints one per visitor
(``jwt.encode({"exp": now + 300}, S, "HS256")``), so the secret never reaches a browser.
``/metrics`` takes ``Authorization: Bearer <METRICS_TOKEN>`` when that is set.
"""

from __future__ import annotations

import hmac
import logging
from dataclasses import dataclass
from typing import Literal

from starlette.requests import HTTPConnection
from starlette.responses import JSONResponse

from voxpipe.logs import security_event
from voxpipe.server.bind import is_loopback

__all__ = [
    "WebRTCAccess",
    "bearer_token",
    "client_address",
    "metrics_refusal",
    "tokens_equal",
    "verify_webrtc_token",
]

logger = logging.getLogger(__name__)

Mode = Literal["off", "token", "open"]
# Clock skew tolerated between the operator's backend (which sets exp) and this server.
JWT_LEEWAY_S = 5.0


def bearer_token(conn: HTTPConnection) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, or None."""
    header = conn.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def client_address(conn: HTTPConnection) -> str | None:
    """The peer's address (the proxy-reported one behind a trusted proxy)."""
    return conn.client.host if conn.client else None


def tokens_equal(given: str | None, expected: str) -> bool:
    """Constant-time comparison of a presented token with the configured one."""
    if given is None:
        return False
    return hmac.compare_digest(given.encode(), expected.encode())


def metrics_refusal(conn: HTTPConnection, token: str | None) -> JSONResponse | None:
    """A 401 for a ``/metrics`` request without ``Bearer <token>``; None when admitted."""
    if token is None or tokens_equal(bearer_token(conn), token):
        return None
    security_event(
        "metrics_token_refused",
        client_address(conn),
        "GET /metrics without a valid METRICS_TOKEN bearer token",
    )
    return JSONResponse(
        {"error": "GET /metrics needs Authorization: Bearer <METRICS_TOKEN>"},
        status_code=401,
        headers={"WWW-Authenticate": 'Bearer realm="voxpipe metrics"'},
    )


def verify_webrtc_token(given: str | None, secret: str) -> str | None:
    """None when ``given`` is the secret or a valid HS256 JWT with ``exp``; else why not."""
    if given is None:
        return "no bearer token"
    if tokens_equal(given, secret):
        return None
    if given.count(".") != 2:
        return "the bearer token does not match"
    try:
        import jwt
    except ImportError:  # pragma: no cover - PyJWT is a dependency of the server extra
        return "a JWT was presented but PyJWT is not installed"
    try:
        jwt.decode(
            given,
            secret,
            algorithms=["HS256"],
            options={"require": ["exp"]},
            leeway=JWT_LEEWAY_S,
        )
    except jwt.ExpiredSignatureError:
        return "the token has expired"
    except jwt.InvalidTokenError as exc:
        return f"invalid token: {exc}"
    return None


@dataclass(frozen=True, slots=True)
class WebRTCAccess:
    """The effective WebRTC mode and its token, resolved once at start."""

    mode: Mode
    token: str | None = None

    @classmethod
    def resolve(cls, setting: str, token: str | None, bind_host: str) -> WebRTCAccess:
        """From ``WEBRTC`` (auto|off|token|open), ``WEBRTC_TOKEN`` and the bind address."""
        if setting == "auto":
            mode: Mode = "open" if is_loopback(bind_host) else "token"
        elif setting in ("off", "token", "open"):
            mode = setting  # type: ignore[assignment]
        else:
            raise ValueError(f"WEBRTC must be auto, off, token or open, not {setting!r}")
        access = cls(mode, token or None)
        access.log_startup(bind_host, setting)
        return access

    def log_startup(self, bind_host: str, setting: str) -> None:
        if self.mode == "token" and self.token is None:
            why = (
                "WEBRTC=token"
                if setting == "token"
                else f"the default when listening on {bind_host}, not a loopback address"
            )
            logger.warning(
                "browser calls need a token (%s) but WEBRTC_TOKEN is not set: every offer is "
                "refused. Set WEBRTC_TOKEN, or WEBRTC=off to remove the routes.",
                why,
            )
        elif self.mode == "open" and not is_loopback(bind_host):
            logger.warning(
                "WEBRTC=open on %s: anyone who reaches this server can start browser calls "
                "that spend provider money",
                bind_host,
            )
        else:
            logger.info("browser calls (WebRTC): %s", self.mode)

    def refusal(self, conn: HTTPConnection) -> str | None:
        """None when the request may use the WebRTC routes; else why it may not."""
        if self.mode == "open":
            return None
        if self.mode == "off":
            return "browser calls are off (WEBRTC=off)"
        if self.token is None:
            return "browser calls need WEBRTC_TOKEN, which is not set on this server"
        return verify_webrtc_token(bearer_token(conn), self.token)
