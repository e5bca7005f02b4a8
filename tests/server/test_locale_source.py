"""Every call's locale comes from the database table (refreshed in the background, so a row an
operator adds is used within seconds, no restart), and a database that is down at the first
call does not refuse it: the shipped rows serve (real server, real sockets, real Postgres)."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from tests.config.conftest import servers
from voxpipe.call import Call
from voxpipe.config.settings import VoxpipeSettings
from voxpipe.config.shared_locales import shared_locale_table
from voxpipe.pipelines import Pipeline
from voxpipe.server.app import create_app
from voxpipe.server.run import running_server
from voxpipe.testing.twilio_caller import TwilioCaller
from voxpipe.transports.websocket import WireLimits

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
SUPPORT_AGENT = ROOT / "bots" / "support_agent.py"
pg_schema = servers.pg_schema
pg_dsn = servers.pg_dsn


def settings_for(tmp_path: Path, **kwargs: Any) -> VoxpipeSettings:
    kwargs.setdefault("allow_unsigned_webhooks", True)  # the test caller dials unsigned
    return VoxpipeSettings(  # type: ignore[call-arg]
        _env_file=None, spool_dir=str(tmp_path / "spool"), **kwargs
    )


async def test_a_row_added_to_the_database_is_used_by_the_next_call_without_restart(
    tmp_path: Path, pg_dsn: str, pg_schema: str
) -> None:
    conn = await asyncpg.connect(pg_dsn)
    await conn.execute(f'CREATE SCHEMA "{pg_schema}"')
    await conn.close()
    settings = settings_for(
        tmp_path,
        database_url=f"{pg_dsn}?search_path={pg_schema}",
        locale_table_refresh_s=0.05,
    )
    seen: list[str] = []

    async def bot(call: Call) -> Pipeline:
        seen.append(call.locale)
        return Pipeline([call.transport.input(), call.transport.output()])

    app = create_app(bot, settings)

    async def dial(srv: Any) -> None:
        count = len(seen)
        caller = await TwilioCaller.dial(
            srv.url,
            form={"From": "+31201234567", "FromCountry": "NL"},
            audio=b"\xff" * 8000,
            realtime=False,
        )
        log = await caller.run(until=lambda _: len(seen) > count, timeout=20)
        assert log.errors == [] and log.close_code != 1011

    async with running_server(app, settings) as srv:
        await dial(srv)
        table = await shared_locale_table(settings)  # the server's own (same loop)
        assert table.source == "database"
        conn = await asyncpg.connect(pg_dsn)
        try:
            await conn.execute(
                f'INSERT INTO "{pg_schema}".locales (locale, stt_model, stt_language, tts_voice, '
                "tts_language, greeting, countries, calling_codes) VALUES "
                "('nl-NL', 'nova-2', 'nl', 'voice-nl', 'nl', 'Hallo!', 'NL', '31')"
            )
        finally:
            await conn.close()
        await table.wait_refreshed()  # at most LOCALE_TABLE_REFRESH_S later
        await dial(srv)
    assert seen == ["en-US", "nl-NL"]


async def test_postgres_unreachable_at_the_first_call_still_answers_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    closed = servers.free_port()  # nothing listens here
    settings = settings_for(
        tmp_path,
        database_url=f"postgresql://postgres@127.0.0.1:{closed}/test",
        db_timeout_s=2.0,
    )
    # The offline stack: no keys needed. The caller sends faster than real time: no rate cap.
    app = create_app(SUPPORT_AGENT, settings, limits=WireLimits(audio_burst_s=1e9))
    st = app.state.voxpipe
    with caplog.at_level(logging.WARNING):
        async with running_server(app, settings) as srv:
            caller = await TwilioCaller.dial(
                srv.url,
                form={"From": "+14155550100", "FromCountry": "US"},
                audio=b"\xff" * 8000 * 20,
                realtime=False,
            )
            # A US caller: the recording notice and the greeting are spoken, nothing pressed.
            log = await caller.run(until=lambda log: log.media_seconds > 4.0, timeout=60)
            async with asyncio.timeout(15):
                while len(st.registry):
                    await st.registry.sessions[0].ended.wait()
    assert log.errors == [] and log.close_code != 1011, log.close_reason
    assert log.media_seconds > 4.0  # the bot spoke
    assert not st.metrics.calls_refused
    assert st.metrics.calls_started["twilio"] == 1
    outage = [r for r in caplog.records if "locale table unreachable" in r.getMessage()]
    assert len(outage) == 1
