"""BaseInputTransport: caller audio and keypad digits from the wire into the pipeline."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from voxpipe.audio.convert import to_pcm16
from voxpipe.frames import (
    BotStartedSpeakingFrame,
    BotStoppedSpeakingFrame,
    CancelFrame,
    CancelTaskFrame,
    DTMFFrame,
    EndFrame,
    EndTaskFrame,
    Frame,
    FrameDirection,
    InputAudioFrame,
    InterruptionFrame,
    InterruptionRequestFrame,
    MetricsFrame,
    SmartInterruptionsFrame,
    StartFrame,
    UserStartedSpeakingFrame,
    UserStoppedSpeakingFrame,
)
from voxpipe.processors.base import FrameProcessor
from voxpipe.processors.policy.frames import InterruptionsAllowedFrame
from voxpipe.processors.turn.frames import UserSilenceStartedFrame, UserSpeechResumedFrame
from voxpipe.processors.turn.gate import TURN_SHED_METRIC, TurnGate
from voxpipe.processors.turn.params import VAD_ONLY_STOP_S
from voxpipe.processors.vad.analyzer import VADAnalyzer, VADEvent, VADState
from voxpipe.processors.vad.batched import BatchedVAD
from voxpipe.transports.params import TransportParams

if TYPE_CHECKING:
    from voxpipe.transports.output import BaseOutputTransport

__all__ = ["BaseInputTransport"]

DOWNSTREAM = FrameDirection.DOWNSTREAM
UPSTREAM = FrameDirection.UPSTREAM

# Wire audio kept while the call is starting (chunks of 20 ms on a phone line: 2 s).
_EARLY_CHUNKS = 100


class BaseInputTransport(FrameProcessor):
    """First processor of a call: pushes wire audio and DTMF in, runs the VAD, asks for interruptions.

    The wire side (a websocket handler, a file reader, a test) calls ``push_wire_audio``,
    ``push_dtmf`` and ``on_wire_closed``; they enter the pipeline with ``push_input`` so a
    recorder sees them. Audio goes downstream in the wire's own format at once, and then
    through the VAD, which emits ``UserStartedSpeakingFrame``/``UserStoppedSpeakingFrame``.
    The transport tracks whether the bot speaks from the ``Bot*SpeakingFrame``s the output
    transport sends upstream; when the caller talks over the bot long enough
    (``params.guard.min_speech_secs``) and interruptions are allowed, it pushes an
    ``InterruptionRequestFrame`` upstream. With ``params.guard.min_words`` set it leaves that
    decision to an ``InterruptionGuard`` after STT. When an interruption arbiter announces
    itself (``SmartInterruptionsFrame``, see ``processors/turn/backchannel.py``) speech over
    the bot interrupts here only after the arbiter's ``max_speech_secs`` (shorter speech is
    the arbiter's to judge from its words), and such speech ends at the VAD's stop, without
    the end-of-turn model, so a backchannel is judged quickly. Inside a non-interruptible span
    (``InterruptionsAllowedFrame(False)`` from the output) it drops every interruption
    request coming up the pipeline, whoever asked.

    ``InputAudioFrame``s and ``DTMFFrame``s arriving from upstream (a replayed recording, a
    test) are treated like wire input, so a replay reproduces the VAD's decisions. Audio the
    wire delivers before the call has started is kept (up to 2 s) and follows the
    ``StartFrame``. A VAD failure is reported as an ``ErrorFrame`` and the call goes on
    without barge-in.
    """

    def __init__(
        self,
        params: TransportParams | None = None,
        *,
        vad: VADAnalyzer | None = None,
        batched_vad: BatchedVAD | None = None,
        name: str | None = None,
    ) -> None:
        super().__init__(name=name)
        self.params = params if params is not None else TransportParams()
        self._batched = batched_vad
        if vad is None and self.params.vad_enabled:
            # Built here, not at start, so a missing model or extra fails when the bot is built.
            vad = VADAnalyzer(
                self.params.audio_in.sample_rate, self.params.vad_params, batched=batched_vad
            )
        self.vad: VADAnalyzer | None = vad
        turn = self.params.turn
        # Smart end of turn (voxpipe.processors.turn): asked at the VAD's stop.
        self.turn_gate: TurnGate | None = (
            TurnGate(turn, self.params.audio_in.sample_rate)
            if turn is not None and turn.mode == "smart" and vad is not None
            else None
        )
        self._turn_wait: asyncio.Task[None] | None = None  # a turn judged incomplete, open
        self._output: BaseOutputTransport | None = None
        self.bot_speaking = False
        self.user_speaking = False
        self.span_allowed = True
        self.closed = False
        self._ended = False
        self._onset = 0.0  # stream time (VAD clock) the current caller speech began
        self._interrupted_turn = False
        self._smart_max_speech: float | None = None  # set by an interruption arbiter
        self._hangup_timer: asyncio.TimerHandle | None = None
        self._hangup_task: asyncio.Task[None] | None = None
        self._early: list[bytes] = []
        self._dropped_early = 0
        # Call recorders (voxpipe.records.recording): told of each caller frame as it arrives.
        self.audio_taps: list[Any] = []
        # Counters for metrics and tests.
        self.interruptions = 0
        self.requests_refused = 0

    # ------------------------------------------------------------------ wiring

    def pair(self, output: BaseOutputTransport) -> None:
        """Link the output transport of the same call (it is told when the wire closes)."""
        self._output = output

    @property
    def can_interrupt(self) -> bool:
        """Whether an interruption is allowed now (call settings and any non-interruptible span)."""
        return self.params.allow_interruptions and self.interruptions_allowed and self.span_allowed

    # ------------------------------------------------------------------ the wire side

    async def push_wire_audio(self, audio: bytes) -> None:
        """Caller audio in the wire's format (``params.audio_in``), any chunk size."""
        if self.closed or self._ended:
            return
        if not self.started:
            # The wire can be a step ahead of the task's first step: keep a little, in order.
            self._early.append(audio)
            if len(self._early) > _EARLY_CHUNKS:
                del self._early[0]
                self._dropped_early += 1
                if self._dropped_early == 1:
                    self.logger.warning(
                        "caller audio keeps arriving but the call has not started: dropping "
                        "the oldest; start the pipeline task before feeding the wire"
                    )
            return
        fmt = self.params.audio_in
        frame = InputAudioFrame(audio=audio, sample_rate=fmt.sample_rate, encoding=fmt.encoding)
        for tap in self.audio_taps:
            tap.caller_audio(audio, fmt.encoding, fmt.sample_rate)
        await self.push_input(frame)
        if self.vad is not None:
            await self._run_vad(frame)

    async def push_dtmf(self, digit: str) -> None:
        """A keypad digit; it interrupts the bot when ``params.dtmf_interrupts`` and allowed."""
        if self.closed or self._ended or not self.started:
            return
        if self.params.dtmf_interrupts and self.bot_speaking and self.can_interrupt:
            await self._interrupt(f"dtmf {digit}")
        await self.push_input(DTMFFrame(digit=digit))

    async def on_wire_closed(self, reason: str = "caller hung up") -> None:
        """The far end hung up: end the call gracefully (transcripts kept), cancel it if it lingers.

        The output stops sending at once and drops what was never heard; the caller's
        unfinished speech is closed with ``UserStoppedSpeakingFrame``; an ``EndTaskFrame``
        asks the task to end, and ``params.hangup_timeout_secs`` later a ``CancelTaskFrame``
        makes sure no pipeline outlives its call.
        """
        if self.closed:
            return
        self.closed = True
        if self._output is not None:
            await self._output.on_wire_closed()
        if not self.started or self._ended:
            if not self.started:
                await self.push_frame(CancelTaskFrame(reason=reason), UPSTREAM)
            return
        if self.user_speaking:
            self.user_speaking = False
            await self.push_frame(UserStoppedSpeakingFrame())
        if self.vad is not None:
            self.vad.reset()
        self.logger.info("%s: ending the call", reason)
        self._hangup_timer = self.clock.call_later(
            self.params.hangup_timeout_secs, lambda: self._hangup_expired(reason)
        )
        await self.push_frame(EndTaskFrame(reason=reason), UPSTREAM)

    def _hangup_expired(self, reason: str) -> None:
        self._hangup_timer = None
        self.logger.warning(
            "call still running %.1fs after %s: cancelling", self.params.hangup_timeout_secs, reason
        )
        self._hangup_task = asyncio.get_running_loop().create_task(
            self.push_frame(CancelTaskFrame(reason=f"{reason}; end did not finish"), UPSTREAM)
        )

    # ------------------------------------------------------------------ VAD

    async def _analyze(self, vad: VADAnalyzer, pcm: bytes) -> list[VADEvent]:
        """Run the VAD over one chunk of PCM16 (batched across calls when a BatchedVAD was given)."""
        if vad.batched is not None:
            return await vad.analyze_async(pcm)
        return vad.analyze(pcm)

    async def _run_vad(self, frame: InputAudioFrame) -> None:
        vad = self.vad
        if vad is None or frame.num_channels != 1:
            return
        if frame.sample_rate != vad.sample_rate:
            # Audio in another format than announced (e.g. a replay of another wire).
            self.logger.info("caller audio at %d Hz: restarting the VAD", frame.sample_rate)
            vad = self.vad = VADAnalyzer(frame.sample_rate, vad.params, batched=self._batched)
            if self.turn_gate is not None:
                self.turn_gate = TurnGate(self.turn_gate.params, frame.sample_rate)
        try:
            pcm = to_pcm16(frame.audio, frame.encoding)
            if self.turn_gate is not None:
                self.turn_gate.feed(pcm)
            was = vad.state
            events = await self._analyze(vad, pcm)
        except Exception as exc:
            # The call goes on without barge-in rather than failing on the VAD.
            self.vad = None
            self.logger.error("VAD failed, continuing without it: %s", exc, exc_info=exc)
            await self.push_error(f"{self.name}: VAD failed: {exc}")
            return
        await self._pause_edges(vad, was, events)
        for event in events:
            if event.kind == "started" and self._turn_wait is not None:
                # The caller went on within the wait: the same turn, not a new one.
                self._turn_wait.cancel()
                self._turn_wait = None
                await self.push_frame(UserSpeechResumedFrame())
                continue
            if event.kind == "started":
                self.user_speaking = True
                self._onset = event.speech_time
                self._interrupted_turn = False
                # Interrupt first: the flush is what the caller waits for.
                await self._check_interruption()
                await self.push_frame(UserStartedSpeakingFrame())
            else:
                gate = self.turn_gate
                if self._smart_max_speech is not None and self.bot_speaking and self.can_interrupt:
                    gate = None  # speech over the bot: the arbiter judges it at once
                verdict = await self._turn_complete(gate, vad) if gate is not None else True
                if not verdict:
                    # Judged incomplete: the turn stays open until the caller goes on, or
                    # until the longest wait since their last speech has passed. Not judged
                    # (None, an overloaded model): until the VAD-only silence has passed.
                    assert self.params.turn is not None
                    longest = (
                        self.params.turn.max_wait_secs if verdict is False else VAD_ONLY_STOP_S
                    )
                    wait = longest - vad.params.stop_secs
                    self._turn_wait = self.create_task(
                        self._end_turn_after(max(wait, 0.0)), name="turn-wait", interruptible=False
                    )
                    continue
                await self._end_turn()
        if not events and self.user_speaking and self.bot_speaking:
            await self._check_interruption()

    async def _turn_complete(self, gate: TurnGate, vad: VADAnalyzer) -> bool | None:
        """Ask the turn gate (None: it skipped the model), and report what its decision took."""
        asked = gate.decisions
        done = await gate.complete(vad.stream_time - self._onset, inline=self.clock.is_virtual)
        if done is None:
            await self.push_frame(MetricsFrame(self.name, TURN_SHED_METRIC, 1.0))
            return None
        if gate.decisions > asked:
            # Wall time, the wait for the worker's inference thread included: under load that
            # queue is where a caller's turn waits, so operators see it in /metrics.
            await self.push_frame(
                MetricsFrame(self.name, "turn_decision", gate.decision_ms[-1] / 1000.0)
            )
        return done

    async def _pause_edges(self, vad: VADAnalyzer, was: VADState, events: list[VADEvent]) -> None:
        """Tell the pipeline the caller went quiet (the turn not yet decided) or spoke again."""
        now = vad.state
        if was is VADState.SPEAKING and (
            now is VADState.STOPPING or any(e.kind == "stopped" for e in events)
        ):
            turn = self.params.turn
            preemptive = turn.preemptive if turn is not None else False
            # The quiet began at the end of the last speech window: at most the windows
            # analysed since before now (the audio still buffered in the VAD is later).
            quiet = vad.window_secs if now is VADState.STOPPING else vad.params.stop_secs
            await self.push_frame(
                UserSilenceStartedFrame(preemptive=preemptive, speech_end=self.clock.now() - quiet)
            )
        elif was is VADState.STOPPING and now is VADState.SPEAKING and not events:
            await self.push_frame(UserSpeechResumedFrame())

    async def _end_turn(self) -> None:
        self.user_speaking = False
        await self.push_frame(UserStoppedSpeakingFrame())

    async def _end_turn_after(self, seconds: float) -> None:
        await self.clock.sleep(seconds)
        if self._turn_wait is asyncio.current_task():
            self._turn_wait = None
        await self._end_turn()

    async def _check_interruption(self) -> None:
        """Interrupt if the caller is talking over the bot long enough and it is allowed."""
        if self._interrupted_turn or not (self.user_speaking and self.bot_speaking):
            return
        guard = self.params.guard
        vad = self.vad
        if guard.min_words > 0 or vad is None or not self.can_interrupt:
            return
        if vad.state is not VADState.SPEAKING:
            return  # in a pause: wait until the caller speaks again
        least = guard.min_speech_secs
        if self._smart_max_speech is not None:
            least = max(least, self._smart_max_speech)
        if vad.stream_time - self._onset < least - 1e-9:
            return
        self._interrupted_turn = True
        await self._interrupt("caller speech")

    async def _interrupt(self, reason: str) -> None:
        self.interruptions += 1
        self.logger.debug("interrupting the bot: %s", reason)
        await self.request_interruption(reason)

    # ------------------------------------------------------------------ frames

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        kind = type(frame)
        if kind is BotStartedSpeakingFrame:
            self.bot_speaking = True
        elif kind is BotStoppedSpeakingFrame:
            self.bot_speaking = False
        elif direction is UPSTREAM:
            if kind is InterruptionRequestFrame and not self.can_interrupt:
                self.requests_refused += 1
                self.logger.debug("interruption request refused: interruptions are disabled")
                return
            if kind is SmartInterruptionsFrame:
                assert isinstance(frame, SmartInterruptionsFrame)
                self._smart_max_speech = frame.max_speech_secs
                return
            if kind is InterruptionsAllowedFrame:
                assert isinstance(frame, InterruptionsAllowedFrame)
                self.span_allowed = frame.allowed
                await self.push_frame(frame, direction)
                if frame.allowed:
                    # The caller may have been talking through the span: the bot yields now.
                    await self._check_interruption()
                return
        elif kind is InterruptionFrame:
            # However it came, this caller turn has interrupted the bot: do not ask again.
            self._interrupted_turn = self.user_speaking
        elif kind is StartFrame:
            await self.push_frame(frame, direction)
            early, self._early = self._early, []
            for audio in early:  # now that everything downstream has started
                await self.push_wire_audio(audio)
            return
        elif kind is DTMFFrame:
            if self.params.dtmf_interrupts and self.bot_speaking and self.can_interrupt:
                await self._interrupt(f"dtmf {getattr(frame, 'digit', '')}")
        elif kind is InputAudioFrame:
            assert isinstance(frame, InputAudioFrame)
            for tap in self.audio_taps:
                tap.caller_audio(frame.audio, frame.encoding, frame.sample_rate)
            await self.push_frame(frame, direction)
            if not self.closed and not self._ended:
                await self._run_vad(frame)
            return
        await self.push_frame(frame, direction)

    async def on_start(self, frame: StartFrame) -> None:
        fmt = self.params.audio_in
        if frame.audio_in_sample_rate != fmt.sample_rate:
            self.logger.warning(
                "StartFrame says caller audio is %d Hz but the transport receives %d Hz; build "
                "the task with TransportParams.task_params() so processors agree",
                frame.audio_in_sample_rate,
                fmt.sample_rate,
            )

    async def on_end(self, frame: EndFrame) -> None:
        self._ended = True

    async def on_cancel(self, frame: CancelFrame) -> None:
        self._ended = True

    async def cleanup(self) -> None:
        await super().cleanup()
        if self._hangup_timer is not None:
            self._hangup_timer.cancel()
            self._hangup_timer = None
