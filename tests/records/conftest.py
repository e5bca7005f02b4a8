"""Fixtures for call-records tests: real SQLite files and Postgres schemas, settings, keys."""

from __future__ import annotations

import asyncio
import base64
import importlib.util
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from voxpipe.config.settings import VoxpipeSettings


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
# Test modules import the helpers below as ``records_helpers`` (tests/ has no packages).
sys.modules.setdefault("records_helpers", sys.modules[__name__])
pg_schema = servers.pg_schema
pg_dsn = servers.pg_dsn


def new_key() -> str:
    return base64.b64encode(os.urandom(32)).decode()


def make_settings(tmp_path: Path, **kwargs: Any) -> VoxpipeSettings:
    kwargs.setdefault("allow_unsigned_webhooks", True)
    kwargs.setdefault("spool_dir", str(tmp_path / "spool"))
    kwargs.setdefault("recordings_url", str(tmp_path / "recordings"))
    kwargs.setdefault("sqlite_path", str(tmp_path / "calls.sqlite3"))
    return VoxpipeSettings(_env_file=None, **kwargs)  # type: ignore[call-arg]


@pytest.fixture(params=["sqlite", "postgres"])
def db_settings(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, Any]:
    """Settings keyword arguments naming a fresh database: a SQLite file or a Postgres schema."""
    if request.param == "sqlite":
        return {"sqlite_path": str(tmp_path / "calls.sqlite3")}
    dsn, schema = request.getfixturevalue("pg_dsn"), request.getfixturevalue("pg_schema")
    asyncio.run(_create_schema(dsn, schema))
    # asyncpg passes search_path on as a server setting: everything lands in the schema.
    return {"database_url": f"{dsn}?search_path={schema}"}


async def _create_schema(dsn: str, schema: str) -> None:
    from voxpipe.state.postgres_store import PostgresDatabase

    db = PostgresDatabase(dsn, schema=schema)  # creates the schema and migrates it
    await db.pool()
    await db.close()


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Callable[..., None]]:
    """Sets the environment `voxpipe records ...` reads (settings cache cleared around it)."""
    from voxpipe.config.settings import get_settings

    monkeypatch.chdir(tmp_path)  # no stray .env

    def set_env(**values: Any) -> None:
        for key, value in values.items():
            monkeypatch.setenv(key.upper(), str(value))
        monkeypatch.setenv("SPOOL_DIR", str(tmp_path / "spool"))
        monkeypatch.setenv(
            "SQLITE_PATH", values.get("sqlite_path", str(tmp_path / "calls.sqlite3"))
        )
        get_settings.cache_clear()

    yield set_env
    get_settings.cache_clear()
