"""Fixtures for server tests: settings with no .env, apps, and a real uvicorn on a free port."""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from voxpipe.config.settings import VoxpipeSettings
from voxpipe.server.app import create_app
from voxpipe.server.run import RunningServer, running_server
from voxpipe.testing.twilio_caller import read_caller_wav

ROOT = Path(__file__).resolve().parents[2]
ECHO_BOT = ROOT / "bots" / "echo.py"
DATA = ROOT / "tests" / "data"


# Every server reads its locale table from the database (SQLite by default): keep that file out
# of the working directory.
_DB_DIR = Path(tempfile.mkdtemp(prefix="voxpipe-server-tests-"))


def make_settings(**kwargs: Any) -> VoxpipeSettings:
    kwargs.setdefault("sqlite_path", str(_DB_DIR / "voxpipe.sqlite3"))
    return VoxpipeSettings(_env_file=None, **kwargs)  # type: ignore[call-arg]


@pytest.fixture
def settings_factory() -> Callable[..., VoxpipeSettings]:
    return make_settings


@contextlib.asynccontextmanager
async def serve(app: Any, settings: VoxpipeSettings) -> AsyncIterator[RunningServer]:
    async with running_server(app, settings) as srv:
        yield srv


@pytest.fixture
def echo_app() -> Callable[..., Any]:
    def make(settings: VoxpipeSettings | None = None, **kwargs: Any) -> Any:
        return create_app(ECHO_BOT, settings or make_settings(), **kwargs)

    return make


@pytest.fixture(scope="session")
def speech_mulaw() -> bytes:
    """tests/data/speech_16k.wav as 8 kHz mu-law: three utterances (see speech_16k.json)."""
    return read_caller_wav(DATA / "speech_16k.wav")
