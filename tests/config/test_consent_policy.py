"""Which consent policy a call gets: the jurisdiction's (from the locale rows) and CONSENT_MODE."""

from __future__ import annotations

import logging

import pytest

from voxpipe.call import choose_call_locale
from voxpipe.config.consent_policy import call_consent_policy
from voxpipe.config.locales import LocaleRow, load_seed_rows
from voxpipe.config.settings import VoxpipeSettings

ROWS = tuple(load_seed_rows())


def policy(
    caller: str, country: str | None = None, *, mode: str = "auto", carrier: str = "twilio"
) -> str:
    settings = VoxpipeSettings(_env_file=None)  # type: ignore[call-arg]
    row = choose_call_locale(settings, caller=caller, country=country, rows=ROWS)
    return call_consent_policy(
        mode, carrier=carrier, rows=ROWS, row=row, country=country, caller=caller
    )


@pytest.mark.parametrize(
    ("caller", "country", "expected"),
    [
        ("+14155550100", "US", "notice"),  # the US: told, not asked
        ("+14155550100", None, "notice"),  # +1 without FromCountry: the en-US row
        ("+5511987654321", "BR", "notice"),
        ("+4915123456789", None, "ivr"),  # Germany by calling code
        ("+4915123456789", "DE", "ivr"),
        ("+447700900123", "GB", "ivr"),  # the UK
        ("+41441234567", "CH", "ivr"),  # Switzerland
        ("+31201234567", None, "ivr"),  # the Netherlands: no row, the GDPR default
        ("+4721234567", "NO", "ivr"),  # EEA
        ("+81312345678", None, "notice"),  # Japan: no row, not GDPR
        ("anonymous", None, "ivr"),  # withheld: asked on every call, as before
    ],
)
def test_policy_by_jurisdiction(caller: str, country: str | None, expected: str) -> None:
    assert policy(caller, country) == expected


def test_a_row_consent_column_overrides_the_default() -> None:
    relaxed = LocaleRow(
        "de-DE", "nova-2", "de", "v", "de", "Hallo", ("DE",), ("49",), consent="notice"
    )
    rows = (relaxed, *[r for r in ROWS if r.locale != "de-DE"])
    assert (
        call_consent_policy("auto", carrier="twilio", rows=rows, row=relaxed, country="DE")
        == "notice"
    )
    # A caller from a GDPR country whose language row serves others keeps their own country's.
    en_us = next(r for r in ROWS if r.locale == "en-US")
    assert (
        call_consent_policy("auto", carrier="twilio", rows=ROWS, row=en_us, country="FR") == "ivr"
    )
    with pytest.raises(ValueError, match="consent must be one of"):
        LocaleRow("xx-XX", "m", "x", "v", "x", "hi", consent="maybe")  # type: ignore[arg-type]


def test_modes_and_carriers() -> None:
    assert policy("+14155550100", "US", mode="always") == "ivr"
    assert policy("+4915123456789", "DE", mode="notice") == "notice"
    assert policy("+4915123456789", "DE", mode="off") == "none"
    # auto asks on phone calls only; a browser has no caller id or jurisdiction.
    assert policy("", None, carrier="webrtc") == "none"
    assert policy("+4915123456789", "DE", carrier="telnyx") == "ivr"


def test_consent_mode_phone_is_read_as_auto_with_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="voxpipe.config"):
        s = VoxpipeSettings(_env_file=None, consent_mode="phone")  # type: ignore[call-arg]
    assert s.consent_mode == "auto"
    assert "deprecated" in caplog.text
    assert VoxpipeSettings(_env_file=None).consent_mode == "auto"  # type: ignore[call-arg]
    assert VoxpipeSettings(_env_file=None).consent_ttl_days == 365  # type: ignore[call-arg]
