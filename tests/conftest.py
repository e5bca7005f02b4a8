"""Suite-wide hooks."""

from __future__ import annotations

import gc
import warnings
from collections.abc import Iterator

import pytest


def pytest_unconfigure(config: pytest.Config) -> None:
    # A store some test left open (e.g. a per-loop locale table whose loop has ended) keeps an
    # aiosqlite worker thread alive, and a live non-daemon thread stops the interpreter from
    # exiting after the summary. Stop whatever is still running so the run ends.
    try:
        import aiosqlite
    except ImportError:
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for obj in gc.get_objects():
            # type(), not isinstance(): a weakref proxy to a dead object raises on isinstance.
            if issubclass(type(obj), aiosqlite.Connection) and getattr(obj, "_running", False):
                obj.stop()


@pytest.fixture(autouse=True)
def _settings_read_per_test() -> None:
    """Each test reads the settings its environment gives: ``get_settings`` caches them for the
    process, and a test that set an environment variable (ALLOW_UNSIGNED_WEBHOOKS for one)
    must not get the values cached by whichever test ran before it."""
    from voxpipe.config.settings import get_settings

    get_settings.cache_clear()


@pytest.fixture
def no_automatic_gc() -> Iterator[None]:
    """Automatic collection off: only reference counting (or an explicit sweep) frees."""
    was = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()
