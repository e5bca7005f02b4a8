"""Choosing a locale row from call metadata, and the shipped seed file."""

from __future__ import annotations

import logging

import pytest

from voxpipe.config.locales import (
    CallLocaleHints,
    LocaleRow,
    choose_locale,
    load_seed_rows,
    normalize_locale,
)


@pytest.fixture(scope="module")
def rows() -> list[LocaleRow]:
    return load_seed_rows()


@pytest.mark.parametrize(
    ("caller", "locale"),
    [
        ("+447700900123", "en-GB"),
        ("+12125550123", "en-US"),
        ("+4915112345678", "de-DE"),
        ("+33612345678", "fr-FR"),
        ("+34612345678", "es-ES"),
        ("+525512345678", "es-MX"),
        ("+44 20 7946 0000", "en-GB"),
        ("0044 20 7946 0000", "en-GB"),
        ("+1 (212) 555-0123", "en-US"),
        ("+35312345678", "en-IE"),  # +353 is longer than any other matching prefix
    ],
)
def test_caller_country_code_picks_the_row(rows: list[LocaleRow], caller: str, locale: str) -> None:
    choice = choose_locale(rows, CallLocaleHints(caller=caller))
    assert (choice.row.locale, choice.source) == (locale, "calling_code")


def test_plus_44_caller_picks_en_gb_voice_and_greeting(rows: list[LocaleRow]) -> None:
    row = choose_locale(rows, CallLocaleHints(caller="+447700900123")).row
    assert row.locale == "en-GB"
    assert row.stt_language == "en-GB"
    assert row.greeting and row.tts_voice


def test_hint_order_explicit_ivr_country_code_default(rows: list[LocaleRow]) -> None:
    all_hints = CallLocaleHints(
        explicit="fr-fr", ivr_digit="2", from_country="DE", caller="+447700900123"
    )
    assert choose_locale(rows, all_hints).source == "explicit"
    assert choose_locale(rows, all_hints).row.locale == "fr-FR"
    no_explicit = CallLocaleHints(ivr_digit="2", from_country="DE", caller="+447700900123")
    assert choose_locale(rows, no_explicit).row.locale == "es-MX"
    country = CallLocaleHints(from_country="de", caller="+447700900123")
    assert (choose_locale(rows, country).row.locale, choose_locale(rows, country).source) == (
        "de-DE",
        "from_country",
    )
    assert choose_locale(rows, CallLocaleHints()).row.locale == "en-US"
    assert choose_locale(rows, CallLocaleHints()).source == "default"


def test_hints_matching_no_row_fall_through(
    rows: list[LocaleRow], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        choice = choose_locale(
            rows,
            CallLocaleHints(
                explicit="xx-XX", ivr_digit="9", from_country="ZZ", caller="+447700900123"
            ),
        )
    assert (choice.row.locale, choice.source) == ("en-GB", "calling_code")
    assert "xx-XX" in caplog.text


@pytest.mark.parametrize("caller", ["07700900123", "anonymous", "client:alice", "+", ""])
def test_numbers_without_a_country_use_the_default(rows: list[LocaleRow], caller: str) -> None:
    choice = choose_locale(rows, CallLocaleHints(caller=caller), default="de-DE")
    assert (choice.row.locale, choice.source) == ("de-DE", "default")


def test_disabled_rows_are_never_chosen(rows: list[LocaleRow]) -> None:
    gb = next(r for r in rows if r.locale == "en-GB")
    disabled = LocaleRow.from_mapping({**_as_mapping(gb), "enabled": "false"})
    table = [r for r in rows if r.locale != "en-GB"] + [disabled]
    assert choose_locale(table, CallLocaleHints(caller="+447700900123")).row.locale == "en-US"


def test_longest_calling_code_wins() -> None:
    us = _row("en-US", calling_codes="1")
    tt = _row("en-TT", calling_codes="1868")
    assert choose_locale([us, tt], CallLocaleHints(caller="+18685550123")).row.locale == "en-TT"
    assert choose_locale([us, tt], CallLocaleHints(caller="+12125550123")).row.locale == "en-US"


def test_empty_table_is_an_explained_error() -> None:
    with pytest.raises(LookupError, match="no enabled rows"):
        choose_locale([], CallLocaleHints())


def test_default_missing_from_table_uses_a_row(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        choice = choose_locale([_row("de-DE")], CallLocaleHints(), default="en-US")
    assert choice.row.locale == "de-DE" and "en-US" in caplog.text


def test_hints_from_twilio_webhook_and_stream_parameters() -> None:
    hints = CallLocaleHints.from_twilio(
        {"From": "+447700900123", "FromCountry": "GB", "CallSid": "CA1"}, {"locale": "es-MX"}
    )
    assert hints == CallLocaleHints(
        explicit="es-MX", ivr_digit=None, from_country="GB", caller="+447700900123"
    )
    assert CallLocaleHints.from_twilio({"Digits": "3"}).ivr_digit == "3"


def test_seed_file_rows_are_valid_and_unambiguous(rows: list[LocaleRow]) -> None:
    locales = [r.locale for r in rows]
    assert len(locales) == len(set(locales)) and "en-US" in locales
    codes = [c for r in rows for c in r.calling_codes]
    assert len(codes) == len(set(codes)), "a calling code must map to one row"
    # A country may have several rows (the language menu chooses), in different languages.
    by_country: dict[str, list[str]] = {}
    for r in rows:
        for c in r.countries:
            by_country.setdefault(c, []).append(r.tts_language)
    for country, languages in by_country.items():
        assert len(languages) == len(set(languages)), f"{country}: one row per language"
    assert {c for c, langs in by_country.items() if len(langs) > 1} == {"CA", "CH"}
    digits = [r.ivr_digit for r in rows if r.ivr_digit]
    assert len(digits) == len(set(digits))
    expected = {"44": "en-GB", "1": "en-US", "49": "de-DE", "33": "fr-FR", "34": "es-ES"}
    expected["52"] = "es-MX"
    by_code = {c: r.locale for r in rows for c in r.calling_codes}
    assert {c: by_code[c] for c in expected} == expected


def test_row_validation() -> None:
    assert normalize_locale("en_gb") == "en-GB"
    assert _row("EN_gb").locale == "en-GB"
    assert _row("en-US", calling_codes="+1, 1868").calling_codes == ("1", "1868")
    with pytest.raises(ValueError, match="calling codes"):
        _row("en-US", calling_codes="one")
    with pytest.raises(ValueError, match="ivr_digit"):
        _row("en-US", ivr_digit="12")
    with pytest.raises(ValueError, match="locale tag"):
        _row("english")
    with pytest.raises(ValueError, match="lacks greeting"):
        LocaleRow.from_mapping({**_as_mapping(_row("en-US")), "greeting": ""})


def test_seed_file_errors_name_the_row(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "locales.csv"
    path.write_text(
        "locale,stt_model,stt_language,tts_voice,tts_language,greeting,countries,calling_codes,"
        "ivr_digit\n# comment lines are skipped\nen-US,m,en,v,en,Hi,US,1,\nde-DE,m,de,v,de,,DE,49,\n"
    )
    with pytest.raises(ValueError, match="line 4.*greeting"):
        load_seed_rows(path)


def _row(locale: str, **overrides: str) -> LocaleRow:
    data = {
        "locale": locale,
        "stt_model": "nova-2",
        "stt_language": locale,
        "tts_voice": "voice",
        "tts_language": locale[:2],
        "greeting": "Hello",
        **overrides,
    }
    return LocaleRow.from_mapping(data)


def _as_mapping(row: LocaleRow) -> dict[str, object]:
    return {
        "locale": row.locale,
        "stt_model": row.stt_model,
        "stt_language": row.stt_language,
        "tts_voice": row.tts_voice,
        "tts_language": row.tts_language,
        "greeting": row.greeting,
        "countries": " ".join(row.countries),
        "calling_codes": " ".join(row.calling_codes),
        "ivr_digit": row.ivr_digit,
    }
