"""How `voxpipe` picks its log level and format: the flag, else LOG_LEVEL / LOG_FORMAT."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from voxpipe.cli import _logging_choice, build_parser
from voxpipe.config.settings import get_settings


@pytest.fixture(autouse=True)
def fresh_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: object) -> Iterator[None]:
    monkeypatch.chdir(tmp_path)  # no .env from the working directory
    for name in ("LOG_LEVEL", "LOG_FORMAT", "VOXPIPE_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def _choice(*argv: str) -> tuple[str, str]:
    return _logging_choice(build_parser().parse_args(list(argv)))


def test_serve_defaults_to_info_text_and_the_other_commands_to_warning() -> None:
    assert _choice("serve", "bots/echo.py") == ("INFO", "text")
    assert _choice("replay", "x.jsonl") == ("WARNING", "text")


def test_log_level_and_format_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOG_LEVEL", "debug")
    monkeypatch.setenv("LOG_FORMAT", "JSON")
    assert _choice("serve", "bots/echo.py") == ("DEBUG", "json")
    assert _choice("replay", "x.jsonl") == ("DEBUG", "json")  # set explicitly: honoured


def test_the_flags_win(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOG_LEVEL", "DEBUG")
    monkeypatch.setenv("LOG_FORMAT", "json")
    argv = ("--log-level", "error", "--log-format", "text", "serve", "bots/echo.py")
    assert _choice(*argv) == ("ERROR", "text")
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--log-level", "loud", "serve", "bots/echo.py"])
