"""The locale table in real SQLite and Postgres: seeded, read per call, extended at run time."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from voxpipe.config.locale_table import LocaleTable
from voxpipe.config.locales import CallLocaleHints, LocaleRow, load_seed_rows
from voxpipe.config.settings import VoxpipeSettings

NL_ROW = (
    "nl-NL", "nova-2", "nl", "voice-nl", "nl", "Hallo, bedankt voor het bellen.", "NL", "31", None,
)  # fmt: skip


class Backend:
    """One database under test plus a way to add a row behind the table's back."""

    def __init__(self, kind: str, table: LocaleTable, where: str, schema: str | None) -> None:
        self.kind, self.table, self.where, self.schema = kind, table, where, schema

    async def insert_raw(self, values: tuple[object, ...]) -> None:
        """An operator adding a row with plain SQL from another connection."""
        columns = "locale, stt_model, stt_language, tts_voice, tts_language, greeting, " \
            "countries, calling_codes, ivr_digit"  # fmt: skip
        if self.kind == "sqlite":
            with sqlite3.connect(self.where) as conn:
                conn.execute(f"INSERT INTO locales ({columns}) VALUES (?,?,?,?,?,?,?,?,?)", values)
        else:
            conn = await asyncpg.connect(self.where)
            try:
                await conn.execute(
                    f'INSERT INTO "{self.schema}".locales ({columns}) '
                    "VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9)",
                    *values,
                )
            finally:
                await conn.close()

    async def update_greeting(self, locale: str, greeting: str) -> None:
        if self.kind == "sqlite":
            with sqlite3.connect(self.where) as conn:
                conn.execute("UPDATE locales SET greeting = ? WHERE locale = ?", (greeting, locale))
        else:
            conn = await asyncpg.connect(self.where)
            try:
                await conn.execute(
                    f'UPDATE "{self.schema}".locales SET greeting = $1 WHERE locale = $2',
                    greeting,
                    locale,
                )
            finally:
                await conn.close()

    def new_table(self, **kwargs: object) -> LocaleTable:
        if self.kind == "sqlite":
            return LocaleTable.sqlite(self.where, **kwargs)  # type: ignore[arg-type]
        return LocaleTable.postgres(self.where, schema=self.schema, **kwargs)  # type: ignore[arg-type]


@pytest.fixture(params=["sqlite", "postgres"])
def backend_spec(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, str, str | None]:
    """(kind, path or DSN, schema); sync so the async Postgres fixture is set up outside a loop."""
    if request.param == "sqlite":
        return "sqlite", str(tmp_path / "voxpipe.sqlite3"), None
    return "postgres", request.getfixturevalue("pg_dsn"), request.getfixturevalue("pg_schema")


@pytest.fixture
async def backend(backend_spec: tuple[str, str, str | None]) -> AsyncIterator[Backend]:
    kind, where, schema = backend_spec
    table = (
        LocaleTable.sqlite(where)
        if kind == "sqlite"
        else LocaleTable.postgres(where, schema=schema)
    )
    b = Backend(kind, table, where, schema)
    await b.table.start()
    yield b
    await b.table.close()


async def test_start_seeds_the_shipped_rows(backend: Backend) -> None:
    rows = await backend.table.rows()
    assert sorted(r.locale for r in rows) == sorted(r.locale for r in load_seed_rows())
    gb = next(r for r in rows if r.locale == "en-GB")
    assert gb.calling_codes == ("44",) and "GB" in gb.countries


async def test_plus_44_caller_picks_en_gb_from_the_database(backend: Backend) -> None:
    choice = await backend.table.choose(CallLocaleHints(caller="+447700900123"))
    assert choice.row.locale == "en-GB" and choice.source == "calling_code"
    by_country = await backend.table.choose(CallLocaleHints(from_country="GB"))
    assert by_country.row.locale == "en-GB"


async def test_row_added_at_run_time_is_used_after_the_next_background_refresh(
    backend: Backend,
) -> None:
    table = backend.new_table(refresh_s=0.05)
    await table.start()
    try:
        dutch_caller = CallLocaleHints(caller="+31201234567")
        before = table.choose_now(dutch_caller)
        assert (before.row.locale, before.source) == ("en-US", "default")

        await backend.insert_raw(NL_ROW)
        seen = table.generation
        await table.wait_refreshed(seen)  # the background task's next read, no restart

        after = table.choose_now(dutch_caller)
        assert (after.row.locale, after.source) == ("nl-NL", "calling_code")
        assert after.row.greeting == "Hallo, bedankt voor het bellen."
        assert after.row.tts_voice == "voice-nl" and after.row.stt_language == "nl"
    finally:
        await table.close()


async def test_upsert_adds_and_replaces_rows(backend: Backend) -> None:
    row = LocaleRow("ja-JP", "nova-2", "ja", "voice-ja", "ja", "もしもし", ("JP",), ("81",), "5")
    await backend.table.upsert(row)
    assert (await backend.table.choose(CallLocaleHints(ivr_digit="5"))).row == row
    changed = LocaleRow("ja-JP", "nova-3", "ja", "voice-ja2", "ja", "こんにちは", ("JP",), ("81",))
    await backend.table.upsert(changed)
    assert (await backend.table.choose(CallLocaleHints(caller="+81312345678"))).row == changed
    # Another process sees it too.
    other = backend.new_table()
    await other.start()
    try:
        assert ("ja-JP", "nova-3") in [(r.locale, r.stt_model) for r in await other.rows()]
    finally:
        await other.close()


async def test_restart_seeds_missing_rows_but_keeps_operator_edits(backend: Backend) -> None:
    await backend.update_greeting("en-GB", "Good afternoon, operator's greeting.")
    extra_seed = [
        *load_seed_rows(),
        LocaleRow("sv-SE", "nova-2", "sv", "v", "sv", "Hej", ("SE",), ("46",)),
    ]
    table = backend.new_table(seed_rows=extra_seed)
    await table.start()
    try:
        rows = {r.locale: r for r in await table.rows()}
        assert rows["en-GB"].greeting == "Good afternoon, operator's greeting."
        assert "sv-SE" in rows
    finally:
        await table.close()


async def test_calls_are_chosen_from_memory_until_the_next_refresh(backend: Backend) -> None:
    table = backend.new_table(refresh_s=3600.0)
    await table.start()
    try:
        caller = CallLocaleHints(caller="+31201234567")
        assert table.choose_now(caller).row.locale == "en-US"
        assert table.source == "database" and not table.outage
        await backend.insert_raw(NL_ROW)
        # A call start reads memory, never the database: the new row waits for a refresh.
        assert table.choose_now(caller).row.locale == "en-US"
        assert await table.refresh()
        assert table.choose_now(caller).row.locale == "nl-NL"
    finally:
        await table.close()


async def test_rows_carry_the_consent_policy(backend: Backend) -> None:
    rows = {r.locale: r for r in await backend.table.rows()}
    assert rows["de-DE"].consent_policy == "ivr" and rows["en-US"].consent_policy == "notice"
    row = LocaleRow("sv-SE", "nova-2", "sv", "v", "sv", "Hej", ("SE",), ("46",), consent="none")
    await backend.table.upsert(row)
    assert backend.table.choose_now(CallLocaleHints(from_country="SE")).row.consent == "none"
    # A row with no policy gets its countries' default.
    await backend.insert_raw(NL_ROW)
    await backend.table.refresh()
    assert {r.locale: r for r in backend.table.rows_now()}["nl-NL"].consent_policy == "ivr"


async def test_from_settings_picks_the_database(
    tmp_path: Path, pg_dsn: str, pg_schema: str
) -> None:
    path = tmp_path / "from-settings.sqlite3"
    table = LocaleTable.from_settings(
        VoxpipeSettings(sqlite_path=str(path), default_locale="de-DE")
    )
    await table.start()
    try:
        assert (await table.choose(CallLocaleHints())).row.locale == "de-DE"
        assert path.exists()
    finally:
        await table.close()
    pg = LocaleTable.from_settings(VoxpipeSettings(database_url=pg_dsn))
    assert type(pg._backend).__name__ == "_PostgresBackend"


async def test_an_invalid_row_is_skipped_not_the_whole_table(backend: Backend) -> None:
    await backend.insert_raw(
        ("xx-BAD", "nova-2", "x", "v", "x", "Hi", "ZZ", "not-digits", None)  # bad calling code
    )
    await backend.insert_raw(NL_ROW)
    assert await backend.table.refresh()  # read, not an outage
    locales = {r.locale for r in backend.table.rows_now()}
    assert "nl-NL" in locales and "xx-BAD" not in locales
    assert not backend.table.outage
