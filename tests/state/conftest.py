"""Fixtures for state tests: real Redis and Postgres, isolated per test, cleaned up after."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType


def _load_servers() -> ModuleType:
    # Loaded by path under a unique name: tests/ has no __init__.py and tests/config shares it.
    name = "voxpipe_tests_vp_servers"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(
            name, Path(__file__).with_name("vp_servers.py")
        )
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
private_redis = servers.private_redis
