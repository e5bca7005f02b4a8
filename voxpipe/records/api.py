"""The records API under ``/api/``: calls, their records, the audit log, erasure.

Every request carries ``Authorization: Bearer <token>`` (``voxpipe records token create``, or
an OIDC JWT when ``RECORDS_JWKS_URL`` is set, see ``voxpipe.records.oidc``).
Roles: ``admin`` (everything), ``auditor`` (read calls, recordings, audit), ``agent`` (read calls
that escalated, caller number masked to its last 4 digits, no recordings). No or unknown token:
401; a role that does not allow the action: 403. Every request, allowed or not, is one row of
the audit log.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from starlette.responses import JSONResponse, Response

from voxpipe.records.oidc import looks_like_jwt
from voxpipe.records.recording_api import has_recording, mark_recordings, serve_recording
from voxpipe.records.repo import CallFilter, LegalHoldError
from voxpipe.records.runtime import RecordsBackend, backend_of
from voxpipe.records.tokens import Principal
from voxpipe.server.security_events import client_address, security_event

__all__ = ["PERMISSIONS", "records_router"]

# action -> roles allowed
PERMISSIONS: dict[str, frozenset[str]] = {
    "calls.list": frozenset({"admin", "auditor", "agent"}),
    "call.read": frozenset({"admin", "auditor", "agent"}),
    "recording.read": frozenset({"admin", "auditor"}),
    "audit.read": frozenset({"admin", "auditor"}),
    "call.delete": frozenset({"admin"}),
}
ANONYMOUS = Principal("anonymous", "none")


async def _backend(request: Request) -> RecordsBackend:
    from voxpipe.state.shared import shared_stores

    stores = await shared_stores(request.app.state.voxpipe.settings)
    backend = backend_of(stores.transcripts)
    if backend is None:  # pragma: no cover - the shared stores always have the records layer
        raise HTTPException(503, "records are not available on this server")
    return backend


async def _authorize(
    request: Request, backend: RecordsBackend, action: str, call_id: str | None = None
) -> Principal:
    """The caller's principal if allowed; otherwise audit the refusal and raise 401/403."""
    client = client_address(request)
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    principal: Principal | None = None
    token = token.strip()
    if scheme.lower() == "bearer" and token:
        if backend.jwt is not None and looks_like_jwt(token):
            principal = await backend.jwt.resolve(token)
        else:
            principal = await backend.tokens.resolve(token)
    if principal is None:
        outcome = "denied_no_token" if not header else "denied_bad_token"
        await backend.audit.append(
            actor=ANONYMOUS.name,
            role=ANONYMOUS.role,
            action=action,
            call_id=call_id,
            outcome=outcome,
            client=client,
        )
        security_event(
            "records_token_refused",
            client,
            f"records API {action} refused: {'no' if not header else 'unknown or revoked'} token",
        )
        raise HTTPException(
            401, "a bearer token is required", headers={"WWW-Authenticate": "Bearer"}
        )
    if principal.role not in PERMISSIONS[action]:
        await _deny(backend, principal, action, call_id, client)
    return principal


async def _deny(
    backend: RecordsBackend, who: Principal, action: str, call_id: str | None, client: str
) -> None:
    await backend.audit.append(
        actor=who.name,
        role=who.role,
        action=action,
        call_id=call_id,
        outcome="denied_role",
        client=client,
    )
    security_event(
        "records_role_refused",
        client,
        f"records API {action} refused for {who.name} (role {who.role})",
    )
    raise HTTPException(403, f"role {who.role} may not {action.replace('.', ' ')}")


def _time(value: str | None, name: str) -> float | None:
    """Epoch seconds or ISO 8601 (``Z`` allowed) -> epoch seconds."""
    if value is None or value == "":
        return None
    try:
        return float(value)
    except ValueError:
        pass
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise HTTPException(400, f"{name}: give epoch seconds or an ISO 8601 time") from exc
    return parsed.timestamp()


def _bool(value: str | None, name: str) -> bool | None:
    if value is None or value == "":
        return None
    if value.lower() in ("1", "true", "yes"):
        return True
    if value.lower() in ("0", "false", "no"):
        return False
    raise HTTPException(400, f"{name}: true or false")


def _int(value: str | None, name: str, default: int) -> int:
    if value is None or value == "":
        return default
    try:
        n = int(value)
    except ValueError as exc:
        raise HTTPException(400, f"{name}: an integer") from exc
    if n < 1:
        raise HTTPException(400, f"{name}: at least 1")
    return n


def records_router() -> APIRouter:
    """The ``/api/`` routes (included by ``create_app``)."""
    router = APIRouter(prefix="/api")

    @router.get("/calls", include_in_schema=False)
    async def list_calls(request: Request) -> Response:
        backend = await _backend(request)
        who = await _authorize(request, backend, "calls.list")
        q = request.query_params
        f = CallFilter(
            start=_time(q.get("from"), "from"),
            end=_time(q.get("to"), "to"),
            caller=q.get("caller") or None,
            escalated=_bool(q.get("escalated"), "escalated"),
            limit=min(_int(q.get("limit"), "limit", 50), 500),
            cursor=q.get("cursor") or None,
        )
        agent = who.role == "agent"
        try:
            calls, nxt = await backend.calls.page(f, escalated_only=agent, mask=agent)
        except ValueError as exc:
            raise HTTPException(400, str(exc)) from exc
        await mark_recordings(request, calls)
        await backend.audit.append(
            actor=who.name,
            role=who.role,
            action="calls.list",
            outcome="ok",
            client=client_address(request),
            detail={
                "returned": len(calls),
                "filters": {k: v for k, v in q.items() if k != "caller"},
                "by_caller": bool(f.caller),
            },
        )
        return JSONResponse({"calls": calls, "next_cursor": nxt})

    @router.get("/calls/{call_id}", include_in_schema=False)
    async def read_call(request: Request, call_id: str) -> Response:
        backend = await _backend(request)
        who = await _authorize(request, backend, "call.read", call_id)
        client = client_address(request)
        agent = who.role == "agent"
        if agent and await backend.calls.is_escalated(call_id) is False:
            await _deny(backend, who, "call.read", call_id, client)
        record = await backend.calls.get(call_id, mask=agent)
        await backend.audit.append(
            actor=who.name,
            role=who.role,
            action="call.read",
            call_id=call_id,
            outcome="ok" if record is not None else "not_found",
            client=client,
        )
        if record is None:
            raise HTTPException(404, "no such call")
        record["has_recording"] = await has_recording(request, call_id)
        return JSONResponse(record)

    @router.get("/calls/{call_id}/recording", include_in_schema=False)
    async def read_recording(request: Request, call_id: str) -> Response:
        backend = await _backend(request)
        who = await _authorize(request, backend, "recording.read", call_id)
        return await serve_recording(request, backend, who, call_id)

    @router.get("/audit", include_in_schema=False)
    async def read_audit(request: Request) -> Response:
        backend = await _backend(request)
        who = await _authorize(request, backend, "audit.read")
        q = request.query_params
        entries = await backend.audit.entries(
            call_id=q.get("call_id") or None,
            actor=q.get("actor") or None,
            since=_time(q.get("since"), "since"),
            after_seq=_int(q.get("after"), "after", 0),
            limit=min(_int(q.get("limit"), "limit", 1000), 5000),
        )
        await backend.audit.append(
            actor=who.name,
            role=who.role,
            action="audit.read",
            call_id=q.get("call_id") or None,
            outcome="ok",
            client=client_address(request),
            detail={"returned": len(entries)},
        )
        body: dict[str, Any] = {"entries": [e.to_dict() for e in entries]}
        return JSONResponse(body)

    @router.delete("/calls/{call_id}", include_in_schema=False)
    async def erase_call(request: Request, call_id: str) -> Response:
        backend = await _backend(request)
        who = await _authorize(request, backend, "call.delete", call_id)
        try:
            found = await backend.calls.erase(call_id, who, client_address(request))
        except LegalHoldError as exc:
            raise HTTPException(409, str(exc)) from exc
        if not found:
            raise HTTPException(404, "no such call")
        return JSONResponse({"call_id": call_id, "deleted": True})

    return router
