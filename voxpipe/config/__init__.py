"""Settings (environment + optional file) and the per-locale table."""

from voxpipe.config.locales import (
    CallLocaleHints,
    LocaleChoice,
    LocaleRow,
    choose_locale,
    load_seed_rows,
)
from voxpipe.config.settings import VoxpipeSettings, get_settings, options_table

__all__ = [
    "CallLocaleHints",
    "LocaleChoice",
    "LocaleRow",
    "VoxpipeSettings",
    "choose_locale",
    "get_settings",
    "load_seed_rows",
    "options_table",
]
