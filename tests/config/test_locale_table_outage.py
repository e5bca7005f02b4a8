"""The locale table survives its database: shipped rows while Postgres is unreachable, the
outage logged once, and the database's rows back (without a restart) when it returns."""

from __future__ import annotations

import logging

import asyncpg
import pytest

from tests.config.conftest import servers
from voxpipe.config.locale_table import LocaleTable
from voxpipe.config.locales import CallLocaleHints, load_seed_rows

PG_HOST, PG_PORT = "127.0.0.1", 5432


async def test_unreachable_database_serves_the_shipped_rows_and_reloads_when_back(
    pg_dsn: str, pg_schema: str, caplog: pytest.LogCaptureFixture
) -> None:
    # Postgres reached through a proxy that is not listening yet: the database is "down".
    proxy = servers.TcpProxy(PG_HOST, PG_PORT)
    dsn = pg_dsn.replace(f"{PG_HOST}:{PG_PORT}", f"{PG_HOST}:{proxy.port}")
    table = LocaleTable.postgres(dsn, schema=pg_schema, refresh_s=0.02, timeout_s=2.0)
    with caplog.at_level(logging.WARNING, logger="voxpipe.config.locale_table"):
        await table.start()  # does not raise
        try:
            assert table.outage and table.source == "shipped"
            german = table.choose_now(CallLocaleHints(caller="+4915123456789"))
            assert german.row.locale == "de-DE"  # calls are answered from the shipped rows
            assert {r.locale for r in table.rows_now()} == {r.locale for r in load_seed_rows()}
            for _ in range(3):  # three more failed refreshes ...
                await table.wait_refreshed(attempts=True)
            down = [r for r in caplog.records if "unreachable" in r.getMessage()]
            assert len(down) == 1  # ... and the outage logged once

            # The database returns, with a row nobody shipped.
            await proxy.start()
            generation = await table.wait_refreshed()
            assert not table.outage and table.source == "database" and generation >= 1
            conn = await asyncpg.connect(pg_dsn)
            try:
                await conn.execute(
                    f'INSERT INTO "{pg_schema}".locales (locale, stt_model, stt_language, '
                    "tts_voice, tts_language, greeting, countries, calling_codes) VALUES "
                    "('nl-NL', 'nova-2', 'nl', 'v', 'nl', 'Hallo', 'NL', '31')"
                )
            finally:
                await conn.close()
            await table.wait_refreshed(generation)
            dutch = table.choose_now(CallLocaleHints(caller="+31201234567"))
            assert dutch.row.locale == "nl-NL"
            back = [r for r in caplog.records if "reachable again" in r.getMessage()]
            assert len(back) == 1
        finally:
            await table.close()
            await proxy.stop()
