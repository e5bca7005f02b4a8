"""Ephemeral TURN credentials (the TURN REST API scheme coturn's ``use-auth-secret`` checks).

A browser never gets a long-term TURN password: ``/webrtc/config`` gives it, for each ``turn:``
or ``turns:`` server of ``WEBRTC_ICE_SERVERS``, the username ``"<expiry>:<id>"`` (expiry in Unix
seconds, ``TURN_TTL_S`` from now) and the credential ``base64(HMAC-SHA1(TURN_SECRET, username))``.
The TURN server, sharing the secret, recomputes the credential and refuses it after the expiry.
A static ``credential`` in ``WEBRTC_ICE_SERVERS`` is for the server's own peer only and is
never served.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import secrets
import time
from collections.abc import Iterable
from typing import Any

__all__ = [
    "browser_ice_servers",
    "is_turn_url",
    "turn_credentials",
    "warn_about_configured_turn",
    "with_server_credentials",
]

logger = logging.getLogger(__name__)


def turn_credentials(
    secret: str, ttl_s: int, *, user: str | None = None, now: float | None = None
) -> tuple[str, str]:
    """(username, credential) valid for ``ttl_s`` seconds from ``now``."""
    expiry = int(now if now is not None else time.time()) + int(ttl_s)
    username = f"{expiry}:{user or secrets.token_hex(8)}"
    digest = hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    return username, base64.b64encode(digest).decode()


def is_turn_url(url: str) -> bool:
    return url.strip().lower().startswith(("turn:", "turns:"))


def _urls(server: Any) -> list[str]:
    urls = server.urls
    return [urls] if isinstance(urls, str) else list(urls)


def browser_ice_servers(
    servers: Iterable[Any], turn_secret: str | None, ttl_s: int, *, now: float | None = None
) -> list[dict[str, Any]]:
    """What ``/webrtc/config`` hands a browser: STUN as is, TURN with fresh credentials only.

    ``servers`` are ``RTCIceServer``-like objects (``urls``, ``username``, ``credential``).
    TURN servers are left out when no ``TURN_SECRET`` is set (a static password is never
    served).
    """
    out: list[dict[str, Any]] = []
    turn: list[str] = []
    for server in servers:
        urls = _urls(server)
        stun = [u for u in urls if not is_turn_url(u)]
        if stun:
            out.append({"urls": stun if len(stun) > 1 else stun[0]})
        turn.extend(u for u in urls if is_turn_url(u) and u not in turn)
    if turn and turn_secret:
        username, credential = turn_credentials(turn_secret, ttl_s, now=now)
        out.append({"urls": turn, "username": username, "credential": credential})
    return out


def warn_about_turn(servers: Iterable[Any], turn_secret: str | None) -> None:
    """At start: say what browsers will not get (static TURN passwords, TURN without a secret)."""
    servers = list(servers)
    static = [u for s in servers if s.credential for u in _urls(s) if is_turn_url(u)]
    if static:
        logger.warning(
            "WEBRTC_ICE_SERVERS carries a static TURN password for %s: it is used by the "
            "server's own peer only and never sent to browsers; set TURN_SECRET (the TURN "
            "server's static-auth-secret) so browsers get expiring credentials",
            ", ".join(static),
        )
    turn = [u for s in servers for u in _urls(s) if is_turn_url(u)]
    if turn and not turn_secret:
        logger.warning(
            "TURN servers %s are configured but TURN_SECRET is not set: browsers get no TURN "
            "server",
            ", ".join(turn),
        )


def with_server_credentials(servers: list[Any], turn_secret: str | None, ttl_s: int) -> list[Any]:
    """The server peer's ICE servers: TURN entries without a credential get fresh ones."""
    if not turn_secret:
        return servers
    from aiortc import RTCIceServer

    out = []
    for s in servers:
        if s.credential is None and any(is_turn_url(u) for u in _urls(s)):
            username, credential = turn_credentials(turn_secret, ttl_s)
            s = RTCIceServer(urls=s.urls, username=username, credential=credential)
        out.append(s)
    return out


def warn_about_configured_turn(ice_servers: Any, turn_secret: Any) -> None:
    """``warn_about_turn`` for the settings' values (``WEBRTC_ICE_SERVERS``, ``TURN_SECRET``)."""
    if ice_servers is None:  # nothing configured: leave aiortc unimported until an offer
        return
    try:
        from voxpipe.transports.webrtc import ice_servers_from
    except ImportError:  # no webrtc extra: offers say so
        return
    secret = turn_secret.get_secret_value() if turn_secret is not None else None
    warn_about_turn(ice_servers_from(ice_servers), secret)
