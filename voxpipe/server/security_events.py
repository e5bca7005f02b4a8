"""Security events (refused signatures and tokens, claimed call ids): one logger, one shape.

Every event goes to the ``voxpipe.security`` logger at WARNING with the client address in the
message and in ``extra={"client": ..., "event": ...}``, so operators can alert on them.
"""

from __future__ import annotations

import logging
from typing import Any

__all__ = ["client_address", "security_event", "security_logger"]

security_logger = logging.getLogger("voxpipe.security")


def client_address(conn: Any) -> str:
    """``host:port`` of a Starlette request or websocket's peer ("-" when unknown)."""
    client = getattr(conn, "client", None)
    if client is None:
        return "-"
    return f"{client.host}:{client.port}"


def security_event(event: str, client: str, message: str, *, call_id: str | None = None) -> None:
    """Log one refused or suspicious request (``event`` is a short name, e.g. bad_signature)."""
    extra: dict[str, Any] = {"client": client, "event": event}
    if call_id:
        extra["call_id"] = call_id
    security_logger.warning("%s from %s: %s", event, client, message, extra=extra)
