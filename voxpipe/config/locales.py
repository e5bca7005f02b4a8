"""Per-locale voice configuration as data: rows, the shipped seed file, and choosing a row.

Adding a language is adding a row (in the database table `locales`, or in the seed file for new
installs): locale, STT model and language, TTS voice and language, greeting, which callers it
serves (ISO countries, country calling codes, an IVR digit), and the consent policy of those
callers' jurisdiction (`ivr`, `notice` or `none`; blank = `ivr` for a row serving a GDPR
country, else `notice`).
"""

from __future__ import annotations

import csv
import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal, get_args

from voxpipe.config.jurisdiction import default_consent

logger = logging.getLogger(__name__)

SEED_FILE = "locales.csv"

# How a jurisdiction's callers consent to retention: asked (press 1 / 2 or say yes / no), told
# (a one-sentence notice; continuing is consent), or neither.
ConsentPolicy = Literal["ivr", "notice", "none"]
CONSENT_POLICIES: tuple[str, ...] = get_args(ConsentPolicy)
_LOCALE = re.compile(r"^[a-z]{2,3}(-[A-Za-z0-9]{2,8})*$")


def _split(value: str | Iterable[str] | None) -> tuple[str, ...]:
    if value is None:
        return ()
    items = value.replace(",", " ").split() if isinstance(value, str) else list(value)
    return tuple(i.strip() for i in items if i.strip())


def normalize_locale(tag: str) -> str:
    """`en_gb` / `EN-gb` -> `en-GB` (language lower case, region upper case)."""
    parts = tag.strip().replace("_", "-").split("-")
    out = [parts[0].lower()]
    for part in parts[1:]:
        out.append(part.upper() if len(part) == 2 else part)
    return "-".join(out)


# Per-row turn-taking overrides and their allowed ranges (the settings' own bounds).
_TURN_RANGES: dict[str, tuple[float, float]] = {
    "vad_stop_s": (0.05, 5.0),
    "vad_start_s": (0.0, 2.0),
    "vad_confidence": (0.0, 1.0),
    "vad_min_volume": (0.0, 1.0),
    "turn_max_wait_s": (0.1, 10.0),
}


def _blank_none(value: Any) -> Any:
    """A CSV cell or database value: blank or NULL = not set."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    return value


def _turn_number(locale: str, name: str, value: Any, low: float, high: float) -> float | None:
    if value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"locale {locale}: {name} must be a number, got {value!r}") from None
    if not low <= number <= high:
        raise ValueError(f"locale {locale}: {name} must be within {low}..{high}, got {number}")
    return number


@dataclass(frozen=True, slots=True)
class LocaleRow:
    """Everything a call needs to run in one language/region."""

    locale: str
    stt_model: str
    stt_language: str
    tts_voice: str
    tts_language: str
    greeting: str
    # ISO 3166-1 alpha-2 countries (Twilio's FromCountry) served by this row.
    countries: tuple[str, ...] = field(default_factory=tuple)
    # Country calling codes without "+", matched as the longest prefix of the caller's number.
    calling_codes: tuple[str, ...] = field(default_factory=tuple)
    # The IVR key a caller presses to choose this locale, if any.
    ivr_digit: str | None = None
    enabled: bool = True
    # The consent policy for callers this row serves; None = derived from its countries.
    consent: ConsentPolicy | None = None
    # Turn-taking for this row's callers (issue 13); None = the deployment's setting of the
    # same name (TURN_DETECTION, VAD_STOP_S, ...). A language whose speakers pause longer
    # mid-sentence can be given a longer stop or wait without changing every other row.
    turn_detection: Literal["smart", "vad"] | None = None
    vad_stop_s: float | None = None
    vad_start_s: float | None = None
    vad_confidence: float | None = None
    vad_min_volume: float | None = None
    turn_max_wait_s: float | None = None

    def __post_init__(self) -> None:
        locale = normalize_locale(self.locale)
        if not _LOCALE.match(locale):
            raise ValueError(f"{self.locale!r} is not a locale tag like en-GB")
        object.__setattr__(self, "locale", locale)
        object.__setattr__(self, "countries", tuple(c.upper() for c in _split(self.countries)))
        codes = tuple(c.lstrip("+") for c in _split(self.calling_codes))
        bad = [c for c in codes if not c.isdigit()]
        if bad:
            raise ValueError(f"locale {locale}: calling codes must be digits, got {bad}")
        object.__setattr__(self, "calling_codes", codes)
        digit = (self.ivr_digit or "").strip() or None
        if digit is not None and (len(digit) != 1 or digit not in "0123456789*#"):
            raise ValueError(f"locale {locale}: ivr_digit must be one key (0-9, * or #)")
        object.__setattr__(self, "ivr_digit", digit)
        consent = (self.consent or "").strip().lower() or None
        if consent is not None and consent not in CONSENT_POLICIES:
            raise ValueError(
                f"locale {locale}: consent must be one of {', '.join(CONSENT_POLICIES)} "
                f"(or blank for the default of its countries), got {self.consent!r}"
            )
        object.__setattr__(self, "consent", consent)
        detection = (self.turn_detection or "").strip().lower() or None
        if detection is not None and detection not in ("smart", "vad"):
            raise ValueError(
                f"locale {locale}: turn_detection must be smart or vad (or blank for the "
                f"deployment's TURN_DETECTION), got {self.turn_detection!r}"
            )
        object.__setattr__(self, "turn_detection", detection)
        for name, (low, high) in _TURN_RANGES.items():
            object.__setattr__(
                self, name, _turn_number(locale, name, getattr(self, name), low, high)
            )

    @property
    def consent_policy(self) -> ConsentPolicy:
        """The row's consent policy: its `consent` column, or the default of its countries."""
        if self.consent is not None:
            return self.consent
        if any(default_consent(c) == "ivr" for c in self.countries):
            return "ivr"
        return "notice"

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> LocaleRow:
        """Build from a CSV/DB row; list fields may be space- or comma-separated strings."""
        missing = [
            k
            for k in (
                "locale",
                "stt_model",
                "stt_language",
                "tts_voice",
                "tts_language",
                "greeting",
            )
            if not str(data.get(k) or "").strip()
        ]
        if missing:
            raise ValueError(f"locale row {dict(data)!r} lacks {', '.join(missing)}")
        enabled = data.get("enabled", True)
        if isinstance(enabled, str):
            enabled = enabled.strip().lower() not in ("0", "false", "no", "off")
        return cls(
            locale=str(data["locale"]),
            stt_model=str(data["stt_model"]).strip(),
            stt_language=str(data["stt_language"]).strip(),
            tts_voice=str(data["tts_voice"]).strip(),
            tts_language=str(data["tts_language"]).strip(),
            greeting=str(data["greeting"]).strip(),
            countries=_split(data.get("countries")),
            calling_codes=_split(data.get("calling_codes")),
            ivr_digit=(str(data["ivr_digit"]) if data.get("ivr_digit") is not None else None),
            enabled=bool(enabled),
            consent=(str(data["consent"]) if data.get("consent") is not None else None),  # type: ignore[arg-type]
            turn_detection=_blank_none(data.get("turn_detection")),
            **{name: _blank_none(data.get(name)) for name in _TURN_RANGES},
        )


def load_seed_rows(path: str | Path | None = None) -> list[LocaleRow]:
    """Rows from a CSV file with a header (the shipped `locales.csv` by default)."""
    if path is None:
        text = resources.files("voxpipe.config").joinpath(SEED_FILE).read_text("utf-8")
        where = f"voxpipe/config/{SEED_FILE}"
    else:
        text = Path(path).read_text("utf-8")
        where = str(path)
    rows = []
    # Comment and blank lines are skipped; keep file line numbers for error messages.
    numbered = [
        (number, line)
        for number, line in enumerate(text.splitlines(), start=1)
        if line.strip() and not line.startswith("#")
    ]
    records = csv.DictReader(line for _, line in numbered)
    for (number, _), record in zip(numbered[1:], records, strict=False):
        try:
            rows.append(LocaleRow.from_mapping(record))
        except ValueError as exc:
            raise ValueError(f"{where} line {number}: {exc}") from exc
    return rows


@dataclass(frozen=True, slots=True)
class CallLocaleHints:
    """What a call tells us about the caller's language, strongest first."""

    # The caller (or the flow) chose: Twilio custom parameter `locale`, an API field ...
    explicit: str | None = None
    # The IVR key pressed at a language menu.
    ivr_digit: str | None = None
    # Twilio's FromCountry (ISO 3166-1 alpha-2 of the caller's number).
    from_country: str | None = None
    # The caller's number, E.164 (+447700900123).
    caller: str | None = None

    @classmethod
    def from_twilio(
        cls,
        webhook: Mapping[str, Any] | None = None,
        custom_parameters: Mapping[str, Any] | None = None,
    ) -> CallLocaleHints:
        """From a Twilio voice webhook form and/or a media stream's `start.customParameters`."""
        webhook = webhook or {}
        params = custom_parameters or {}

        def first(*values: Any) -> str | None:
            for value in values:
                if value is not None and str(value).strip():
                    return str(value).strip()
            return None

        return cls(
            explicit=first(params.get("locale"), webhook.get("locale")),
            ivr_digit=first(params.get("ivr_digit"), webhook.get("Digits")),
            from_country=first(params.get("FromCountry"), webhook.get("FromCountry")),
            caller=first(params.get("caller"), params.get("From"), webhook.get("From")),
        )


LocaleSource = Literal["explicit", "ivr", "from_country", "calling_code", "default"]


@dataclass(frozen=True, slots=True)
class LocaleChoice:
    """The row chosen for a call and which hint chose it."""

    row: LocaleRow
    source: LocaleSource


def _digits_of(number: str) -> str | None:
    """International digits of a number: '+44 20 7946-0000' -> '442079460000'; None if national."""
    compact = re.sub(r"[\s().-]", "", number)
    if compact.startswith("+"):
        compact = compact[1:]
    elif compact.startswith("00"):
        compact = compact[2:]
    else:
        return None  # national format or 'anonymous': no country can be read from it
    return compact if compact.isdigit() else None


def choose_locale(
    rows: Iterable[LocaleRow], hints: CallLocaleHints, default: str = "en-US"
) -> LocaleChoice:
    """Pick a row: explicit choice, IVR digit, FromCountry, calling code, then `default`.

    A hint that matches no enabled row is skipped (and an unknown explicit choice is logged),
    so a bad custom parameter degrades to the caller's country rather than failing the call.
    """
    ordered = sorted((r for r in rows if r.enabled), key=lambda r: r.locale)
    if not ordered:
        raise LookupError(
            "the locale table has no enabled rows: seed it from voxpipe/config/locales.csv "
            "(LocaleTable.start() does) or add a row."
        )
    by_locale = {r.locale.lower(): r for r in ordered}

    if hints.explicit:
        row = by_locale.get(normalize_locale(hints.explicit).lower())
        if row is not None:
            return LocaleChoice(row, "explicit")
        logger.warning("requested locale %r is not in the locale table; ignoring", hints.explicit)
    if hints.ivr_digit:
        for row in ordered:
            if row.ivr_digit == hints.ivr_digit.strip():
                return LocaleChoice(row, "ivr")
    if hints.from_country:
        country = hints.from_country.strip().upper()
        for row in ordered:
            if country in row.countries:
                return LocaleChoice(row, "from_country")
    if hints.caller:
        digits = _digits_of(hints.caller)
        if digits:
            best: tuple[int, LocaleRow] | None = None
            for row in ordered:
                for code in row.calling_codes:
                    if digits.startswith(code) and (best is None or len(code) > best[0]):
                        best = (len(code), row)
            if best is not None:
                return LocaleChoice(best[1], "calling_code")
    row = by_locale.get(normalize_locale(default).lower())
    if row is None:
        logger.warning(
            "default locale %s is not in the locale table; using %s", default, ordered[0].locale
        )
        row = ordered[0]
    return LocaleChoice(row, "default")
