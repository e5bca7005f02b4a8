"""VoxpipeSettings: defaults, sources and their precedence, validation, and secrets masking."""

from __future__ import annotations

import base64
import logging
import os
from pathlib import Path

import pytest
from pydantic import SecretStr, ValidationError

from voxpipe.config.settings import (
    MASK,
    VoxpipeSettings,
    get_settings,
    mask_url_password,
    options_table,
)

KEY_B64 = base64.b64encode(bytes(range(32))).decode()


def test_defaults_are_the_production_defaults() -> None:
    s = VoxpipeSettings()
    assert s.stt_confidence_threshold == 0.65
    assert s.llm_max_tokens == 120
    assert s.llm_timeout_s == 0.8
    assert s.context_turns == 8
    assert s.openai_model == "gpt-4o"  # the spec's model; OPENAI_MODEL overrides
    assert s.session_ttl_s == 3600
    assert s.session_max_turns == 20
    assert s.silence_artifact_window_s == 0.5
    assert s.default_locale == "en-US"
    # Embedded defaults: no servers needed.
    assert s.redis_url is None and s.database_url is None
    assert s.sqlite_path == "./voxpipe.sqlite3"
    assert s.transcript_key is None and s.transcript_key_bytes() is None


def test_every_option_is_documented_in_one_table() -> None:
    rows = options_table()
    assert [r[0] for r in rows] == [n.upper() for n in VoxpipeSettings.model_fields]
    undocumented = [name for name, _, description in rows if len(description) < 10]
    assert undocumented == []
    names = {r[0] for r in rows}
    for required in (
        "DEEPGRAM_API_KEY", "OPENAI_API_KEY", "ELEVENLABS_API_KEY", "ELEVENLABS_VOICE_ID",
        "DEEPGRAM_BASE_URL", "OPENAI_BASE_URL", "ELEVENLABS_BASE_URL", "OPENAI_MODEL",
        "TWILIO_ACCOUNT_SID", "TWILIO_AUTH_TOKEN", "TWILIO_API_BASE_URL", "PUBLIC_URL",
        "REDIS_URL", "DATABASE_URL", "TRANSCRIPT_KEY", "STT_CONFIDENCE_THRESHOLD",
        "LLM_MAX_TOKENS", "LLM_TIMEOUT_S", "LLM_FALLBACK_TEXT", "CONTEXT_TURNS", "SESSION_TTL_S",
        "SESSION_MAX_TURNS", "SILENCE_ARTIFACT_WINDOW_S", "SPOOL_DIR", "SWEEPER_INTERVAL_S",
        "HEARTBEAT_TIMEOUT_S", "WS_PING_INTERVAL_S", "WS_PING_TIMEOUT_S", "HOST", "PORT",
        "LOG_LEVEL", "RECORD_DIR",
    ):  # fmt: skip
        assert required in names


def test_environment_names_have_no_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_URL", "redis://10.0.0.5:6379/2")
    monkeypatch.setenv("LLM_TIMEOUT_S", "1.5")
    monkeypatch.setenv("session_max_turns", "12")  # case does not matter
    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-env")
    s = VoxpipeSettings()
    assert s.redis_url == "redis://10.0.0.5:6379/2"
    assert s.llm_timeout_s == 1.5
    assert s.session_max_turns == 12
    assert isinstance(s.openai_api_key, SecretStr)
    assert s.openai_api_key.get_secret_value() == "sk-from-env"


def test_empty_value_means_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_URL", "")
    monkeypatch.setenv("DEEPGRAM_API_KEY", "  ")
    s = VoxpipeSettings()
    assert s.redis_url is None and s.deepgram_api_key is None


def test_dotenv_in_working_directory_and_env_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    Path(".env").write_text("PORT=9001\nOPENAI_MODEL=from-dotenv\n")
    assert VoxpipeSettings().port == 9001
    monkeypatch.setenv("PORT", "9002")
    s = VoxpipeSettings()
    assert s.port == 9002 and s.openai_model == "from-dotenv"


def test_toml_file_named_by_voxpipe_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    path = tmp_path / "voxpipe.toml"
    path.write_text('REDIS_URL = "redis://file:6379/0"\nllm_max_tokens = 64\nport = 7000\n')
    Path(".env").write_text("PORT=7001\n")
    monkeypatch.setenv("VOXPIPE_CONFIG", str(path))
    monkeypatch.setenv("LLM_MAX_TOKENS", "99")
    s = VoxpipeSettings()
    assert s.redis_url == "redis://file:6379/0"
    assert s.llm_max_tokens == 99  # environment beats the file
    assert s.port == 7001  # .env beats the file


def test_toml_file_problems_are_explained(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("VOXPIPE_CONFIG", str(tmp_path / "missing.toml"))
    with pytest.raises(FileNotFoundError, match="VOXPIPE_CONFIG"):
        VoxpipeSettings()
    typo = tmp_path / "typo.toml"
    typo.write_text('redis_ur = "redis://x"\n')
    monkeypatch.setenv("VOXPIPE_CONFIG", str(typo))
    with pytest.raises(ValueError, match="unknown setting.*redis_ur"):
        VoxpipeSettings()
    broken = tmp_path / "broken.toml"
    broken.write_text("port = = 3\n")
    monkeypatch.setenv("VOXPIPE_CONFIG", str(broken))
    with pytest.raises(ValueError, match="not valid TOML"):
        VoxpipeSettings()


def test_invalid_values_are_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STT_CONFIDENCE_THRESHOLD", "1.5")
    with pytest.raises(ValidationError, match="stt_confidence_threshold"):
        VoxpipeSettings()


def test_transcript_key_must_be_32_bytes_and_is_never_echoed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    bad = base64.b64encode(b"short-secret-key").decode()
    monkeypatch.setenv("TRANSCRIPT_KEY", bad)
    with pytest.raises(ValidationError) as info:
        VoxpipeSettings()
    assert "32 bytes" in str(info.value)
    assert bad not in str(info.value)
    monkeypatch.setenv("TRANSCRIPT_KEY", KEY_B64)
    assert VoxpipeSettings().transcript_key_bytes() == bytes(range(32))


def test_safe_dump_masks_secrets_and_url_passwords() -> None:
    s = VoxpipeSettings(
        openai_api_key="sk-very-secret",
        deepgram_api_key="dg-very-secret",
        elevenlabs_api_key="el-very-secret",
        twilio_auth_token="tw-very-secret",
        transcript_key=KEY_B64,
        redis_url="redis://:redis-pass@cache:6379/0",
        database_url="postgresql://app:db-pass@db:5432/voxpipe",
    )
    dump = s.safe_dump()
    assert set(dump) == set(VoxpipeSettings.model_fields)
    for field in (
        "openai_api_key",
        "deepgram_api_key",
        "elevenlabs_api_key",
        "twilio_auth_token",
        "transcript_key",
    ):
        assert dump[field] == MASK
    assert dump["redis_url"] == f"redis://:{MASK}@cache:6379/0"
    assert dump["database_url"] == f"postgresql://app:{MASK}@db:5432/voxpipe"
    assert dump["llm_max_tokens"] == 120
    secrets = ["very-secret", "redis-pass", "db-pass", KEY_B64]
    for text in (str(dump), repr(s), str(s)):
        for secret in secrets:
            assert secret not in text


def test_logging_settings_leaks_no_secret(caplog: pytest.LogCaptureFixture) -> None:
    s = VoxpipeSettings(openai_api_key="sk-log-secret", redis_url="redis://u:pw-secret@h:1/0")
    with caplog.at_level(logging.INFO):
        logging.getLogger("voxpipe.test").info("settings: %s / %r", s, s)
        logging.getLogger("voxpipe.test").info("dump: %s", s.safe_dump())
    assert "sk-log-secret" not in caplog.text and "pw-secret" not in caplog.text
    assert "redis://u:**********@h:1/0" in caplog.text


def test_mask_url_password_leaves_other_urls_alone() -> None:
    assert mask_url_password("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"
    assert mask_url_password("./voxpipe.sqlite3") == "./voxpipe.sqlite3"
    assert mask_url_password("postgres://u:p@[::1]:5432/d") == f"postgres://u:{MASK}@[::1]:5432/d"


def test_get_settings_is_cached_until_cleared(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PORT", "8100")
    first = get_settings()
    monkeypatch.setenv("PORT", "8200")
    assert get_settings() is first and first.port == 8100
    get_settings.cache_clear()
    assert get_settings().port == 8200
    assert os.environ["PORT"] == "8200"


def test_log_level_is_case_insensitive(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOG_LEVEL", "debug")
    assert VoxpipeSettings().log_level == "DEBUG"
    monkeypatch.setenv("LOG_LEVEL", "loud")
    with pytest.raises(ValidationError, match="log_level"):
        VoxpipeSettings()
