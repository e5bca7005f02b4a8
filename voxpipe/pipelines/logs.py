"""Per-call logging: every record carries the call id of the call it belongs to."""

from __future__ import annotations

import logging
from collections.abc import MutableMapping
from contextvars import ContextVar
from typing import Any, Protocol

# Set by the pipeline task for the duration of a call, so code outside processors
# (transports, stores) logs with the call id too.
current_call_id: ContextVar[str] = ContextVar("current_call_id", default="-")


class _HasCallId(Protocol):
    call_id: str


class CallLoggerAdapter(logging.LoggerAdapter[logging.Logger]):
    """Adds ``call_id`` to every record logged for a processor."""

    def __init__(self, logger: logging.Logger, owner: _HasCallId) -> None:
        super().__init__(logger, {})
        self._owner: _HasCallId | None = owner
        self._call_id = ""  # the owner's call id, kept once detached

    def process(
        self, msg: Any, kwargs: MutableMapping[str, Any]
    ) -> tuple[Any, MutableMapping[str, Any]]:
        extra = kwargs.setdefault("extra", {})
        owner = self._owner
        call_id = owner.call_id if owner is not None else self._call_id
        extra.setdefault("call_id", call_id or current_call_id.get())
        return msg, kwargs

    def detach(self) -> None:
        """Keep the owner's call id and drop the owner (which holds this adapter: a cycle)."""
        if self._owner is not None:
            self._call_id = self._owner.call_id
            self._owner = None


class CallIdFilter(logging.Filter):
    """Gives records that lack one the call id of the current call (install on handlers)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "call_id"):
            record.call_id = current_call_id.get()
        return True


LOG_FORMAT = "%(asctime)s %(levelname)s [%(call_id)s] %(name)s: %(message)s"


def configure_logging(level: str | int = "INFO") -> None:
    """Set up root logging with the call id in every line."""
    handler = logging.StreamHandler()
    handler.addFilter(CallIdFilter())
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
