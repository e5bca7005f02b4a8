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

# Carriers voxpipe can serve (CARRIERS); "sip" has no transport yet and serves no route.
KNOWN_CARRIERS = ("twilio", "telnyx", "vonage", "sip")

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
    openai_model: str = Field(
        "gpt-4o", description="Chat model name for the LLM (the spec's choice, issue 10)."
    )
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
        "machine. Browsers get TURN credentials from TURN_SECRET only: a static credential here "
        "is used by the server's own peer and never served.",
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

    # --- security: carriers (issue 18) -----------------------------------------------------
    carriers: str = Field(
        "twilio,telnyx,vonage,sip",
        description="Carriers offered, comma-separated (twilio, telnyx, vonage, sip). A listed "
        "carrier's webhook and stream routes are served only when its verification secret is "
        "set (TWILIO_AUTH_TOKEN, TELNYX_PUBLIC_KEY, VONAGE_SIGNATURE_SECRET) or "
        "ALLOW_UNSIGNED_WEBHOOKS=1 on a loopback address; otherwise they answer 404.",
    )
    telnyx_public_key: str | None = Field(
        None,
        description="Telnyx account public key (base64 Ed25519, Mission Control > Keys & "
        "Credentials): checks telnyx-signature-ed25519 on Telnyx webhooks.",
    )
    vonage_signature_secret: SecretStr | None = Field(
        None,
        description="Vonage signature secret: checks the signed-webhook JWT (HS256, "
        "Authorization: Bearer) on Vonage answer webhooks.",
    )
    allow_unsigned_webhooks: bool = Field(
        False,
        description="Development only: serve carriers that have no verification secret, "
        "unsigned. Refused when the server binds to a non-loopback address.",
    )
    webhook_replay_window_s: float = Field(
        300.0,
        gt=0,
        description="A signed webhook whose timestamp (Telnyx) or iat (Vonage) is further "
        "than this from now is refused as a replay.",
    )

    # --- direct SIP (issue 16) -----------------------------------------------------------
    sip_listen: str | None = Field(
        None,
        description="HOST:PORT the SIP user agent listens on (UDP and TCP; TLS on PORT+1 when "
        "SIP_TLS_CERT is set); unset = no SIP. Same as `voxpipe serve --sip HOST:PORT`.",
    )
    sip_username: str | None = Field(
        None, description="Digest user name the trunk/PBX must authenticate INVITEs with."
    )
    sip_password: SecretStr | None = Field(
        None, description="Digest password for SIP_USERNAME; both set = INVITEs are challenged."
    )
    sip_allow: str = Field(
        "",
        description="Source addresses/networks allowed to send SIP (comma-separated IPs or "
        "CIDRs); empty = any. Others get 403.",
    )
    sip_tls_cert: str | None = Field(None, description="PEM certificate for SIP over TLS.")
    sip_tls_key: str | None = Field(None, description="PEM private key for SIP_TLS_CERT.")
    sip_public_ip: str | None = Field(
        None,
        description="IP address put in SDP/Contact when the listener binds a wildcard or "
        "sits behind NAT; unset = the listen address.",
    )
    sip_rtp_ports: str = Field(
        "20000-20999", description="UDP port range (MIN-MAX) for RTP media of SIP calls."
    )
    sip_rtp_timeout_s: float = Field(
        15.0, gt=0, description="A SIP call with no RTP for this long ends (caller gone)."
    )
    sip_session_expires_s: int = Field(
        1800, ge=90, description="RFC 4028 session interval offered on SIP calls."
    )

    @field_validator("sip_listen")
    @classmethod
    def _check_sip_listen(cls, value: str | None) -> str | None:
        if value:
            host, sep, port = value.strip().rpartition(":")
            if not sep or not host or not port.isdigit() or int(port) > 65535:
                raise ValueError(f"SIP_LISTEN must be HOST:PORT (e.g. 0.0.0.0:5060), got {value!r}")
        return value

    @field_validator("sip_rtp_ports")
    @classmethod
    def _check_sip_rtp_ports(cls, value: str) -> str:
        lo, sep, hi = value.partition("-")
        if not (sep and lo.isdigit() and hi.isdigit() and 1024 <= int(lo) < int(hi) <= 65535):
            raise ValueError(f"SIP_RTP_PORTS must be MIN-MAX within 1024-65535, got {value!r}")
        return value

    @field_validator("carriers", mode="before")
    @classmethod
    def _check_carriers(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        names = [n.strip().lower() for n in value.split(",") if n.strip()]
        unknown = sorted(set(names) - set(KNOWN_CARRIERS))
        if unknown:
            raise ValueError(
                f"CARRIERS: unknown carrier(s) {', '.join(unknown)}; choose from "
                f"{', '.join(KNOWN_CARRIERS)}"
            )
        return ",".join(dict.fromkeys(names))

    @field_validator("telnyx_public_key", "vonage_signature_secret", mode="before")
    @classmethod
    def _carrier_secret_empty_is_unset(cls, value: Any) -> Any:
        return None if isinstance(value, str) and value.strip() == "" else value

    @field_validator("telnyx_public_key")
    @classmethod
    def _check_telnyx_public_key(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            raw = base64.b64decode(value.strip(), validate=True)
        except (binascii.Error, ValueError):
            raw = b""
        if len(raw) != 32:
            raise ValueError(
                "TELNYX_PUBLIC_KEY must be the base64 Ed25519 public key (32 bytes) shown in "
                "Telnyx Mission Control under Keys & Credentials"
            )
        return value.strip()

    # --- Voice loop --------------------------------------------------------------------------
    stt_confidence_threshold: float = Field(
        0.65, ge=0, le=1, description="Final transcripts below this confidence are dropped."
    )
    escalation_sentiment_threshold: float = Field(
        -0.5,
        ge=-1.0,
        le=0.0,
        description="VADER compound score (-1 very negative .. 0 neutral) at or below which a "
        "caller's utterance counts as strongly negative; two such utterances in a call (or one "
        "at -0.85 or below) escalate to a human.",
    )
    silence_artifact_window_s: float = Field(
        0.5,
        ge=0,
        description="Single-word transcripts said this soon after the bot's audio stopped "
        "playing (word start on the call's audio timeline) are dropped as silence artifacts.",
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
        8,
        gt=0,
        description="Conversation messages (caller and bot, not exchanges) sent verbatim to the "
        "LLM; a tool call counts with its results; older ones are summarized (issue 10).",
    )
    allow_interruptions: bool = Field(
        True, description="Let the caller barge in while the bot speaks."
    )
    # --- Turn-taking (issue 13): one code path builds every call's (voxpipe.processors.turn) --
    turn_detection: Literal["smart", "vad"] = Field(
        "smart",
        description="How the end of the caller's turn is decided: `smart` (a short VAD silence, "
        "then the Smart Turn model: complete ends the turn, incomplete waits up to "
        "TURN_MAX_WAIT_S) or `vad` (VAD_STOP_S of silence alone).",
    )
    vad_stop_s: float | None = Field(
        None,
        ge=0.05,
        le=5.0,
        description="Silence before the VAD reports the caller stopped; unset = 0.2 s with "
        "TURN_DETECTION=smart, 0.8 s with vad.",
    )
    vad_start_s: float = Field(
        0.2, ge=0.0, le=2.0, description="Speech before the VAD reports the caller started."
    )
    vad_confidence: float = Field(
        0.7, ge=0.0, le=1.0, description="Silero speech probability a window needs."
    )
    vad_min_volume: float = Field(
        0.6, ge=0.0, le=1.0, description="Volume (0..1; 0.6 = -46 dBFS) a window needs."
    )
    turn_max_wait_s: float = Field(
        2.0,
        ge=0.1,
        le=10.0,
        description="Smart turn: the longest silence a turn judged incomplete waits before it "
        "ends anyway (counted from the caller's last speech).",
    )
    turn_complete_threshold: float = Field(
        0.5, ge=0.0, le=1.0, description="Smart Turn probability at which a turn is complete."
    )
    turn_shed_after_s: float = Field(
        0.5,
        ge=0.0,
        le=10.0,
        description="Smart turn under overload: when a decision would wait longer than this "
        "for the worker's inference thread (decisions queued times their recent cost), the "
        "model is skipped and the turn ends after the VAD-only silence (0.8 s) instead. "
        "0 = never skip.",
    )
    interruption_mode: Literal["smart", "immediate"] = Field(
        "smart",
        description="Caller speech over the bot: `smart` pauses the bot and judges the words "
        "(a backchannel such as 'uh-huh' or a cough resumes it where it paused; 'wait', 'no' or "
        "a real sentence interrupts; lists per language in the locale data) where the bot has "
        "an interruption arbiter after its STT; `immediate`: the VAD alone interrupts.",
    )
    backchannel_max_s: float = Field(
        0.8,
        ge=0.2,
        le=3.0,
        description="Smart interruptions: caller speech over the bot this long interrupts "
        "whatever its words (shorter speech is judged by its words).",
    )
    backchannel_min_words: int = Field(
        2,
        ge=1,
        le=10,
        description="Smart interruptions: words that are not backchannels which interrupt the "
        "bot while the caller is still speaking (after they stop, one is enough).",
    )
    preemptive_replies: bool = Field(
        True,
        description="Start the reply (LLM) from the words heard when the caller goes quiet, "
        "before the turn is confirmed; it is held, and discarded unheard if the caller goes on "
        "or the final transcript differs (counted as preemptive_discarded).",
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

    # --- callback continuity (issue 17) -----------------------------------------------------
    callback_continuity: Literal["on", "off"] = Field(
        "on",
        description="A caller who calls back within SESSION_TTL_S of their last call's activity "
        "continues that conversation (found by an HMAC of the caller id; withheld numbers never "
        "continue; details stay withheld until the bot verifies the caller).",
    )

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

    # --- telephony: warm transfer (issue 11) -------------------------------------------------
    transfer_to: str | None = Field(
        None,
        description="Where escalated calls go, tried in order: a comma list of E.164 numbers or "
        "sip: URIs (e.g. '+15550001111,sip:desk@pbx.example.com'). Unset = no transfer path: "
        "the bot takes a message instead.",
    )
    transfer_ring_timeout_s: int = Field(
        20, ge=5, le=600, description="Seconds an agent's phone rings before the next is tried."
    )
    transfer_hold_url: str | None = Field(
        None,
        description="Hold audio (or TwiML) the caller hears while an agent is dialled; unset = "
        "the short hold tone the server serves at /transfer/hold.wav.",
    )
    transfer_from: str | None = Field(
        None,
        description="Caller id for the agent legs (a number of your Twilio, Telnyx or Vonage "
        "account); unset = the number the caller dialled.",
    )
    desk_token: SecretStr | None = Field(
        None,
        description="Bearer token of the agent desk (/desk, /api/escalations); unset = no desk.",
    )
    telnyx_api_key: SecretStr | None = Field(
        None,
        description="Telnyx API key (Bearer) for Call Control: with TRANSFER_TO, "
        "TELNYX_CONNECTION_ID, TELNYX_PUBLIC_KEY and PUBLIC_URL, Telnyx calls get warm transfers.",
    )
    telnyx_connection_id: str | None = Field(
        None,
        description="Telnyx Call Control connection (application) id the agent legs are dialled "
        "from; its webhook URL should be PUBLIC_URL/transfer/telnyx/events.",
    )
    telnyx_api_base_url: str = Field(
        "https://api.telnyx.com", description="Telnyx REST API base URL."
    )
    vonage_application_id: str | None = Field(
        None,
        description="Vonage application id: the REST calls of a Vonage warm transfer are "
        "authorised with an RS256 JWT of this application.",
    )
    vonage_private_key: SecretStr | None = Field(
        None,
        description="The Vonage application's private key: PEM text, or the path of a PEM file. "
        "With VONAGE_APPLICATION_ID, TRANSFER_TO, VONAGE_SIGNATURE_SECRET and PUBLIC_URL, "
        "Vonage calls get warm transfers.",
    )
    vonage_api_base_url: str = Field(
        "https://api.nexmo.com", description="Vonage Voice API base URL."
    )

    @field_validator(
        "transfer_to",
        "transfer_hold_url",
        "transfer_from",
        "desk_token",
        "telnyx_api_key",
        "telnyx_connection_id",
        "vonage_application_id",
        "vonage_private_key",
        mode="before",
    )
    @classmethod
    def _transfer_empty_is_unset(cls, value: Any) -> Any:
        return None if isinstance(value, str) and value.strip() == "" else value

    # --- security: the server's edge (issue 18) ---------------------------------------------
    webrtc: Literal["auto", "off", "token", "open"] = Field(
        "auto",
        description="Browser calls (the page at /, /webrtc/config, /webrtc/offer): off = no "
        "routes; token = every offer and config request must carry WEBRTC_TOKEN (Authorization: "
        "Bearer); open = anyone who reaches the server may call. auto = open when the server "
        "binds to a loopback address, token otherwise.",
    )
    webrtc_token: SecretStr | None = Field(
        None,
        description="WEBRTC=token: the bearer token itself, or the HS256 key of short-lived JWTs "
        "(with an `exp` claim) minted by the operator's backend. Unset in token mode = browser "
        "calls refused.",
    )
    webrtc_offer_timeout_s: float = Field(
        10.0,
        gt=0,
        description="A WebRTC offer whose peer connection is not up within this many seconds "
        "expires and releases its resources; no bot runs before the connection is up.",
    )
    metrics_token: SecretStr | None = Field(
        None, description="When set, GET /metrics requires `Authorization: Bearer <token>`."
    )
    turn_secret: SecretStr | None = Field(
        None,
        description="Shared secret of the TURN server (coturn `static-auth-secret`): "
        "/webrtc/config hands browsers time-limited TURN REST API credentials for the turn: "
        "URLs of WEBRTC_ICE_SERVERS; a static TURN password is never served.",
    )
    turn_ttl_s: int = Field(
        3600, gt=0, le=86400, description="Lifetime of the TURN credentials /webrtc/config gives."
    )
    max_calls: int = Field(
        200,
        ge=0,
        description="Concurrent calls (media streams and WebRTC offers) one worker accepts; "
        "beyond it voice webhooks answer busy and streams/offers get 503. 0 = no limit.",
    )
    # --- workers, capacity and draining (issue 15) ---------------------------------------------
    workers: int = Field(
        0,
        ge=0,
        le=256,
        description="Worker processes `voxpipe serve` runs on one port (SO_REUSEPORT), each "
        "with its own event loop and batched VAD; 0 = one per CPU core. `--workers` wins.",
    )
    max_calls_per_worker: int = Field(
        0,
        ge=0,
        description="Concurrent calls one worker process takes (its capacity); 0 = MAX_CALLS "
        "alone. When both are set the smaller wins. Beyond it a voice webhook is sent to a "
        "server with room (WORKER_URL, REDIS_URL) or answered with a polite busy message.",
    )
    drain_timeout_s: float = Field(
        120.0,
        ge=0,
        description="On SIGTERM a worker takes no new call and lets live calls finish for up "
        "to this long, then ends them cleanly (transcripts written). Set the pod's "
        "terminationGracePeriodSeconds above it.",
    )
    gc_sweep_interval_s: float = Field(
        60.0,
        ge=0,
        description="Seconds between full garbage collections while calls end. An ended call "
        "is taken apart so reference counting frees it; the sweep frees what a bot's own "
        "cycles (closures that capture each other) leave behind. Each one pauses the event "
        "loop ~35 ms at 100 calls. 0 = off (memory then grows with such leftovers).",
    )
    worker_url: str | None = Field(
        None,
        description="Base URL (https://...) at which the carrier reaches this server directly; "
        "registered in Redis with the load of each worker so that a full server sends new "
        "calls' streams to one with room. Unset: this server is no overflow target.",
    )
    worker_heartbeat_s: float = Field(
        2.0,
        gt=0,
        description="How often each worker publishes its load to the Redis worker registry.",
    )
    max_calls_per_carrier: str | None = Field(
        None,
        description="Per-carrier concurrent call limits within MAX_CALLS, e.g. "
        "`twilio:100,telnyx:50,webrtc:10`; carriers not named share MAX_CALLS only.",
    )
    max_body_bytes: int = Field(
        64 * 1024,
        gt=0,
        description="Largest HTTP request body accepted (webhooks, offers), checked before "
        "parsing: beyond it 413.",
    )
    log_format: Literal["text", "json"] = Field(
        "text", description="Log lines as text, or one JSON object per line (json)."
    )

    # --- records: encryption, retention, records API, call-end webhook (issue 12) -----------
    records_kek: SecretStr | None = Field(
        None,
        description="Key-encryption key, base64 of 32 random bytes: every transcript (turns, "
        "caller and called numbers, metadata) is sealed with AES-256-GCM under a fresh data key "
        "wrapped by it. Unset = TRANSCRIPT_KEY is the KEK; both unset = stored in clear.",
    )
    records_kek_previous: SecretStr | None = Field(
        None,
        description="Comma-separated base64 KEKs that still unwrap older data keys, until "
        "`voxpipe records rotate-key` has re-wrapped them under RECORDS_KEK.",
    )
    compliance_profile: Literal["default", "hipaa"] = Field(
        "default",
        description="hipaa = refuse to start without a KEK, with clear-text storage, or with a "
        "PUBLIC_URL that is not https; default = warn when keys are absent.",
    )
    retention_days: int = Field(
        2190,
        gt=0,
        description="Days a call record is kept after the call (six years); then purged unless "
        "under legal hold.",
    )
    purge_interval_s: float = Field(
        3600.0, gt=0, description="Seconds between runs of the server's retention purge."
    )
    call_end_webhook_url: str | None = Field(
        None, description="URL that receives a signed JSON POST (Standard Webhooks) per call."
    )
    call_end_webhook_secret: SecretStr | None = Field(
        None, description="Signing secret of the call-end webhook, `whsec_<base64>`."
    )
    call_end_webhook_caller: Literal["hmac", "masked"] = Field(
        "hmac",
        description="How the call-end webhook names the caller: hmac (keyed hash, for "
        "look-ups) or masked (last 4 digits).",
    )
    call_end_webhook_max_backoff_s: float = Field(
        300.0, gt=0, description="Longest wait between call-end webhook delivery attempts."
    )

    records_jwks_url: str | None = Field(
        None,
        description="Also accept OIDC JWTs on the records API, verified with this JWKS URL "
        "(the role is the claim RECORDS_JWT_ROLE_CLAIM).",
    )
    records_jwt_audience: str | None = Field(
        None, description="Required `aud` of records API JWTs (unset = not checked)."
    )
    records_jwt_role_claim: str = Field(
        "role", description="JWT claim holding the role: admin, auditor or agent."
    )

    # --- records: call recording and object storage (issue 12, points 1 and 3) -------------
    recording: Literal["on", "off"] = Field(
        "on",
        description="Record calls (two channels: caller left, bot as heard right) where "
        "consent allows; off = never.",
    )
    recordings_url: str = Field(
        "./voxpipe-recordings",
        description="Where finished recordings go: file:///path (or a plain path) or "
        "s3://bucket/prefix. Written through the durable spool SPOOL_DIR/recordings.",
    )
    s3_endpoint_url: str | None = Field(
        None, description="S3-compatible endpoint (unset = AWS); credentials the standard AWS way."
    )
    s3_sse: str | None = Field(
        None, description="Server-side encryption header for uploads: AES256 or aws:kms."
    )
    s3_sse_kms_key_id: str | None = Field(
        None, description="KMS key id sent with S3_SSE=aws:kms (unset = the bucket's default)."
    )
    s3_multipart_threshold_mb: int = Field(
        8, ge=5, description="Recordings larger than this many MiB are uploaded in parts."
    )

    @field_validator("records_kek")
    @classmethod
    def _check_records_kek(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or value.get_secret_value().strip() == "":
            return None
        if _b64_key(value.get_secret_value()) is None:
            raise ValueError("RECORDS_KEK must be base64 of exactly 32 bytes (AES-256).")
        return value

    @field_validator("records_kek_previous")
    @classmethod
    def _check_previous_keks(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or value.get_secret_value().strip() == "":
            return None
        for part in value.get_secret_value().split(","):
            if _b64_key(part.strip()) is None:
                raise ValueError("RECORDS_KEK_PREVIOUS: each key must be base64 of 32 bytes.")
        return value

    def records_keks(self) -> tuple[bytes | None, tuple[bytes, ...]]:
        """(current KEK, previous KEKs): RECORDS_KEK, else TRANSCRIPT_KEY, is the current one.

        TRANSCRIPT_KEY, when it is not the current KEK, stays a previous key: what it sealed
        still opens.
        """
        legacy = self.transcript_key_bytes()
        current = _b64_key(self.records_kek.get_secret_value()) if self.records_kek else legacy
        previous = [
            k
            for k in (
                _b64_key(p.strip())
                for p in (
                    self.records_kek_previous.get_secret_value().split(",")
                    if self.records_kek_previous
                    else []
                )
            )
            if k is not None
        ]
        if legacy is not None and legacy != current:
            previous.append(legacy)
        return current, tuple(previous)

    @field_validator("webrtc", "log_format", mode="before")
    @classmethod
    def _lower_choice(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value

    # --- outages: providers (issue 18) ---
    provider_outage_grace_s: float = Field(
        30.0,
        gt=0,
        description="Seconds a provider (STT, LLM, TTS) may stay unreachable while the call "
        "goes on (apology said, reconnecting with backoff) before the call is ended politely.",
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
        "webrtc_token",
        "metrics_token",
        "turn_secret",
        "max_calls_per_carrier",
        "worker_url",
        "call_end_webhook_url",
        "records_jwks_url",
        "records_jwt_audience",
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


def _b64_key(text: str) -> bytes | None:
    """32 bytes from base64, or None when it is not exactly that."""
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None
    return raw if len(raw) == 32 else None


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
