"""Which callers are under GDPR-style consent rules: the EU/EEA, the UK and Switzerland.

Their default consent policy is ``ivr`` (asked before anything is kept); everyone else's is
``notice``. A locale row's ``consent`` column overrides the default for the callers it serves.
The caller's country comes from the carrier (Twilio's ``FromCountry``) or, failing that, from the
calling code of their number.
"""

from __future__ import annotations

import re
from typing import Literal

__all__ = ["GDPR_COUNTRIES", "country_from_number", "default_consent", "international_digits"]

# EU member states, the rest of the EEA (IS, LI, NO), the UK with its Crown dependencies, and CH;
# plus the EU's outermost regions that have ISO codes of their own.
GDPR_COUNTRIES = frozenset(
    "AT BE BG HR CY CZ DK EE FI FR DE GR HU IE IT LV LT LU MT NL PL PT RO SK SI ES SE "
    "IS LI NO GB GG JE IM CH AX GF GP MQ RE YT MF".split()
)

# Calling codes of those countries (ITU E.164). Shared codes (+1, +7) are not among them; +44
# also serves GG/JE/IM, +358 AX, +262 RE/YT, +590 GP/MF: all in the set, so the choice of one
# country for the code does not change the policy.
_CODES = {
    "43": "AT", "32": "BE", "359": "BG", "385": "HR", "357": "CY", "420": "CZ", "45": "DK",
    "372": "EE", "358": "FI", "33": "FR", "49": "DE", "30": "GR", "36": "HU", "353": "IE",
    "39": "IT", "371": "LV", "370": "LT", "352": "LU", "356": "MT", "31": "NL", "48": "PL",
    "351": "PT", "40": "RO", "421": "SK", "386": "SI", "34": "ES", "46": "SE", "354": "IS",
    "423": "LI", "47": "NO", "44": "GB", "41": "CH", "594": "GF", "590": "GP", "596": "MQ",
    "262": "RE",
}  # fmt: skip


def default_consent(country: str | None) -> Literal["ivr", "notice"]:
    """``ivr`` for a caller from the EU/EEA, the UK or Switzerland, else ``notice``."""
    return "ivr" if country and country.strip().upper() in GDPR_COUNTRIES else "notice"


def international_digits(number: str | None) -> str | None:
    """The digits of an international number (``+44 20 7946-0000`` -> ``442079460000``), or
    None for a national number, a withheld id (``anonymous``) or anything else."""
    if not number:
        return None
    compact = re.sub(r"[\s().-]", "", number)
    if compact.startswith("+"):
        digits = compact[1:]
    elif compact.startswith("00"):
        digits = compact[2:]
    else:
        return None
    return digits if digits.isdigit() and len(digits) >= 5 else None


def country_from_number(number: str | None, extra: dict[str, str] | None = None) -> str | None:
    """The ISO country of an international number when its calling code is known (the GDPR
    codes above, plus ``extra`` code -> country, e.g. from the locale rows), else None."""
    digits = international_digits(number)
    if digits is None:
        return None
    codes = {**(extra or {}), **_CODES}
    for length in (3, 2, 1):
        found = codes.get(digits[:length])
        if found is not None:
            return found
    return None
