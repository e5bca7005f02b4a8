"""Locale wording as data: every shipped language has every key, with fallbacks and overrides."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

import pytest

from voxpipe.config.locale_texts import (
    SHIPPED_LANGUAGES,
    LocaleTexts,
    clear_locale_text_cache,
    locale_phrases,
    locale_text,
)


def _keys(language: str) -> set[str]:
    text = resources.files("voxpipe.config.texts").joinpath(f"{language}.json").read_text("utf-8")
    return set(json.loads(text))


@pytest.mark.parametrize("language", SHIPPED_LANGUAGES)
def test_every_shipped_language_has_every_english_key(language: str) -> None:
    assert _keys(language) == _keys("en")


def test_lines_and_phrases_per_language() -> None:
    assert locale_text("fr-FR", "language_menu.option", digit=2) == (
        "Pour le français, appuyez sur 2."
    )
    assert locale_text("en-GB", "language_menu.option", digit=1) == "For English, press 1."
    assert "ja" in locale_phrases("de-DE", "consent.yes_words")
    assert "stop recording" in locale_phrases("en-US", "consent.withdraw_phrases")
    assert locale_text("pt-BR", "escalation.handoff").startswith("Vou transferir")
    with pytest.raises(TypeError):
        locale_text("en", "consent.yes_words")


def test_unknown_language_and_region_fall_back() -> None:
    # Dutch is not shipped: English; a region without its own file: the language's file.
    assert locale_text("nl-NL", "consent.notice") == locale_text("en", "consent.notice")
    assert locale_text("de-CH", "consent.notice") == locale_text("de-DE", "consent.notice")
    assert LocaleTexts.for_locale("fr_ca").chain == ("fr-CA", "fr", "en")
    with pytest.raises(KeyError):
        locale_text("de", "no.such.key")


def test_override_directory_rewords_one_key(tmp_path: Path) -> None:
    (tmp_path / "de.json").write_text(json.dumps({"consent.notice": "Wir zeichnen auf."}), "utf-8")
    clear_locale_text_cache()
    texts = LocaleTexts.for_locale("de-DE", override_dir=str(tmp_path))
    assert texts.text("consent.notice") == "Wir zeichnen auf."
    assert texts.text("consent.agreed") == "Vielen Dank."  # the rest is the shipped file's
    (tmp_path / "fr.json").write_text(json.dumps({"consent.notice": 3}), "utf-8")
    with pytest.raises(ValueError, match="consent.notice"):
        LocaleTexts.for_locale("fr", override_dir=str(tmp_path)).text("consent.notice")
