"""The worker's locale table: one per settings and event loop, started on first use."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from voxpipe.config.locale_table import LocaleTable

if TYPE_CHECKING:
    from voxpipe.config.settings import VoxpipeSettings

__all__ = ["close_shared_locale_tables", "shared_locale_table"]

# (settings, table) per (id(settings), loop): the settings are kept so their id is not reused.
_tables: dict[tuple[int, int], tuple[VoxpipeSettings, LocaleTable]] = {}
_locks: dict[int, asyncio.Lock] = {}


async def shared_locale_table(settings: VoxpipeSettings) -> LocaleTable:
    """The locale table for ``settings`` on the running loop (started, refreshing)."""
    loop_id = id(asyncio.get_running_loop())
    key = (id(settings), loop_id)
    found = _tables.get(key)
    if found is not None:
        return found[1]
    async with _locks.setdefault(loop_id, asyncio.Lock()):
        found = _tables.get(key)
        if found is None:
            table = LocaleTable.from_settings(settings)
            await table.start()  # never raises for an outage: the shipped rows serve meanwhile
            found = _tables[key] = (settings, table)
    return found[1]


async def close_shared_locale_tables() -> None:
    """Stop every table of the running loop (server shutdown, end of a test)."""
    loop_id = id(asyncio.get_running_loop())
    for key in [k for k in _tables if k[1] == loop_id]:
        await _tables.pop(key)[1].close()
    _locks.pop(loop_id, None)
