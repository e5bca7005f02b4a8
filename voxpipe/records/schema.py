"""The call-records tables (issue 12), as migration statements for each dialect.

``records_audit`` is append-only: triggers refuse UPDATE and DELETE, and each row carries the
hash of the previous one, so that a row changed or removed behind the triggers' back is found by
``voxpipe records verify-audit``. ``records_tokens`` keeps only a SHA-256 of each API token.
"""

from __future__ import annotations

# Existing rows get the default six years from their call's end.
RECORDS_POSTGRES: tuple[str, ...] = (
    "ALTER TABLE transcripts ADD COLUMN caller_hmac TEXT",
    "ALTER TABLE transcripts ADD COLUMN retain_until TIMESTAMPTZ",
    "ALTER TABLE transcripts ADD COLUMN legal_hold BOOLEAN NOT NULL DEFAULT FALSE",
    "UPDATE transcripts SET retain_until = ended_at + interval '2190 days'",
    "CREATE INDEX transcripts_caller_hmac_idx ON transcripts (caller_hmac)",
    "CREATE INDEX transcripts_retain_until_idx ON transcripts (retain_until)",
    """CREATE TABLE records_audit (
        seq BIGINT PRIMARY KEY,
        at DOUBLE PRECISION NOT NULL,
        actor TEXT NOT NULL,
        role TEXT NOT NULL,
        action TEXT NOT NULL,
        call_id TEXT,
        outcome TEXT NOT NULL,
        client TEXT NOT NULL,
        detail TEXT NOT NULL,
        prev_hash TEXT NOT NULL,
        hash TEXT NOT NULL
    )""",
    "CREATE INDEX records_audit_call_id_idx ON records_audit (call_id)",
    """CREATE FUNCTION records_audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        RAISE EXCEPTION 'records_audit is append-only';
    END $$""",
    """CREATE TRIGGER records_audit_append_only BEFORE UPDATE OR DELETE ON records_audit
        FOR EACH ROW EXECUTE FUNCTION records_audit_append_only()""",
    """CREATE TABLE records_tokens (
        name TEXT PRIMARY KEY,
        role TEXT NOT NULL,
        token_hash TEXT NOT NULL UNIQUE,
        created_at DOUBLE PRECISION NOT NULL,
        revoked_at DOUBLE PRECISION
    )""",
)

RECORDS_SQLITE: tuple[str, ...] = (
    "ALTER TABLE transcripts ADD COLUMN caller_hmac TEXT",
    "ALTER TABLE transcripts ADD COLUMN retain_until REAL",
    "ALTER TABLE transcripts ADD COLUMN legal_hold INTEGER NOT NULL DEFAULT 0",
    "UPDATE transcripts SET retain_until = ended_at + 2190 * 86400.0",
    "CREATE INDEX transcripts_caller_hmac_idx ON transcripts (caller_hmac)",
    "CREATE INDEX transcripts_retain_until_idx ON transcripts (retain_until)",
    """CREATE TABLE records_audit (
        seq INTEGER PRIMARY KEY,
        at REAL NOT NULL,
        actor TEXT NOT NULL,
        role TEXT NOT NULL,
        action TEXT NOT NULL,
        call_id TEXT,
        outcome TEXT NOT NULL,
        client TEXT NOT NULL,
        detail TEXT NOT NULL,
        prev_hash TEXT NOT NULL,
        hash TEXT NOT NULL
    )""",
    "CREATE INDEX records_audit_call_id_idx ON records_audit (call_id)",
    """CREATE TRIGGER records_audit_no_update BEFORE UPDATE ON records_audit
        BEGIN SELECT RAISE(ABORT, 'records_audit is append-only'); END""",
    """CREATE TRIGGER records_audit_no_delete BEFORE DELETE ON records_audit
        BEGIN SELECT RAISE(ABORT, 'records_audit is append-only'); END""",
    """CREATE TABLE records_tokens (
        name TEXT PRIMARY KEY,
        role TEXT NOT NULL,
        token_hash TEXT NOT NULL UNIQUE,
        created_at REAL NOT NULL,
        revoked_at REAL
    )""",
)
