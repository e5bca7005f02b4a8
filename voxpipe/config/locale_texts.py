"""What the bot says and listens for, per language, as data: ``voxpipe/config/texts/<lang>.json``.

Every prompt that used to be English in code (consent wording, the escalation handoff, the LLM
fallback line, payment lines, goodbye detection, escalation request phrases, the language menu)
has a key here, shipped for en, de, fr, es, it and pt. A key is looked up for a locale tag in
``<locale>.json`` (e.g. ``fr-CA.json``, optional regional overrides), then ``<language>.json``,
then English, so a missing translation degrades to English rather than failing a call.
``LOCALE_TEXT_DIR`` (optional) names a directory whose files override the shipped ones, key by
key, so an operator can reword a prompt without a release.

API::

    locale_text("de-DE", "consent.notice")            -> str
    locale_text("fr-FR", "language_menu.option", digit=2)  -> "Pour le français, appuyez sur 2."
    locale_phrases("es-MX", "consent.withdraw_phrases") -> tuple[str, ...]
    texts = LocaleTexts.for_locale("it-IT"); texts.text(key); texts.phrases(key); texts.has(key)
"""

from __future__ import annotations

import functools
import json
import logging
import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

__all__ = [
    "SHIPPED_LANGUAGES",
    "LocaleTexts",
    "clear_locale_text_cache",
    "locale_phrases",
    "locale_text",
]

logger = logging.getLogger(__name__)

SHIPPED_LANGUAGES = ("en", "de", "fr", "es", "it", "pt")
FALLBACK_LANGUAGE = "en"
OVERRIDE_DIR_ENV = "LOCALE_TEXT_DIR"

TextValue = str | tuple[str, ...]


def _check(data: Any, where: str) -> dict[str, TextValue]:
    if not isinstance(data, dict):
        raise ValueError(f"{where}: locale text must be a JSON object of key -> text or list")
    out: dict[str, TextValue] = {}
    for key, value in data.items():
        if isinstance(value, str):
            out[str(key)] = value
        elif isinstance(value, list) and all(isinstance(v, str) for v in value):
            out[str(key)] = tuple(v.strip() for v in value if v.strip())
        else:
            raise ValueError(f"{where}: {key!r} must be a string or a list of strings")
    return out


@functools.lru_cache(maxsize=64)
def _file(tag: str, override_dir: str | None) -> dict[str, TextValue]:
    """The keys of ``<tag>.json``: shipped, with the override directory's keys on top."""
    merged: dict[str, TextValue] = {}
    shipped = resources.files("voxpipe.config.texts").joinpath(f"{tag}.json")
    if shipped.is_file():
        merged.update(_check(json.loads(shipped.read_text("utf-8")), f"texts/{tag}.json"))
    if override_dir:
        path = Path(override_dir) / f"{tag}.json"
        if path.is_file():
            merged.update(_check(json.loads(path.read_text("utf-8")), str(path)))
    return merged


def clear_locale_text_cache() -> None:
    """Forget loaded files (after editing the override directory, or in tests)."""
    _file.cache_clear()


def _chain(locale: str) -> tuple[str, ...]:
    """``fr-CA`` -> (``fr-CA``, ``fr``, ``en``), the files a key is looked up in, in order."""
    parts = locale.strip().replace("_", "-").split("-") if locale.strip() else ["en"]
    language = parts[0].lower()
    tags = []
    if len(parts) > 1:
        tags.append("-".join([language, *(p.upper() if len(p) == 2 else p for p in parts[1:])]))
    tags.append(language)
    if FALLBACK_LANGUAGE not in tags:
        tags.append(FALLBACK_LANGUAGE)
    return tuple(tags)


@dataclass(frozen=True, slots=True)
class LocaleTexts:
    """The wording of one locale, with per-key fallback to the language and then English."""

    locale: str
    chain: tuple[str, ...]
    override_dir: str | None = None

    @classmethod
    def for_locale(cls, locale: str, override_dir: str | None = None) -> LocaleTexts:
        """The texts for ``locale`` (``LOCALE_TEXT_DIR`` from the environment when not given)."""
        where = override_dir if override_dir is not None else os.environ.get(OVERRIDE_DIR_ENV)
        return cls(locale, _chain(locale), where or None)

    def _value(self, key: str) -> TextValue:
        for tag in self.chain:
            found = _file(tag, self.override_dir).get(key)
            if found is not None:
                return found
        raise KeyError(f"no locale text {key!r} for {self.locale} (nor in English)")

    def has(self, key: str) -> bool:
        """True when the key exists in this locale's chain."""
        try:
            self._value(key)
        except KeyError:
            return False
        return True

    def translated(self, key: str) -> bool:
        """True when ``key`` is in this locale's own language (not only the English fallback)."""
        if self.chain[0].split("-")[0] == FALLBACK_LANGUAGE:
            return self.has(key)
        return any(key in _file(tag, self.override_dir) for tag in self.chain[:-1])

    def text(self, key: str, **values: Any) -> str:
        """One line; ``{name}`` placeholders are filled from ``values``."""
        found = self._value(key)
        if not isinstance(found, str):
            raise TypeError(f"locale text {key!r} is a phrase list: use phrases()")
        return found.format(**values) if values else found

    def phrases(self, key: str) -> tuple[str, ...]:
        """A phrase list (what a caller may say), lower case."""
        found = self._value(key)
        if isinstance(found, str):
            return (found.lower(),)
        return tuple(p.lower() for p in found)


def locale_text(locale: str, key: str, **values: Any) -> str:
    """The line ``key`` in ``locale``'s language (English when not translated)."""
    return LocaleTexts.for_locale(locale).text(key, **values)


def locale_phrases(locale: str, key: str) -> tuple[str, ...]:
    """The phrase list ``key`` in ``locale``'s language (English when not translated)."""
    return LocaleTexts.for_locale(locale).phrases(key)
