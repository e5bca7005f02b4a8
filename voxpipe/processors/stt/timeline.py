"""StreamTimeline: maps an STT's word times (seconds of audio sent to it) to the call's clock.

An STT reports word times in seconds of the audio it was given since its stream started
(Deepgram: since the first byte; the offline recogniser counts the same way). The call's
clock is the pipeline's clock: the STT notes when each chunk of the caller's audio reaches it
(pushed straight from the input transport: its arrival), and the output transport pushes
``BotStoppedSpeakingFrame`` the moment the bot's audio has played. (Not the frames'
``timestamp``: a replayed recording keeps the timestamps of the original call.) A stretch of audio sent without a break
is one segment: its samples are contiguous on the caller's line, so a time inside it is the
segment's anchor plus the offset. The anchor is the earliest arrival any of its chunks allows
(``timestamp - offset``, minimised): network jitter only ever delays a chunk, so the least
delayed one is the truest. A pause (audio not sent, e.g. during payment details) starts a new
segment: the provider's time stood still meanwhile.
"""

from __future__ import annotations

import bisect

from voxpipe.frames import AudioFrame

__all__ = ["StreamTimeline"]


class StreamTimeline:
    """Stream seconds (audio given to an STT) to call-clock seconds, segment by segment."""

    def __init__(self, max_segments: int = 256) -> None:
        self.max_segments = max_segments
        self.sent_s = 0.0  # seconds of audio given to the STT so far
        self._offsets: list[float] = []  # stream seconds where each segment starts
        self._anchors: list[float] = []  # call time of stream second 0 for that segment
        self._open = False

    def add(self, frame: AudioFrame, now: float) -> None:
        """Audio given to the STT at call time ``now``: extends the current segment (or
        starts one)."""
        duration = frame.num_samples / frame.sample_rate if frame.sample_rate > 0 else 0.0
        # A chunk arrives once its last sample was captured: that sample is at its end.
        anchor = now - (self.sent_s + duration)
        if not self._open:
            self._offsets.append(self.sent_s)
            self._anchors.append(anchor)
            self._open = True
            if len(self._offsets) > self.max_segments:  # a call paused very often: oldest go
                del self._offsets[0], self._anchors[0]
        elif anchor < self._anchors[-1]:
            self._anchors[-1] = anchor
        self.sent_s += duration

    def gap(self) -> None:
        """No audio goes to the STT for a while: the next audio starts a new segment."""
        self._open = False

    def call_time(self, stream_s: float) -> float | None:
        """The call-clock time of ``stream_s`` seconds into the STT's stream (None before any
        audio)."""
        if not self._offsets:
            return None
        i = max(0, bisect.bisect_right(self._offsets, stream_s) - 1)
        return self._anchors[i] + stream_s
