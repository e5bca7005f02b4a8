"""Fixtures for whole-bot tests: the real Postgres helpers shared with tests/state."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType


def _load_servers() -> ModuleType:
    # Loaded by path under one name: tests/ has no __init__.py (see tests/state/conftest.py).
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
