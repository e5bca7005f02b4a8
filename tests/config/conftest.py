"""Fixtures for config tests: isolation from the developer's settings, and Postgres (shared
with tests/state)."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType

import pytest


def _load_servers() -> ModuleType:
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
pg_schema = servers.pg_schema
pg_dsn = servers.pg_dsn


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Config tests must not see the developer's environment, .env or config file."""
    from voxpipe.config.settings import VoxpipeSettings, get_settings

    for name in list(os.environ):
        if name.lower() in VoxpipeSettings.model_fields or name == "VOXPIPE_CONFIG":
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    get_settings.cache_clear()
