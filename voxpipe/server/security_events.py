"""Security events of the server: the peer address of a request, and the shared event logger.

Every event goes to the ``voxpipe.security`` logger at WARNING with the client address in the
message and in ``extra={"client": ..., "event": ...}`` (``voxpipe.logs.security_event``), so
operators can alert on them.
"""

from __future__ import annotations

from typing import Any

from voxpipe.logs import security_event

__all__ = ["client_address", "security_event"]


def client_address(conn: Any) -> str:
    """``host:port`` of a Starlette request or websocket's peer ("-" when unknown)."""
    client = getattr(conn, "client", None)
    if client is None:
        return "-"
    return f"{client.host}:{client.port}"
