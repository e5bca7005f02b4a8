"""Frames of the caller's pauses and of preemptive replies (issue 13).

The input transport pushes ``UserSilenceStartedFrame`` when the VAD hears the caller go
quiet (the turn is not decided yet: that is ``UserStoppedSpeakingFrame``), and
``UserSpeechResumedFrame`` when they speak again inside that pause or inside a turn Smart
Turn held open. The user aggregator may then ask for a reply ahead of the decision with a
``PreemptiveLLMMessagesFrame``; the LLM service holds everything that reply produces until
a ``PreemptiveReplyFrame`` releases it (the turn is confirmed on the same words) or
discards it (the caller went on, or the final transcript says something else).
"""

from __future__ import annotations

from dataclasses import dataclass

from voxpipe.frames import LLMMessagesFrame, SystemFrame

__all__ = [
    "PreemptiveLLMMessagesFrame",
    "PreemptiveReplyFrame",
    "UserSilenceStartedFrame",
    "UserSpeechResumedFrame",
]


@dataclass(slots=True)
class UserSilenceStartedFrame(SystemFrame):
    """The caller went quiet; whether their turn ended is not decided yet.

    ``preemptive``: the call's settings allow a reply to be prepared now (``PREEMPTIVE_REPLIES``).
    ``speech_end``: when the caller's speech ended, on the pipeline clock (as the STT's
    ``Word.call_end``), None if unknown.
    """

    preemptive: bool = True
    speech_end: float | None = None


@dataclass(slots=True)
class UserSpeechResumedFrame(SystemFrame):
    """The caller spoke again before their pause was decided to end the turn."""


@dataclass(slots=True)
class PreemptiveLLMMessagesFrame(LLMMessagesFrame):
    """A request made before the caller's turn is confirmed: its reply is held until released."""

    reply_id: int = 0


@dataclass(slots=True)
class PreemptiveReplyFrame(SystemFrame):
    """The held reply ``reply_id`` is released (``release``) or discarded, never heard."""

    reply_id: int = 0
    release: bool = False
