"""The records API over a real server socket: 401 without a valid token, 403 for a role that
may not, 200 otherwise; the agent's view is narrowed and masked; every request is audited
(SQLite and Postgres)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from records_helpers import make_settings, new_key

from voxpipe.cli import main
from voxpipe.records.runtime import backend_of
from voxpipe.server.app import create_app
from voxpipe.server.run import running_server
from voxpipe.state.session import Turn
from voxpipe.state.shared import close_shared_stores, shared_stores
from voxpipe.state.transcripts import Transcript

ROOT = Path(__file__).resolve().parents[2]
ECHO_BOT = ROOT / "bots" / "echo.py"
ROLES = ("admin", "auditor", "agent")


def record(call_id: str, *, escalated: bool) -> Transcript:
    now = time.time()
    return Transcript(
        call_id,
        now - 60,
        now,
        turns=[Turn("user", f"hello from {call_id}", now - 50, now - 40)],
        caller="+447700900123",
        escalated=escalated,
        escalation_reason="wants a human" if escalated else None,
        metadata={"consent": "dtmf", "escalation_summary": "asked twice"} if escalated else {},
    )


# (method, path, status per role): what each role may do.
MATRIX: list[tuple[str, str, dict[str, int]]] = [
    ("GET", "/api/calls", {"admin": 200, "auditor": 200, "agent": 200}),
    ("GET", "/api/calls/ESC", {"admin": 200, "auditor": 200, "agent": 200}),
    ("GET", "/api/calls/PLAIN", {"admin": 200, "auditor": 200, "agent": 403}),
    ("GET", "/api/calls/ESC/recording", {"admin": 404, "auditor": 404, "agent": 403}),
    ("GET", "/api/audit", {"admin": 200, "auditor": 200, "agent": 403}),
    ("DELETE", "/api/calls/GONE", {"admin": 200, "auditor": 403, "agent": 403}),
]


async def test_roles_over_a_real_socket(
    tmp_path: Path,
    db_settings: dict[str, Any],
    cli_env: Callable[..., None],
    capsys: pytest.CaptureFixture[str],
) -> None:
    kek = new_key()
    s = make_settings(tmp_path, records_kek=kek, **db_settings)
    # Tokens from the command line: the token is the last line of stdout.
    cli_env(records_kek=kek, **db_settings)
    tokens: dict[str, str] = {}
    for role in ROLES:
        assert (
            await asyncio.to_thread(
                main, ["records", "token", "create", "--role", role, "--name", f"{role}-1"]
            )
            == 0
        )
        tokens[role] = capsys.readouterr().out.strip().splitlines()[-1]
    assert (
        await asyncio.to_thread(
            main, ["records", "token", "create", "--role", "admin", "--name", "old"]
        )
        == 0
    )
    revoked = capsys.readouterr().out.strip().splitlines()[-1]
    assert await asyncio.to_thread(main, ["records", "token", "revoke", "old"]) == 0

    stores = await shared_stores(s)
    for cid, esc in (("ESC", True), ("PLAIN", False), ("GONE", True), ("HELD", True)):
        assert await stores.transcripts.write(record(cid, escalated=esc))
    backend = backend_of(stores.transcripts)
    assert backend is not None
    from voxpipe.records.tokens import Principal

    await backend.calls.set_hold("HELD", True, Principal("test", "admin"))
    app = create_app(ECHO_BOT, s, batched_vad=None)
    try:
        async with running_server(app, s) as srv, httpx.AsyncClient(base_url=srv.url) as http:
            for method, path, allowed in MATRIX:
                # No token, a wrong one, a revoked one: 401 everywhere.
                for headers in ({}, {"authorization": "Bearer nope"}, _auth(revoked)):
                    r = await http.request(method, path, headers=headers)
                    assert r.status_code == 401, (method, path, headers)
                    assert r.headers["www-authenticate"] == "Bearer"
                for role in ("agent", "auditor", "admin"):  # admin last: it deletes GONE
                    r = await http.request(method, path, headers=_auth(tokens[role]))
                    assert r.status_code == allowed[role], (method, path, role, r.text)
            # What each role sees.
            r = await http.get("/api/calls", headers=_auth(tokens["agent"]))
            calls = r.json()["calls"]
            assert sorted(c["call_id"] for c in calls) == ["ESC", "HELD"]  # escalated only
            assert {c["caller"] for c in calls} == {"*********0123"}
            r = await http.get("/api/calls/ESC", headers=_auth(tokens["agent"]))
            assert r.json()["caller"] == "*********0123"
            r = await http.get("/api/calls/ESC", headers=_auth(tokens["auditor"]))
            body = r.json()
            assert body["caller"] == "+447700900123" and body["has_recording"] is False
            assert body["turns"][0]["text"] == "hello from ESC"
            assert body["escalation"]["reason"] == "wants a human"
            assert body["escalation"]["summary"] == "asked twice" and body["consent"] == "dtmf"
            r = await http.get("/api/calls/ESC/recording", headers=_auth(tokens["auditor"]))
            assert r.json()["detail"] == "no recording"
            r = await http.get(
                "/api/calls",
                params={"caller": "+44 7700 900123", "escalated": "false"},
                headers=_auth(tokens["admin"]),
            )
            assert [c["call_id"] for c in r.json()["calls"]] == ["PLAIN"]
            r = await http.get(
                "/api/calls", params={"from": "yesterday"}, headers=_auth(tokens["admin"])
            )
            assert r.status_code == 400
            # Erasure: gone afterwards; refused under legal hold.
            assert (
                await http.get("/api/calls/GONE", headers=_auth(tokens["admin"]))
            ).status_code == 404
            r = await http.delete("/api/calls/HELD", headers=_auth(tokens["admin"]))
            assert r.status_code == 409
            # The audit log has every request, denied ones with the client's address.
            r = await http.get(
                "/api/audit", params={"call_id": "PLAIN"}, headers=_auth(tokens["auditor"])
            )
            rows = r.json()["entries"]
            denied = [e for e in rows if e["outcome"] == "denied_role"]
            assert [(e["actor"], e["action"]) for e in denied] == [("agent-1", "call.read")]
            assert denied[0]["client"].startswith("127.0.0.1:")
            assert sum(e["outcome"] == "denied_bad_token" for e in rows) == 2  # wrong + revoked
            assert sum(e["outcome"] == "denied_no_token" for e in rows) == 1
            r = await http.get(
                "/api/audit", params={"actor": "admin-1"}, headers=_auth(tokens["admin"])
            )
            actions = [(e["action"], e["call_id"], e["outcome"]) for e in r.json()["entries"]]
            assert ("call.delete", "GONE", "deleted") in actions
            assert ("call.delete", "HELD", "refused_legal_hold") in actions
            assert ("recording.read", "ESC", "no_recording") in actions
            # While the server runs: its shutdown closes the shared stores this reads through.
            assert (await backend.audit.verify()).ok
    finally:
        await close_shared_stores()


def _auth(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}
