"""Frames of the interruption policy: spans the caller cannot interrupt.

A bot marks a span with ``DisableInterruptionsFrame`` ... ``EnableInterruptionsFrame``
(ordered control frames travelling downstream with the speech, e.g. around a legal
notice). The output transport applies them when the span reaches the wire: it tells
the processors upstream with ``InterruptionsAllowedFrame`` when the span's first audio is
sent and again once its last audio has played. The input transport then drops every
interruption request (from the VAD, DTMF or any processor) while the span plays.
The frame classes live in ``voxpipe.frames`` (so recordings read them back); they are
re-exported here with the ``uninterruptible`` helper.
"""

from __future__ import annotations

from voxpipe.frames import (
    DisableInterruptionsFrame,
    EnableInterruptionsFrame,
    Frame,
    InterruptionsAllowedFrame,
)

__all__ = [
    "DisableInterruptionsFrame",
    "EnableInterruptionsFrame",
    "InterruptionsAllowedFrame",
    "uninterruptible",
]


def uninterruptible(*frames: Frame, reason: str = "") -> list[Frame]:
    """``frames`` wrapped in a non-interruptible span, e.g. ``uninterruptible(TTSSpeakFrame(notice))``."""
    return [DisableInterruptionsFrame(reason=reason), *frames, EnableInterruptionsFrame()]
