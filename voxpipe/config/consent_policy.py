"""Which consent policy a call gets: CONSENT_MODE, the carrier, and the caller's jurisdiction.

With ``CONSENT_MODE=auto`` a phone call gets the policy of the locale row serving the caller's
country (its ``consent`` column, or the default of its countries), a caller from a country no
row serves gets the default of that country (``ivr`` in the EU/EEA, the UK and Switzerland,
else ``notice``), and a caller whose country cannot be told (a withheld number) is asked, as
every phone caller was before policies existed. Browser and file calls are not asked in auto
mode; ``always`` asks everyone, ``notice`` tells everyone, ``off`` does neither.
"""

from __future__ import annotations

from collections.abc import Iterable

from voxpipe.config.jurisdiction import (
    country_from_number,
    default_consent,
    international_digits,
)
from voxpipe.config.locales import ConsentPolicy, LocaleRow

__all__ = ["PHONE_CARRIERS", "call_consent_policy", "caller_country", "jurisdiction_policy"]

# Carriers whose calls are telephone calls (CONSENT_MODE=auto applies the table's policy).
PHONE_CARRIERS = frozenset({"twilio", "telnyx", "vonage", "sip"})


def caller_country(
    rows: Iterable[LocaleRow], country: str | None, caller: str | None
) -> str | None:
    """The caller's ISO country: the carrier's (FromCountry), else from the number's calling
    code (GDPR codes, then the codes of the locale rows), else None."""
    if country and country.strip():
        return country.strip().upper()
    extra = {code: r.countries[0] for r in rows if r.countries for code in r.calling_codes}
    return country_from_number(caller, extra)


def jurisdiction_policy(
    rows: Iterable[LocaleRow], row: LocaleRow | None, country: str | None
) -> ConsentPolicy:
    """The policy for a caller from ``country`` whose call runs in locale ``row``."""
    if country is None:
        return "ivr"  # unknown jurisdiction (withheld number): ask, never assume
    if row is not None and country in row.countries:
        return row.consent_policy
    for candidate in sorted((r for r in rows if r.enabled), key=lambda r: r.locale):
        if country in candidate.countries:
            return candidate.consent_policy
    return default_consent(country)


def call_consent_policy(
    mode: str,
    *,
    carrier: str,
    rows: Iterable[LocaleRow],
    row: LocaleRow | None,
    country: str | None,
    caller: str | None = None,
) -> ConsentPolicy:
    """The policy for one call under ``CONSENT_MODE`` ``mode`` (auto, always, notice, off)."""
    if mode == "off":
        return "none"
    if mode == "always":
        return "ivr"
    if mode == "notice":
        return "notice"
    if carrier not in PHONE_CARRIERS:
        return "none"
    rows = tuple(rows)
    where = caller_country(rows, country, caller)
    if where is None and international_digits(caller) is not None:
        # An international number whose calling code is none of the GDPR countries' (that
        # list is complete): outside the EU/EEA, the UK and Switzerland.
        return "notice"
    return jurisdiction_policy(rows, row, where)
