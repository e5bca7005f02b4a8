"""stt_from_settings / tts_from_settings: cloud services with keys, the offline stack without."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from voxpipe.config.locales import load_seed_rows
from voxpipe.config.settings import VoxpipeSettings
from voxpipe.processors.stt.deepgram import DeepgramSTTService
from voxpipe.processors.stt.factory import stt_from_settings
from voxpipe.processors.stt.pocketsphinx import PocketSphinxSTTService
from voxpipe.processors.tts.elevenlabs import ElevenLabsTTSService
from voxpipe.processors.tts.espeak import EspeakTTSService
from voxpipe.processors.tts.factory import tts_from_settings


@pytest.fixture
def settings_without_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> type[VoxpipeSettings]:
    """Settings built only from the test's arguments (no .env, no provider keys from outside)."""
    for name in ("DEEPGRAM_API_KEY", "ELEVENLABS_API_KEY", "VOXPIPE_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    return VoxpipeSettings


def row(locale: str):  # type: ignore[no-untyped-def]
    return next(r for r in load_seed_rows() if r.locale == locale)


def test_keys_set_give_the_cloud_services_configured_from_the_locale(
    settings_without_env: type[VoxpipeSettings],
) -> None:
    settings = settings_without_env(
        deepgram_api_key="dg",
        deepgram_base_url="ws://127.0.0.1:9",
        elevenlabs_api_key="el",
        elevenlabs_base_url="http://127.0.0.1:9",
        stt_confidence_threshold=0.7,
    )
    stt = stt_from_settings(settings, row("en-GB"), endpointing_ms=200)
    assert isinstance(stt, DeepgramSTTService)
    assert (stt.model_name, stt.language, stt.endpointing_ms) == ("nova-2", "en-GB", 200)
    assert stt.confidence_threshold == 0.7 and stt.base_url == "ws://127.0.0.1:9"
    tts = tts_from_settings(settings, row("en-GB"))
    assert isinstance(tts, ElevenLabsTTSService)
    assert tts.voice_id == "JBFqnCBsd6RMkjVDRZzb" and tts.language == "en"


def test_no_keys_give_the_offline_stack_and_say_so(
    settings_without_env: type[VoxpipeSettings], caplog: pytest.LogCaptureFixture
) -> None:
    settings = settings_without_env()
    with caplog.at_level(logging.INFO):
        stt = stt_from_settings(settings, row("en-US"), phrases=["check my balance"])
        tts = tts_from_settings(settings, row("de-DE"))
    assert isinstance(stt, PocketSphinxSTTService) and stt.grammar is not None
    assert stt.confidence_threshold == settings.stt_confidence_threshold
    assert isinstance(tts, EspeakTTSService) and tts.voice == "de"
    assert "DEEPGRAM_API_KEY is not set: using the offline STT" in caplog.text
    assert "ELEVENLABS_API_KEY is not set: using the offline TTS" in caplog.text
    assert isinstance(tts_from_settings(settings, row("en-US")), EspeakTTSService)
    assert tts_from_settings(settings, row("en-US")).voice == "en-us"
