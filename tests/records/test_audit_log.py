"""The hash-chained audit log: verified intact, edited and deleted rows named, concurrent
appends from separate connections never fork the chain (SQLite and Postgres)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from records_helpers import make_settings

from voxpipe.cli import main
from voxpipe.records.audit import AuditLog
from voxpipe.records.db import RecordsDB
from voxpipe.state import make_database


async def open_log(s: Any) -> AuditLog:
    db = RecordsDB(make_database(s))
    await db.start()
    return AuditLog(db)


async def fill(log: AuditLog, n: int) -> None:
    for i in range(n):
        await log.append(
            actor=f"user{i}", role="auditor", action="call.read", call_id=f"CA{i}", outcome="ok"
        )


async def tamper(log: AuditLog, sql: str) -> None:
    """Change the table behind the append-only triggers, as a database owner could."""
    if log.db.postgres:
        async with log.db.db.connection("tamper") as conn:
            await conn.execute("ALTER TABLE records_audit DISABLE TRIGGER USER")
            await conn.execute(sql)
            await conn.execute("ALTER TABLE records_audit ENABLE TRIGGER USER")
    else:
        async with log.db.transaction() as tx:
            await tx.execute("DROP TRIGGER records_audit_no_update")
            await tx.execute("DROP TRIGGER records_audit_no_delete")
            await tx.execute(sql)


async def test_rows_cannot_be_changed_through_sql_and_an_intact_log_verifies(
    tmp_path: Path, db_settings: dict[str, Any]
) -> None:
    log = await open_log(make_settings(tmp_path, **db_settings))
    try:
        await fill(log, 5)
        verdict = await log.verify()
        assert verdict.ok and verdict.rows == 5
        for sql in (
            "UPDATE records_audit SET outcome = 'denied' WHERE seq = 2",
            "DELETE FROM records_audit WHERE seq = 2",
        ):
            with pytest.raises(Exception, match="append-only"):
                async with log.db.transaction() as tx:
                    await tx.execute(sql)
        assert (await log.verify()).ok
    finally:
        await log.db.close()


@pytest.mark.parametrize(
    ("sql", "bad", "reason"),
    [
        ("UPDATE records_audit SET actor = 'someone-else' WHERE seq = 3", 3, "altered"),
        ("DELETE FROM records_audit WHERE seq = 3", 3, "missing"),
        ("UPDATE records_audit SET prev_hash = hash WHERE seq = 4", 4, "does not link"),
    ],
)
async def test_an_edited_or_deleted_row_is_named_by_verify_audit(
    tmp_path: Path,
    db_settings: dict[str, Any],
    sql: str,
    bad: int,
    reason: str,
    capsys: pytest.CaptureFixture[str],
    cli_env: Callable[..., None],
) -> None:
    s = make_settings(tmp_path, **db_settings)
    log = await open_log(s)
    try:
        await fill(log, 6)
        await tamper(log, sql)
        verdict = await log.verify()
        assert not verdict.ok and verdict.bad_seq == bad and reason in (verdict.reason or "")
    finally:
        await log.db.close()
    # The command says so too, with a non-zero exit naming the row.
    cli_env(**db_settings)
    code = await asyncio.to_thread(main, ["records", "verify-audit"])
    out = capsys.readouterr().out
    assert code == 1 and f"BROKEN at row {bad}" in out


async def test_concurrent_appends_from_separate_connections_keep_one_chain(
    tmp_path: Path, db_settings: dict[str, Any]
) -> None:
    s = make_settings(tmp_path, **db_settings)
    logs = [await open_log(s) for _ in range(3)]  # three pools / connections, like workers
    try:
        await asyncio.gather(*(fill(log, 15) for log in logs))
        verdict = await logs[0].verify()
        assert verdict.ok and verdict.rows == 45, verdict
    finally:
        for log in logs:
            await log.db.close()
