"""Process logging: text or JSON lines, the call start/end lines, and security events.

``configure_logging(level, fmt)`` installs one handler on the root logger; every record carries
the call id of its call (``call_id``, ``-`` outside calls). ``fmt="json"`` writes one JSON
object per line: ``time``, ``level``, ``logger``, ``message``, ``call_id`` and the record's
extra fields (``client``, ``event``, ``carrier``, ...), for log shippers that parse lines.

Security events (a refused token or signature, a claimed call id, an over-limit stream) go to
the ``voxpipe.security`` logger at WARNING, with the client address in the message and in the
``client`` field, and a short ``event`` name to alert on.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any, Literal

from voxpipe.pipelines.logs import LOG_FORMAT, CallIdFilter

__all__ = [
    "CALLS_LOGGER",
    "SECURITY_LOGGER",
    "JsonFormatter",
    "call_ended",
    "call_started",
    "configure_logging",
    "security_event",
]

SECURITY_LOGGER = "voxpipe.security"
CALLS_LOGGER = "voxpipe.calls"

security_log = logging.getLogger(SECURITY_LOGGER)
calls_log = logging.getLogger(CALLS_LOGGER)

# Attributes every LogRecord has: anything else on a record came from ``extra=``.
_STANDARD = frozenset(
    vars(logging.LogRecord("", 0, "", 0, "", None, None)).keys() | {"message", "asctime"}
)


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message, call_id and the extra fields."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": _iso_time(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "call_id": getattr(record, "call_id", "-"),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and key not in out and not key.startswith("_"):
                out[key] = value
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        if record.stack_info:
            out["stack"] = self.formatStack(record.stack_info)
        # default=str: an extra field that is not JSON (a Path, an exception) must not lose
        # the line.
        return json.dumps(out, default=str, ensure_ascii=False)


def _iso_time(created: float) -> str:
    seconds = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created))
    return f"{seconds}.{int(created % 1 * 1000):03d}Z"


def configure_logging(
    level: str | int = "INFO", fmt: Literal["text", "json"] | str = "text"
) -> None:
    """Route every logger to stderr at ``level``, as text lines or JSON objects."""
    if fmt not in ("text", "json"):
        raise ValueError(f"log format must be 'text' or 'json', not {fmt!r}")
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(CallIdFilter())
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(LOG_FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper() if isinstance(level, str) else level)


def security_event(event: str, client: str | None, message: str, **fields: Any) -> None:
    """Log a refused or abusive request on ``voxpipe.security`` at WARNING.

    ``event`` is a short name (``webrtc_token_refused``); ``client`` the peer's address.
    """
    who = client or "unknown"
    extra: dict[str, Any] = {"client": who, "event": event, **fields}
    security_log.warning("%s from %s: %s", event, who, message, extra=extra)


def call_started(call_id: str, carrier: str, client: str | None = None) -> None:
    """The one INFO line of a call's start."""
    calls_log.info(
        "call started: %s call %s",
        carrier,
        call_id,
        extra={"call_id": call_id, "carrier": carrier, "client": client, "event": "call_start"},
    )


def call_ended(
    call_id: str, carrier: str, outcome: str, duration_s: float, detail: str = "", **fields: Any
) -> None:
    """The one INFO line of a call's end: outcome (how it ended) and duration."""
    calls_log.info(
        "call ended: %s call %s, %s after %.1f s%s",
        carrier,
        call_id,
        outcome,
        duration_s,
        f" ({detail})" if detail else "",
        extra={
            "call_id": call_id,
            "carrier": carrier,
            "outcome": outcome,
            "duration_s": round(duration_s, 3),
            "event": "call_end",
            **fields,
        },
    )
