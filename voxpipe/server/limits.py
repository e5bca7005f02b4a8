"""What the server takes on: concurrent calls per worker and per carrier, request body size,
JSON nesting.

``CallLimiter`` counts the calls this worker holds (a media stream from its upgrade to its
close; a WebRTC offer from the offer until its call ends or the offer expires). ``EdgeMiddleware``
applies the limits before any route runs: request bodies are read into memory up to
``MAX_BODY_BYTES`` (beyond it 413 without reading the rest), bodies that are JSON are refused
(400) when nested deeper than ``MAX_JSON_DEPTH`` (parsers recurse, and Python's raises
RecursionError - a 500 - at about 1000 levels), voice webhooks get a busy answer and media
streams an HTTP 503 when the worker or carrier is full.
"""

from __future__ import annotations

import json
import logging
import re
from collections import Counter
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

from voxpipe.logs import security_event

__all__ = [
    "MAX_JSON_DEPTH",
    "CallLimiter",
    "CallSlot",
    "EdgeMiddleware",
    "json_depth_exceeds",
    "parse_carrier_limits",
]

logger = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

# Webhook and offer bodies nest 2-3 levels; 32 leaves room and stays far from recursion limits.
MAX_JSON_DEPTH = 32
_CARRIER_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")
_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")

# Voice webhooks: a busy answer in the carrier's language instead of a call (False: HTTP 503).
_BUSY_TWIML = b'<?xml version="1.0" encoding="UTF-8"?><Response><Reject reason="busy"/></Response>'
WEBHOOK_ROUTES: dict[str, tuple[str, bool]] = {
    "/twilio/voice": ("twilio", True),
    "/telnyx/voice": ("telnyx", True),  # TeXML has Twilio's <Say> and <Hangup>
    # An NCCO cannot refuse a call; a 503 sends Vonage to the fallback answer URL if one is set.
    "/vonage/answer": ("vonage", False),
}
# The scope key under which the overflow lookup leaves the stream base URL of a server with room.
OVERFLOW_SCOPE_KEY = "voxpipe.overflow_stream_base"


def busy_twiml(message: str | None, language: str = "en-US") -> bytes:
    """The busy answer: ``message`` spoken, then a hang-up (no message: a busy signal)."""
    if not message:
        return _BUSY_TWIML
    from xml.sax.saxutils import escape, quoteattr

    return (
        '<?xml version="1.0" encoding="UTF-8"?><Response>'
        f"<Say language={quoteattr(language)}>{escape(message)}</Say><Hangup/></Response>"
    ).encode()


# Media stream paths (with or without a /{token} tail) by carrier.
STREAM_ROUTES: dict[str, str] = {
    "/twilio/stream": "twilio",
    "/telnyx/stream": "telnyx",
    "/vonage/stream": "vonage",
}


def parse_carrier_limits(spec: str | None) -> dict[str, int]:
    """``"twilio:100,telnyx:50"`` -> ``{"twilio": 100, "telnyx": 50}`` (``MAX_CALLS_PER_CARRIER``)."""
    limits: dict[str, int] = {}
    for part in (spec or "").split(","):
        part = part.strip()
        if not part:
            continue
        name, sep, value = part.partition(":")
        name = name.strip().lower()
        if not sep or not _CARRIER_NAME.match(name) or not value.strip().isdigit():
            raise ValueError(
                f"MAX_CALLS_PER_CARRIER: bad entry {part!r}; expected carrier:count pairs "
                "separated by commas, e.g. twilio:100,telnyx:50,webrtc:10"
            )
        limits[name] = int(value)
    return limits


@dataclass(slots=True, eq=False)
class CallSlot:
    """One call's place in the limiter; ``release()`` gives it back (once)."""

    limiter: CallLimiter
    carrier: str
    released: bool = False

    def release(self) -> None:
        if not self.released:
            self.released = True
            self.limiter._release(self.carrier)


class CallLimiter:
    """Concurrent calls on this worker: at most ``max_calls`` (0: no limit), and per carrier."""

    def __init__(self, max_calls: int = 0, per_carrier: dict[str, int] | None = None) -> None:
        self.max_calls = max_calls
        self.per_carrier = dict(per_carrier or {})
        self.active: Counter[str] = Counter()
        self.refused: Counter[str] = Counter()
        # Set on SIGTERM (issue 15): a draining worker takes no new call.
        self.draining = False

    @property
    def total(self) -> int:
        return sum(self.active.values())

    def has_room(self, carrier: str) -> bool:
        """Whether one more ``carrier`` call would be accepted now."""
        if self.draining:
            return False
        if self.max_calls and self.total >= self.max_calls:
            return False
        cap = self.per_carrier.get(carrier)
        return cap is None or self.active[carrier] < cap

    def acquire(self, carrier: str) -> CallSlot | None:
        """A slot for one call, or None (and the refusal counted) when full."""
        if not self.has_room(carrier):
            self.refused[carrier] += 1
            return None
        self.active[carrier] += 1
        return CallSlot(self, carrier)

    def _release(self, carrier: str) -> None:
        self.active[carrier] -= 1
        if self.active[carrier] <= 0:
            del self.active[carrier]

    @property
    def full(self) -> bool:
        """Whether the worker holds as many calls as it takes (MAX_CALLS / MAX_CALLS_PER_WORKER)."""
        return bool(self.max_calls) and self.total >= self.max_calls

    def describe(self, carrier: str) -> str:
        if self.draining:
            return "this worker is draining (shutting down)"
        cap = self.per_carrier.get(carrier)
        if cap is not None and self.active[carrier] >= cap:
            return f"{carrier} calls at their limit ({cap}, MAX_CALLS_PER_CARRIER)"
        return f"calls at this worker's limit ({self.max_calls}, MAX_CALLS_PER_WORKER/MAX_CALLS)"


def json_depth_exceeds(body: bytes, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether a JSON document nests arrays/objects deeper than ``limit`` (a fast bracket scan).

    Strings are removed first (brackets inside them do not count); the scan needs no parse,
    so a hostile document costs one pass over at most MAX_BODY_BYTES.
    """
    brackets = _JSON_STRING.sub(b"", body).translate(None, _NOT_BRACKETS)
    if len(brackets) <= limit:
        return False
    depth = 0
    for b in brackets:
        if b in b"[{":
            depth += 1
            if depth > limit:
                return True
        else:
            depth -= 1
    return False


def _route(path: str, table: dict[str, Any]) -> Any:
    for prefix, value in table.items():
        if path == prefix or path.startswith(prefix + "/"):
            return value
    return None


def _client(scope: Scope) -> str | None:
    client = scope.get("client")
    return f"{client[0]}" if client else None


class EdgeMiddleware:
    """ASGI middleware: body cap and JSON depth before parsing, call limits before routing."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        limiter: CallLimiter,
        max_body_bytes: int,
        on_refused: Callable[[str, str], None] | None = None,
        busy_answer: bytes = _BUSY_TWIML,
        overflow: Callable[[str], Awaitable[str | None]] | None = None,
    ) -> None:
        self.app = app
        self.limiter = limiter
        self.max_body_bytes = max_body_bytes
        self._on_refused = on_refused  # (carrier, reason) -> metrics
        self._busy = busy_answer  # TwiML/TeXML for a full worker
        # carrier -> stream base URL of another server with room (the worker registry), or None
        self._overflow = overflow

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "websocket":
            await self._websocket(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    # ------------------------------------------------------------------ http

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        client = _client(scope)
        body = await self._read_body(scope, receive, send, client)
        if body is None:
            return  # refused (413) or the client went away
        stripped = body.lstrip()
        if stripped[:1] in (b"{", b"[") and json_depth_exceeds(stripped):
            security_event(
                "json_too_deep",
                client,
                f"{scope.get('method')} {path}: JSON nested deeper than {MAX_JSON_DEPTH}",
            )
            await _respond(send, 400, f"JSON nested deeper than {MAX_JSON_DEPTH} levels")
            return
        webhook = _route(path, WEBHOOK_ROUTES)
        if webhook is not None:
            carrier, speaks = webhook
            if not self.limiter.has_room(carrier):
                why = self.limiter.describe(carrier)
                target = await self._overflow(carrier) if self._overflow is not None else None
                if target is not None:
                    # Another server has room: the webhook's answer streams the call there.
                    logger.info("%s voice webhook: %s; streaming to %s", carrier, why, target)
                    if self._on_refused is not None:
                        self._on_refused(carrier, "overflow")
                    scope[OVERFLOW_SCOPE_KEY] = target
                else:
                    self.limiter.refused[carrier] += 1
                    logger.warning("%s voice webhook answered busy: %s", carrier, why)
                    if self._on_refused is not None:
                        self._on_refused(carrier, "busy")
                    if speaks:
                        await _respond(send, 200, self._busy, "application/xml")
                    else:
                        retry = [(b"retry-after", b"5")]
                        await _respond(send, 503, f"busy: {why}", headers=retry)
                    return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # after the body: only a disconnect can come

        await self.app(scope, replay, send)

    async def _read_body(
        self, scope: Scope, receive: Receive, send: Send, client: str | None
    ) -> bytes | None:
        limit = self.max_body_bytes
        length = None
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                length = value
        if length is not None and (not length.isdigit() or int(length) > limit):
            shown = length.decode("latin-1")[:20]
            self._too_big(scope, client, shown)
            await _respond(
                send, 413, f"request body of {shown} bytes exceeds the limit of {limit} bytes"
            )
            return None
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:  # chunked upload without a length: stop reading here
                self._too_big(scope, client, f"more than {limit}")
                await _respond(send, 413, f"request body exceeds the limit of {limit} bytes")
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    def _too_big(self, scope: Scope, client: str | None, size: str) -> None:
        security_event(
            "body_too_large",
            client,
            f"{scope.get('method')} {scope.get('path')}: body of {size} bytes refused "
            f"(MAX_BODY_BYTES={self.max_body_bytes})",
        )

    # ------------------------------------------------------------------ websocket

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        carrier = _route(scope.get("path", ""), STREAM_ROUTES)
        if carrier is None:
            await self.app(scope, receive, send)
            return
        slot = self.limiter.acquire(carrier)
        if slot is None:
            why = self.limiter.describe(carrier)
            logger.warning("%s stream refused: %s", carrier, why)
            if self._on_refused is not None:
                self._on_refused(carrier, "busy")
            await _deny_websocket(scope, receive, send, f"busy: {why}")
            return
        try:
            await self.app(scope, receive, send)
        finally:
            slot.release()


async def _respond(
    send: Send,
    status: int,
    body: str | bytes,
    media_type: str = "application/octet-stream",
    headers: list[tuple[bytes, bytes]] | None = None,
) -> None:
    if isinstance(body, str):  # an error: JSON, as the routes' own errors
        data = json.dumps({"error": body}).encode()
        media_type = "application/json"
    else:
        data = body
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", media_type.encode()),
                (b"content-length", str(len(data)).encode()),
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": data})


async def _deny_websocket(scope: Scope, receive: Receive, send: Send, reason: str) -> None:
    """Refuse a websocket upgrade with HTTP 503 (a close before accept where that is unsupported)."""
    message = await receive()
    if message["type"] != "websocket.connect":
        return
    if "websocket.http.response" in scope.get("extensions", {}):
        data = json.dumps({"error": reason}).encode()
        await send(
            {
                "type": "websocket.http.response.start",
                "status": 503,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(data)).encode()),
                    (b"retry-after", b"5"),
                ],
            }
        )
        await send({"type": "websocket.http.response.body", "body": data})
    else:
        await send({"type": "websocket.close", "code": 1013, "reason": reason[:120]})
