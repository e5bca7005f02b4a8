"""`voxpipe new`: a starter bot with one tool and its scenario; the bot serves a call offline."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from voxpipe import cli
from voxpipe.call import load_bot
from voxpipe.config.settings import VoxpipeSettings
from voxpipe.testing import caller_wav, run_wav_call


@pytest.fixture(autouse=True)
def _keep_test_logging(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("voxpipe.pipelines.logs.configure_logging", lambda level: None)


def test_new_writes_a_bot_and_its_scenario_and_never_overwrites(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    assert cli.main(["new", "bots/shop.py"]) == 0
    assert "wrote bots/shop.py" in capsys.readouterr().out
    bot, scenario = tmp_path / "bots" / "shop.py", tmp_path / "bots" / "shop.yaml"
    doc = yaml.safe_load(scenario.read_text())
    # The scenario format of issue 14, read by `voxpipe test`.
    assert doc["bot"] == "bots/shop.py"
    assert doc["caller"] == {"from": "+14155550100", "country": "US"}
    assert doc["settings"] == {"CONSENT_MODE": "off"}
    assert doc["turns"][0] == {
        "caller": "When do you open on Monday?",
        "expect": {"tool": "next_opening", "args": {"day": "monday"}, "reply_matches": "(?i)nine"},
    }
    # A second time: refused with a clear error, nothing touched.
    bot.write_text(bot.read_text() + "# mine\n")
    before = bot.read_text(), scenario.read_text()
    assert cli.main(["new", "bots/shop.py"]) == 2
    err = capsys.readouterr().err
    assert "bots/shop.py and bots/shop.yaml already exist" in err and "overwrite" in err
    assert (bot.read_text(), scenario.read_text()) == before
    # Only the scenario left over: still refused, the bot is not written either.
    assert cli.main(["new", "bots/other.yaml"]) == 2
    (tmp_path / "bots" / "lone.yaml").write_text("x")
    assert cli.main(["new", "bots/lone"]) == 2
    assert not (tmp_path / "bots" / "lone.py").exists()
    assert cli.main(["new", "bots/bad-name.py"]) == 2


def test_the_new_bot_serves_a_call_offline_with_its_tool(tmp_path: Path) -> None:
    assert cli.main(["new", str(tmp_path / "bots" / "shop.py")]) == 0
    bot = load_bot(tmp_path / "bots" / "shop.py")
    wav = caller_wav(
        ["when do you open on monday", ("when do you open on saturday", 6.0), "thanks goodbye"],
        tmp_path / "caller.wav",
    )
    settings = VoxpipeSettings(  # type: ignore[call-arg]
        _env_file=None, sqlite_path=str(tmp_path / "db.sqlite3"), spool_dir=str(tmp_path / "s")
    )
    out = run_wav_call(bot, wav, settings=settings, metadata={"call_id": "CAnew"})
    doc = out.transcript
    assert doc["transcripts"] == [
        "when do you open on monday",
        "when do you open on saturday",
        "goodbye",
    ]
    assert [(c["name"], c["arguments"]) for c in doc["tool_calls"]] == [
        ("next_opening", {"day": "monday"}),
        ("next_opening", {"day": "saturday"}),
    ]
    said = " ".join(doc["replies"])
    assert "On monday we are open from nine." in said
    assert "On saturday we are open from ten." in said
    assert doc["replies"][-1] == "Thanks for calling. Bye!"
