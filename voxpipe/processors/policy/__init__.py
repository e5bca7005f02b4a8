"""Policy processors: when the caller may interrupt the bot."""

from voxpipe.processors.policy.frames import (
    DisableInterruptionsFrame,
    EnableInterruptionsFrame,
    InterruptionsAllowedFrame,
    uninterruptible,
)
from voxpipe.processors.policy.guard import (
    DEFAULT_FILLERS,
    InterruptionGuard,
    InterruptionGuardParams,
    count_words,
)

__all__ = [
    "DEFAULT_FILLERS",
    "DisableInterruptionsFrame",
    "EnableInterruptionsFrame",
    "InterruptionGuard",
    "InterruptionGuardParams",
    "InterruptionsAllowedFrame",
    "count_words",
    "uninterruptible",
]
