"""Suite-wide hooks."""

from __future__ import annotations

import gc
import warnings

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
            # type(), not isinstance(): isinstance() on a dead weakref.proxy raises.
            if issubclass(type(obj), aiosqlite.Connection) and getattr(obj, "_running", False):
                obj.stop()
