"""A caller who holds a conversation: waits for the greeting, asks, waits, asks again.

``Conversation`` drives a ``TwilioCaller`` (it is the caller's ``until``): once the bot's
greeting has played out and the line has been quiet for ``quiet_s``, it says the first
question; once the answer has played out, the second; once that answer has played out, it
hangs up. Voice-to-voice per turn is measured on the socket: from the moment the chunk
holding the end of the question's speech went out to the first bot audio received after it.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

from voxpipe.testing.twilio_caller import CallerLog, TwilioCaller

__all__ = ["Conversation", "Question", "TurnResult"]


@dataclass(slots=True, frozen=True)
class Question:
    """What the caller says: mu-law 8 kHz audio, and the byte where its speech ends."""

    audio: bytes
    speech_end: int


@dataclass(slots=True)
class TurnResult:
    """One question and its answer, times in seconds since the stream started."""

    speech_end: float
    first_reply: float | None = None
    # Bot audio arrived while the question was being said (a reply to half a question): the
    # turn's v2v then measures nothing meaningful.
    talked_over: bool = False

    @property
    def v2v_s(self) -> float | None:
        return None if self.first_reply is None else self.first_reply - self.speech_end


@dataclass(slots=True)
class Conversation:
    """The caller's side of the call (see the module docstring); pass it as ``run(until=...)``."""

    caller: TwilioCaller
    questions: list[Question]
    quiet_s: float = 0.5  # the line is quiet this long after the bot's audio played out
    greeting_timeout_s: float = 30.0
    reply_timeout_s: float = 15.0
    turns: list[TurnResult] = field(default_factory=list)
    greeted_at: float | None = None
    error: str = ""
    _asked: int = 0

    @property
    def done(self) -> bool:
        """Every question was asked and answered, without an error."""
        return (
            not self.error
            and len(self.turns) == len(self.questions)
            and all(t.first_reply is not None for t in self.turns)
        )

    def _quiet(self, log: CallerLog, now: float, since: float) -> bool:
        """The bot spoke after ``since`` and has been quiet for ``quiet_s`` (played out)."""
        times = log.media_times
        if not times or times[-1] <= since:
            return False
        end = max(self.caller.playout_end, times[-1])
        return now - end >= self.quiet_s

    def __call__(self, log: CallerLog) -> bool:
        now = self.caller.elapsed
        if self.error:
            return True
        # The question being asked has gone out: wait for the answer.
        if len(self.turns) < len(log.speech_ends):
            k = len(self.turns)
            end = log.speech_ends[k]
            i = bisect.bisect_right(log.media_times, log.said[k])
            over = i < len(log.media_times) and log.media_times[i] < end
            self.turns.append(TurnResult(end, talked_over=over))
        if self._asked == 0:
            if self.greeted_at is None:
                if self._quiet(log, now, 0.0):
                    self.greeted_at = now
                    return self._ask(log)
                if now > self.greeting_timeout_s:
                    self.error = "no greeting"
                    return True
            return False
        if len(self.turns) < self._asked:
            return False  # still speaking
        turn = self.turns[-1]
        if turn.first_reply is None:
            i = bisect.bisect_right(log.media_times, turn.speech_end)
            if i < len(log.media_times):
                turn.first_reply = log.media_times[i]
            elif now - turn.speech_end > self.reply_timeout_s:
                self.error = f"no answer to question {self._asked}"
                return True
            else:
                return False
        if not self._quiet(log, now, turn.first_reply - 1e-9):
            return False
        if self._asked == len(self.questions):
            return True  # the last answer played out: hang up
        return self._ask(log)

    def _ask(self, log: CallerLog) -> bool:
        q = self.questions[self._asked]
        self._asked += 1
        self.caller.say(q.audio, speech_end=q.speech_end)
        return False
