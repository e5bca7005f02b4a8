"""Turn-taking per locale row: the row's columns override the deployment's settings, in every
way a call is built, and the columns round-trip through SQLite and Postgres."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from voxpipe.config.locale_table import LocaleTable
from voxpipe.config.locales import LocaleRow, load_seed_rows
from voxpipe.config.settings import VoxpipeSettings
from voxpipe.processors.turn.params import SMART_VAD_STOP_S, VAD_ONLY_STOP_S, turn_taking

BASE = {
    "locale": "es-ES",
    "stt_model": "nova-2",
    "stt_language": "es",
    "tts_voice": "v-es",
    "tts_language": "es",
    "greeting": "Hola.",
    "countries": "ES",
    "calling_codes": "34",
}


def _row(**turn: object) -> LocaleRow:
    return LocaleRow.from_mapping({**BASE, **turn})


def test_blank_columns_leave_the_deployment_settings() -> None:
    settings = VoxpipeSettings(vad_confidence=0.6, turn_max_wait_s=3.0)
    row = _row(turn_detection="", vad_stop_s="", vad_confidence=None)
    assert turn_taking(settings, row) == turn_taking(settings)
    vad, turn = turn_taking(settings, row)
    assert (vad.stop_secs, vad.confidence, turn.mode, turn.max_wait_secs) == (
        SMART_VAD_STOP_S,
        0.6,
        "smart",
        3.0,
    )


def test_row_values_override_each_setting() -> None:
    settings = VoxpipeSettings()
    row = _row(
        vad_stop_s="0.35",
        vad_start_s="0.1",
        vad_confidence="0.8",
        vad_min_volume="0.5",
        turn_max_wait_s="3.5",
    )
    vad, turn = turn_taking(settings, row)
    assert (vad.stop_secs, vad.start_secs, vad.confidence, vad.min_volume) == (0.35, 0.1, 0.8, 0.5)
    assert (turn.mode, turn.max_wait_secs) == ("smart", 3.5)


def test_a_vad_only_row_gets_the_vad_only_stop_unless_it_sets_one() -> None:
    settings = VoxpipeSettings()  # smart, VAD_STOP_S unset
    vad, turn = turn_taking(settings, _row(turn_detection="VAD"))
    assert turn.mode == "vad" and vad.stop_secs == VAD_ONLY_STOP_S
    vad, _ = turn_taking(settings, _row(turn_detection="vad", vad_stop_s=0.6))
    assert vad.stop_secs == 0.6
    # A deployment on vad with a smart row: the row's mode picks the short stop.
    vad, turn = turn_taking(VoxpipeSettings(turn_detection="vad"), _row(turn_detection="smart"))
    assert turn.mode == "smart" and vad.stop_secs == SMART_VAD_STOP_S


@pytest.mark.parametrize(
    ("column", "value", "message"),
    [
        ("turn_detection", "semantic", "turn_detection must be smart or vad"),
        ("vad_stop_s", "fast", "vad_stop_s must be a number"),
        ("vad_stop_s", "0.01", "vad_stop_s must be within 0.05..5.0"),
        ("vad_confidence", "1.5", "vad_confidence must be within 0.0..1.0"),
        ("turn_max_wait_s", "60", "turn_max_wait_s must be within 0.1..10.0"),
    ],
)
def test_bad_turn_columns_are_explained(column: str, value: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as err:
        _row(**{column: value})
    assert "es-ES" in str(err.value)


def test_shipped_rows_set_no_turn_override() -> None:
    for row in load_seed_rows():
        assert row.turn_detection is None and row.vad_stop_s is None, row.locale


def test_a_csv_with_turn_columns_loads(tmp_path: Path) -> None:
    path = tmp_path / "locales.csv"
    path.write_text(
        "locale,stt_model,stt_language,tts_voice,tts_language,greeting,countries,calling_codes,"
        "ivr_digit,consent,turn_detection,vad_stop_s\n"
        "es-ES,nova-2,es,v,es,Hola,ES,34,,,vad,0.9\n"
        "en-US,nova-2,en-US,v,en,Hi,US,1,,\n",
        "utf-8",
    )
    es, us = load_seed_rows(path)
    assert (es.turn_detection, es.vad_stop_s) == ("vad", 0.9)
    assert (us.turn_detection, us.vad_stop_s) == (None, None)


@pytest.fixture(params=["sqlite", "postgres"])
def make_table(request: pytest.FixtureRequest, tmp_path: Path) -> object:
    if request.param == "sqlite":
        where = str(tmp_path / "voxpipe.sqlite3")
        return lambda: LocaleTable.sqlite(where)
    dsn, schema = request.getfixturevalue("pg_dsn"), request.getfixturevalue("pg_schema")
    return lambda: LocaleTable.postgres(dsn, schema=schema)


async def test_turn_columns_round_trip_through_the_database(make_table: object) -> None:
    table = make_table()  # type: ignore[operator]
    await table.start()
    try:
        assert table.source == "database"
        row = _row(turn_detection="vad", vad_stop_s=0.9, turn_max_wait_s=4)
        await table.upsert(row)
        got = {r.locale: r for r in table.rows_now()}
        assert got["es-ES"] == row
        assert got["en-US"].turn_detection is None  # seeded rows keep NULL: the settings
        await table.upsert(replace(row, vad_stop_s=None, turn_detection=None))
        again = {r.locale: r for r in table.rows_now()}["es-ES"]
        assert (again.vad_stop_s, again.turn_detection, again.turn_max_wait_s) == (None, None, 4.0)
    finally:
        await table.close()


async def test_simulated_calls_take_the_row_of_their_caller(tmp_path: Path) -> None:
    """`voxpipe call`, replays and scenarios build turn-taking as a served call does."""
    from voxpipe.config.shared_locales import close_shared_locale_tables, shared_locale_table
    from voxpipe.testing.bot_runs import turn_kwargs_for

    settings = VoxpipeSettings(database_url=f"sqlite:///{tmp_path / 'db.sqlite3'}")
    try:
        table = await shared_locale_table(settings)
        await table.upsert(_row(vad_stop_s=0.45, turn_max_wait_s=3.0))
        spanish = await turn_kwargs_for(settings, "twilio", {"caller": "+34911234567"})
        american = await turn_kwargs_for(settings, "twilio", {"caller": "+12025550143"})
    finally:
        await close_shared_locale_tables()
    assert spanish["vad_params"].stop_secs == 0.45
    assert spanish["turn"].max_wait_secs == 3.0
    assert american["vad_params"].stop_secs == SMART_VAD_STOP_S
