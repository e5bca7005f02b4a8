"""``GET /api/calls/{call_id}/recording``: the call's recording as ``audio/wav`` (2 channels,
caller left, bot right), decrypted as it streams, with single HTTP byte ranges (206,
``Content-Range``) for seeking. Each download is one audit row (``recording.read``) with the
range served; a recording that does not decrypt (altered, truncated, sealed elsewhere) is a
``decrypt_failed`` row and a 500 naming the problem, never audio.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from fastapi import HTTPException, Request
from starlette.responses import Response, StreamingResponse

from voxpipe.records.envelope import EnvelopeError
from voxpipe.records.playback import (
    first_window,
    open_recording,
    parse_range,
    stream_range,
    wav_fixed_header,
)
from voxpipe.records.recording import WAV_HEADER_LEN
from voxpipe.records.storage import RecordingStore, recording_store
from voxpipe.server.security_events import client_address

if TYPE_CHECKING:
    from voxpipe.records.runtime import RecordsBackend
    from voxpipe.records.tokens import Principal

__all__ = ["has_recording", "mark_recordings", "serve_recording"]

logger = logging.getLogger(__name__)


def _store(request: Request) -> RecordingStore:
    return recording_store(request.app.state.voxpipe.settings)


async def has_recording(request: Request, call_id: str) -> bool:
    """Whether the call has a recording (stored, or spooled waiting for upload)."""
    try:
        return await _store(request).exists(call_id)
    except Exception as exc:  # the object store is down: say so in the log, not as a 500
        logger.warning("cannot tell whether call %s has a recording: %s", call_id, exc)
        return False


async def mark_recordings(request: Request, calls: list[dict[str, object]]) -> None:
    """Set ``has_recording`` on each listed call (a page is at most 500: a few look-ups at once)."""
    gate = asyncio.Semaphore(16)  # an S3 HEAD each: bounded so a page does not flood the store

    async def mark(call: dict[str, object]) -> None:
        async with gate:
            call["has_recording"] = await has_recording(request, str(call["call_id"]))

    await asyncio.gather(*(mark(c) for c in calls))


async def serve_recording(
    request: Request, backend: RecordsBackend, who: Principal, call_id: str
) -> Response:
    """The recording response (the caller was authorized already)."""
    client = client_address(request)

    async def audit(outcome: str, detail: dict[str, object] | None = None) -> None:
        await backend.audit.append(
            actor=who.name,
            role=who.role,
            action="recording.read",
            call_id=call_id,
            outcome=outcome,
            client=client,
            detail=detail,
        )

    store = _store(request)
    ring = backend.calls.cipher.ring if backend.calls.cipher is not None else None
    try:
        obj = await open_recording(store, call_id)
        if obj is None:
            exists = await backend.calls.is_escalated(call_id) is not None
            if store.spool.ready_path(call_id).exists():
                await audit("not_uploaded_yet")
                raise HTTPException(503, "the recording is waiting for upload; retry later")
            await audit("no_recording" if exists else "not_found")
            raise HTTPException(404, "no recording" if exists else "no such call")
        first = await first_window(store, obj, ring)
        if len(first) < min(WAV_HEADER_LEN, obj.length):
            raise EnvelopeError("recording object truncated")
    except EnvelopeError as exc:
        await audit("decrypt_failed", {"error": str(exc)})
        raise HTTPException(500, f"the recording does not decrypt: {exc}") from exc
    except ValueError as exc:  # a call id that cannot name an object
        await audit("not_found")
        raise HTTPException(404, "no such call") from exc
    header = wav_fixed_header(obj, first)
    try:
        wanted = parse_range(request.headers.get("range"), obj.length)
    except ValueError as exc:
        await audit("bad_range", {"range": request.headers.get("range")})
        raise HTTPException(
            416, str(exc), headers={"Content-Range": f"bytes */{obj.length}"}
        ) from exc
    start, end = wanted if wanted is not None else (0, obj.length - 1)
    await audit("ok", {"range": [start, end], "bytes": end - start + 1})

    async def body() -> object:
        try:
            async for piece in stream_range(store, obj, ring, start, end, header):
                yield piece
        except EnvelopeError:
            # Headers are out already: cut the response short (the client sees fewer bytes
            # than Content-Length) rather than send audio that did not authenticate.
            logger.error("recording of call %s failed to decrypt mid-stream", call_id)
            raise

    headers = {
        "Accept-Ranges": "bytes",
        "Content-Length": str(end - start + 1),
        "Content-Disposition": f'inline; filename="{call_id}.wav"',
        "Cache-Control": "no-store",
    }
    status = 200
    if wanted is not None:
        status = 206
        headers["Content-Range"] = f"bytes {start}-{end}/{obj.length}"
    return StreamingResponse(body(), status_code=status, media_type="audio/wav", headers=headers)  # type: ignore[arg-type]
