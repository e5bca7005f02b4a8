"""The provider clients a server's settings select are imported when the app is made."""

from __future__ import annotations

from voxpipe.config.settings import VoxpipeSettings
from voxpipe.server.media import preload_providers


def test_configured_providers_are_imported() -> None:
    settings = VoxpipeSettings(  # type: ignore[call-arg]
        _env_file=None,
        deepgram_api_key="k",
        openai_api_key="k",
        elevenlabs_api_key="k",
    )
    assert preload_providers(settings) == [
        "voxpipe.processors.stt.deepgram",
        "voxpipe.processors.llm.openai",
        "voxpipe.processors.tts.elevenlabs",
    ]


def test_offline_stack_preloads_no_provider(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    for name in ("DEEPGRAM_API_KEY", "OPENAI_API_KEY", "ELEVENLABS_API_KEY", "OPENAI_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    assert preload_providers(VoxpipeSettings(_env_file=None)) == []  # type: ignore[call-arg]
