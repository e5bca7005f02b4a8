"""Preemptive replies held by the LLM service until the caller's turn is confirmed.

A ``PreemptiveLLMMessagesFrame`` is answered like any request, but nothing it produces goes
downstream (no text reaches the TTS, no tool runs) until a ``PreemptiveReplyFrame`` releases
it: then the frames kept so far go out in order and the reply carries on as usual. A discard
drops them and stops the reply; the caller never hears it and the context never sees it.
A decision that arrives before its request was taken up is remembered for it.
"""

from __future__ import annotations

import asyncio

from voxpipe.frames import Frame

__all__ = ["HeldReply", "ReplyHolds"]

# Decisions kept for requests not yet started (a few at most: requests are answered in order).
_MAX_EARLY = 16


class HeldReply:
    """The frames of one preemptive reply, kept until it is released or discarded."""

    def __init__(self, reply_id: int) -> None:
        self.reply_id = reply_id
        self.frames: list[Frame] = []
        self._released = asyncio.Event()

    @property
    def released(self) -> bool:
        """Whether the reply's frames go downstream as they come."""
        return self._released.is_set()

    def mark_released(self) -> None:
        self._released.set()

    async def wait_released(self) -> None:
        """Until the turn is confirmed (a discard cancels the waiting reply instead)."""
        await self._released.wait()


class ReplyHolds:
    """One LLM service's preemptive replies: the one being answered, early decisions, counts."""

    def __init__(self) -> None:
        self.current: HeldReply | None = None
        self._early: dict[int, bool] = {}
        self.started = 0  # preemptive requests taken up
        self.released = 0
        self.discarded = 0  # LLM requests started and thrown away unheard

    def begin(self, reply_id: int) -> bool | None:
        """Take up request ``reply_id``: None to hold it, True to answer it as is (already
        released), False to skip it (already discarded)."""
        early = self._early.pop(reply_id, None)
        if early is False:
            return False
        self.started += 1
        if early is True:
            self.released += 1
            return True
        self.current = HeldReply(reply_id)
        return None

    def end(self, reply_id: int) -> None:
        if self.current is not None and self.current.reply_id == reply_id:
            self.current = None

    def remember(self, reply_id: int, release: bool) -> None:
        """A decision for a request not yet taken up."""
        if len(self._early) >= _MAX_EARLY:
            self._early.pop(next(iter(self._early)))
        self._early[reply_id] = release
