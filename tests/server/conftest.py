"""Fixtures for server tests: settings with no .env, apps, and a real uvicorn on a free port."""

from __future__ import annotations

import contextlib
import importlib.util
import sys
import tempfile
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from voxpipe.config.settings import VoxpipeSettings
from voxpipe.server.app import create_app
from voxpipe.server.run import RunningServer, running_server
from voxpipe.testing.twilio_caller import read_caller_wav

ROOT = Path(__file__).resolve().parents[2]
ECHO_BOT = ROOT / "bots" / "echo.py"
DATA = ROOT / "tests" / "data"


def _load_servers() -> ModuleType:
    # Real Redis / Postgres helpers shared with tests/state (loaded by path, one module).
    name = "voxpipe_tests_vp_servers"
    if name not in sys.modules:
        path = Path(__file__).parent.parent / "state" / "vp_servers.py"
        spec = importlib.util.spec_from_file_location(name, path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


servers = _load_servers()
redis_client = servers.redis_client
redis_prefix = servers.redis_prefix
pg_schema = servers.pg_schema
pg_dsn = servers.pg_dsn


# Every server reads its locale table from the database (SQLite by default): keep that file out
# of the working directory.
_DB_DIR = Path(tempfile.mkdtemp(prefix="voxpipe-server-tests-"))


def make_settings(**kwargs: Any) -> VoxpipeSettings:
    # Tests call carriers unsigned unless they set a carrier's secret: the development switch,
    # as on a developer's loopback server (tests of the switch itself pass it explicitly).
    kwargs.setdefault("allow_unsigned_webhooks", True)
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
