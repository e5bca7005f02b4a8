"""Typed settings for voxpipe, from the environment, a `.env` file and an optional TOML file.

Every option lives in `VoxpipeSettings` with its default and a description: that class is the one
place that lists them (`voxpipe.config.settings.options_table()` renders it). Environment names
are the field names in upper case, with no prefix (`REDIS_URL`, `LLM_TIMEOUT_S`, ...).

Precedence, highest first: keyword arguments, environment, `.env` in the working directory, the
TOML file named by `VOXPIPE_CONFIG` (flat `key = value` pairs, keys in either case), defaults.
"""

from __future__ import annotations

import base64
import binascii
import functools
import logging
import os
import tomllib
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import (
    BaseSettings,
    InitSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

CONFIG_FILE_ENV = "VOXPIPE_CONFIG"
MASK = "**********"

# Fields holding URLs that may carry a password (redis://:pw@host, postgres://user:pw@host):
# their password is masked whenever settings are shown.
_URL_FIELDS = ("redis_url", "database_url")


class VoxpipeSettings(BaseSettings):
    """Every voxpipe option, with its default and what it does; secrets are `SecretStr`."""

    model_config = SettingsConfigDict(
        env_prefix="",
        case_sensitive=False,
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        validate_default=True,
        # Validation errors must not echo values: a malformed secret is still a secret.
        hide_input_in_errors=True,
    )

    # --- Provider credentials and endpoints -------------------------------------------------
    deepgram_api_key: SecretStr | None = Field(
        None, description="Deepgram API key; without it the offline STT is used."
    )
    deepgram_base_url: str = Field(
        "wss://api.deepgram.com", description="Deepgram endpoint (point at a fake in tests)."
    )
    openai_api_key: SecretStr | None = Field(
        None, description="OpenAI (or compatible) API key; without it the offline LLM is used."
    )
    openai_base_url: str = Field(
        "https://api.openai.com/v1", description="OpenAI-compatible endpoint base URL."
    )
    openai_model: str = Field("gpt-4o-mini", description="Chat model name for the LLM.")
    elevenlabs_api_key: SecretStr | None = Field(
        None, description="ElevenLabs API key; without it the offline TTS is used."
    )
    elevenlabs_voice_id: str = Field(
        "21m00Tcm4TlvDq8ikWAM",
        description="Default ElevenLabs voice when the locale row names none.",
    )
    elevenlabs_base_url: str = Field(
        "https://api.elevenlabs.io", description="ElevenLabs endpoint base URL."
    )
    twilio_account_sid: str | None = Field(None, description="Twilio account SID (AC...).")
    twilio_auth_token: SecretStr | None = Field(
        None,
        description="Twilio auth token: signs webhooks (X-Twilio-Signature) and REST calls.",
    )
    twilio_api_base_url: str = Field(
        "https://api.twilio.com", description="Twilio REST API base URL."
    )

    # --- Server ----------------------------------------------------------------------------
    public_url: str | None = Field(
        None,
        description="Public https URL this server is reached at (used in TwiML stream URLs and "
        "webhook signature checks), e.g. https://abc.ngrok.app.",
    )
    stream_token_secret: SecretStr | None = Field(
        None,
        description="Secret that signs the per-call media-stream tokens. Set the same value on "
        "every worker behind a load balancer (a webhook answered by one worker may stream to "
        "another); unset = derived from TWILIO_AUTH_TOKEN, else random per process.",
    )
    webrtc_ice_servers: SecretStr | None = Field(
        None,
        description="ICE (STUN/TURN) servers for browser calls: comma-separated URLs or a JSON "
        "list of {urls, username, credential}; unset = host candidates only, nothing leaves the "
        "machine.",
    )
    host: str = Field("127.0.0.1", description="Interface `voxpipe serve` binds to.")
    port: int = Field(8000, ge=0, le=65535, description="Port `voxpipe serve` listens on.")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = Field(
        "INFO", description="Root log level."
    )
    ws_ping_interval_s: float = Field(
        20.0, gt=0, description="Seconds between websocket pings to a telephony/browser peer."
    )
    ws_ping_timeout_s: float = Field(
        20.0, gt=0, description="Seconds to wait for a pong before the call is treated as gone."
    )
    record_dir: str | None = Field(
        None, description="Directory to record every call's frame stream to; unset = off."
    )

    # --- Voice loop --------------------------------------------------------------------------
    stt_confidence_threshold: float = Field(
        0.65, ge=0, le=1, description="Final transcripts below this confidence are dropped."
    )
    silence_artifact_window_s: float = Field(
        0.5,
        ge=0,
        description="Single-word transcripts this soon after the bot stops are dropped as "
        "silence artifacts.",
    )
    llm_max_tokens: int = Field(120, gt=0, description="max_tokens for each LLM reply.")
    llm_timeout_s: float = Field(
        0.8, gt=0, description="Seconds to wait for the LLM's first token before retrying."
    )
    llm_retries: int = Field(
        1, ge=0, description="Retries after an LLM first-token timeout before the fallback."
    )
    llm_fallback_text: str = Field(
        "Sorry, I'm having trouble answering right now. Could you say that again?",
        description="Line spoken when the LLM times out after its retries.",
    )
    context_turns: int = Field(
        8, gt=0, description="Turns kept verbatim in the LLM context; older ones are summarized."
    )
    allow_interruptions: bool = Field(
        True, description="Let the caller barge in while the bot speaks."
    )
    default_locale: str = Field("en-US", description="Locale used when call metadata selects none.")

    # --- State ---------------------------------------------------------------------------------
    redis_url: str | None = Field(
        None,
        description="redis://host:port/db for the session store; unset = in-memory sessions.",
    )
    redis_key_prefix: str = Field("voxpipe:", description="Prefix of every Redis key voxpipe uses.")
    redis_socket_timeout_s: float = Field(
        0.5,
        gt=0,
        description="Redis connect/read timeout; beyond it the call goes on in memory.",
    )
    redis_retry_interval_s: float = Field(
        1.0,
        ge=0,
        description="Seconds between attempts to reach Redis again after it became unreachable.",
    )
    session_ttl_s: int = Field(
        3600, gt=0, description="Session state expiry, extended on every activity."
    )
    session_max_turns: int = Field(20, gt=0, description="Turns kept per session (the last N).")
    database_url: str | None = Field(
        None,
        description="postgres://user@host:port/db for transcripts and locales, or a SQLite "
        "file path (sqlite:///path also accepted); unset = SQLITE_PATH.",
    )
    sqlite_path: str = Field(
        "./voxpipe.sqlite3", description="SQLite file used when DATABASE_URL is unset."
    )
    db_timeout_s: float = Field(
        5.0, gt=0, description="Timeout for one database operation (connect or query)."
    )
    transcript_key: SecretStr | None = Field(
        None,
        description="Base64 of 32 random bytes: transcripts are encrypted at rest with "
        "AES-256-GCM. Unset = stored in clear.",
    )
    spool_dir: str = Field(
        "./voxpipe-spool",
        description="Durable local directory for transcripts the database could not take yet.",
    )
    spool_retry_interval_s: float = Field(
        5.0, gt=0, description="Seconds between attempts to write spooled transcripts."
    )
    heartbeat_interval_s: float = Field(
        10.0, gt=0, description="Seconds between a live call's heartbeats to the session store."
    )
    heartbeat_timeout_s: float = Field(
        60.0,
        gt=0,
        description="A session with no heartbeat for this long is orphaned (its worker died).",
    )
    sweeper_interval_s: float = Field(30.0, gt=0, description="Seconds between orphan sweeps.")

    # --- Compliance -------------------------------------------------------------------------
    # --- consent by jurisdiction and locales (issue 10 points 5-6, issue 18 point 5) ---------
    consent_mode: Literal["auto", "always", "notice", "off"] = Field(
        "auto",
        description="Retention consent on phone calls: auto = the policy of the caller's "
        "locale row (ivr: press 1 / 2 or say yes / no; notice: a recording notice, continuing "
        "is consent; none), always = ask every caller, notice = a notice for every caller, "
        "off = never. `phone` (the old default) is read as auto.",
    )
    consent_prompt: str | None = Field(
        None,
        description="The consent prompt to speak; unset = the locale's wording "
        "(voxpipe/config/texts/<language>.json).",
    )
    consent_answer_timeout_s: float = Field(
        8.0, gt=0, description="Seconds to wait for a key after the consent prompt has played."
    )
    consent_ttl_days: float = Field(
        365.0,
        gt=0,
        description="A caller's stored consent choice expires after this many days and they "
        "are asked again.",
    )
    locale_table_refresh_s: float = Field(
        5.0,
        gt=0,
        description="Seconds between background reads of the locale table: a row added to the "
        "database is used within this time, without a restart.",
    )
    language_menu: bool = Field(
        False,
        description="Offer every Twilio caller the language menu (a key per locale row with an "
        "ivr_digit); unset = only callers whose country has several language rows.",
    )
    language_menu_timeout_s: int = Field(
        5, gt=0, le=30, description="Seconds the language menu waits for a key."
    )

    @field_validator("consent_mode", mode="before")
    @classmethod
    def _consent_mode_alias(cls, value: Any) -> Any:
        if isinstance(value, str) and value.strip().lower() == "phone":
            logging.getLogger("voxpipe.config").warning(
                "CONSENT_MODE=phone is deprecated: it now means auto (the consent policy of the "
                "caller's locale row, on phone calls); set CONSENT_MODE=auto"
            )
            return "auto"
        return value.strip().lower() if isinstance(value, str) else value

    payment_resume_after_s: float = Field(
        6.0,
        gt=0,
        description="A payment pause (no recording, no transcription) ends after this many "
        "seconds with neither the caller nor the bot speaking.",
    )
    payment_max_pause_s: float = Field(
        120.0, gt=0, description="A payment pause ends after this many seconds at the latest."
    )

    @field_validator("transcript_key")
    @classmethod
    def _check_transcript_key(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or value.get_secret_value() == "":
            return None
        try:
            raw = base64.b64decode(value.get_secret_value(), validate=True)
        except (binascii.Error, ValueError):
            raw = b""
        if len(raw) != 32:
            # Never echo the value: it is a secret even when malformed.
            raise ValueError(
                "TRANSCRIPT_KEY must be base64 of exactly 32 bytes (AES-256). Generate one with: "
                'python -c "import os,base64;print(base64.b64encode(os.urandom(32)).decode())"'
            )
        return value

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_log_level(cls, value: Any) -> Any:
        return value.strip().upper() if isinstance(value, str) else value

    @field_validator(
        "redis_url",
        "database_url",
        "public_url",
        "record_dir",
        "twilio_account_sid",
        "deepgram_api_key",
        "openai_api_key",
        "elevenlabs_api_key",
        "twilio_auth_token",
        "webrtc_ice_servers",
        "stream_token_secret",
        "consent_prompt",
        mode="before",
    )
    @classmethod
    def _empty_is_unset(cls, value: Any) -> Any:
        # `REDIS_URL=` in a .env file means "not set", not "connect to ''".
        return None if isinstance(value, str) and value.strip() == "" else value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings, dotenv_settings]
        config_file = os.environ.get(CONFIG_FILE_ENV, "").strip()
        if config_file:
            path = Path(config_file)
            if not path.is_file():
                raise FileNotFoundError(
                    f"{CONFIG_FILE_ENV}={config_file} does not exist: point it at a TOML file "
                    "of settings or unset it."
                )
            sources.append(_TomlFileSource(settings_cls, path))
        return tuple(sources)

    def transcript_key_bytes(self) -> bytes | None:
        """The AES-256 key for transcripts, or None when encryption at rest is off."""
        if self.transcript_key is None:
            return None
        return base64.b64decode(self.transcript_key.get_secret_value())

    def safe_dump(self) -> dict[str, Any]:
        """Every setting as a plain dict, with secrets and URL passwords masked; safe to log."""
        out: dict[str, Any] = {}
        for name in type(self).model_fields:
            value = getattr(self, name)
            if isinstance(value, SecretStr):
                out[name] = MASK
            elif name in _URL_FIELDS and isinstance(value, str):
                out[name] = mask_url_password(value)
            else:
                out[name] = value
        return out

    def __repr_args__(self) -> Any:
        # The default repr would show URL passwords; show the masked dump instead.
        return list(self.safe_dump().items())


class _TomlFileSource(InitSettingsSource):
    """Settings from a flat TOML file; keys in any case (`REDIS_URL` or `redis_url`)."""

    def __init__(self, settings_cls: type[BaseSettings], path: Path) -> None:
        try:
            with path.open("rb") as f:
                data = tomllib.load(f)
        except tomllib.TOMLDecodeError as exc:
            raise ValueError(f"{CONFIG_FILE_ENV}={path} is not valid TOML: {exc}") from exc
        values = {str(k).lower(): v for k, v in data.items()}
        # Unlike the environment (full of unrelated variables), every key in our own file
        # must be a setting: a typo should fail loudly, not be silently ignored.
        unknown = sorted(set(values) - set(settings_cls.model_fields))
        if unknown:
            raise ValueError(
                f"{CONFIG_FILE_ENV}={path}: unknown setting(s) {', '.join(unknown)}; "
                "see voxpipe.config.settings.options_table() for the valid names."
            )
        super().__init__(settings_cls, values)


def mask_url_password(url: str) -> str:
    """`redis://:pw@host:6379/0` -> `redis://:**********@host:6379/0`; other URLs unchanged."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    if parts.password is None:
        return url
    userinfo = f"{parts.username or ''}:{MASK}"
    host = parts.hostname or ""
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    netloc = f"{userinfo}@{host}" + (f":{parts.port}" if parts.port is not None else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def options_table() -> list[tuple[str, str, str]]:
    """(ENV_NAME, default, description) for every option, for docs and `voxpipe` help output."""
    rows = []
    for name, field in VoxpipeSettings.model_fields.items():
        default = field.default
        shown = "(unset)" if default is None else repr(default)
        rows.append((name.upper(), shown, field.description or ""))
    return rows


@functools.lru_cache(maxsize=1)
def get_settings() -> VoxpipeSettings:
    """The process-wide settings, read once (call `get_settings.cache_clear()` to re-read)."""
    return VoxpipeSettings()  # type: ignore[call-arg]  # values come from the environment
