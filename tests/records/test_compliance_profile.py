"""COMPLIANCE_PROFILE=hipaa refuses unsafe settings, one line each; the default profile warns."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from records_helpers import make_settings, new_key

from voxpipe.cli import main
from voxpipe.server.app import create_app
from voxpipe.server.carriers import UnsafeSettingsError

ROOT = Path(__file__).resolve().parents[2]
ECHO_BOT = ROOT / "bots" / "echo.py"
SAFE = {
    "compliance_profile": "hipaa",
    "records_kek": None,
    "public_url": "https://voice.example.com",
}


@pytest.mark.parametrize(
    ("change", "line"),
    [
        ({}, "no key-encryption key: set RECORDS_KEK"),
        ({"records_kek": "KEY", "record_dir": "/tmp/frames"}, "RECORD_DIR / --record"),
        ({"records_kek": "KEY", "public_url": "http://voice.example.com"}, "is not https"),
        ({"records_kek": "KEY", "public_url": None}, "PUBLIC_URL (unset) is not https"),
        (
            {
                "records_kek": "KEY",
                "call_end_webhook_url": "http://crm.example.com/hook",
                "call_end_webhook_secret": "whsec_" + new_key(),
            },
            "CALL_END_WEBHOOK_URL http://crm.example.com/hook is not https",
        ),
    ],
)
def test_hipaa_refuses_to_start(tmp_path: Path, change: dict[str, object], line: str) -> None:
    values = {**SAFE, **change}
    if values.get("records_kek") == "KEY":
        values["records_kek"] = new_key()
    s = make_settings(tmp_path, **values)
    with pytest.raises(UnsafeSettingsError) as err:
        create_app(ECHO_BOT, s, batched_vad=None)
    lines = str(err.value).splitlines()
    assert lines[0] == "COMPLIANCE_PROFILE=hipaa refuses to start:"
    assert sum(line in x for x in lines) == 1
    assert len(lines) == 2  # one problem, one line


def test_hipaa_starts_when_every_rule_holds_and_the_flag_counts_too(tmp_path: Path) -> None:
    s = make_settings(tmp_path, **{**SAFE, "records_kek": new_key()})
    create_app(ECHO_BOT, s, batched_vad=None)
    with pytest.raises(UnsafeSettingsError, match="RECORD_DIR"):
        create_app(ECHO_BOT, s, batched_vad=None, record_dir=tmp_path / "frames")


def test_serve_reports_the_refusal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from voxpipe.config.settings import get_settings

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("COMPLIANCE_PROFILE", "hipaa")
    monkeypatch.setenv("PUBLIC_URL", "http://x.example.com")
    get_settings.cache_clear()
    try:
        assert main(["serve", str(ECHO_BOT)]) == 2
    finally:
        get_settings.cache_clear()
    err = capsys.readouterr().err
    assert "no key-encryption key" in err and "PUBLIC_URL http://x.example.com is not https" in err


def test_default_profile_warns_without_keys(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="voxpipe.records.compliance"):
        create_app(ECHO_BOT, make_settings(tmp_path), batched_vad=None)
    assert any("stored in clear" in r.getMessage() for r in caplog.records)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="voxpipe.records.compliance"):
        create_app(ECHO_BOT, make_settings(tmp_path, records_kek=new_key()), batched_vad=None)
    assert not any("stored in clear" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("secret", [None, "not-whsec", "whsec_!!"])
def test_a_webhook_url_needs_a_valid_secret_in_every_profile(
    tmp_path: Path, secret: str | None
) -> None:
    s = make_settings(
        tmp_path,
        call_end_webhook_url="https://crm.example.com/hook",
        call_end_webhook_secret=secret,
    )
    with pytest.raises(UnsafeSettingsError, match="CALL_END_WEBHOOK_SECRET"):
        create_app(ECHO_BOT, s, batched_vad=None)
