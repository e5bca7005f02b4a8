"""Scenario tests: run a YAML conversation against a bot offline and check each turn.

``run_scenario(path_or_dict)`` builds a call to the bot on the virtual clock (deterministic, a
minute of call in well under a second), plays the caller's turns and checks each turn's
expectations (the format is in ``scenario_schema`` and the README, "Testing your bot").

Text mode (the default) feeds the caller's words as final transcripts, framed by the
started/stopped-speaking events a VAD would give; ``audio=True`` speaks them with the
offline TTS into the transport, through the real VAD and speech recogniser. Providers are
the offline ones (every provider key is dropped) and the LLM is the bot's scripted dialog,
with the scenario's ``replies:`` rules first; ``live=True`` keeps the configured providers
and runs on the real clock (their answers take real time). Stores are always scratch ones
in a temporary directory: a scenario never writes to the configured session, transcript or
recording stores.
"""

from __future__ import annotations

import asyncio
import logging
import re
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from voxpipe.call import Call, build_task, load_bot
from voxpipe.config.settings import VoxpipeSettings
from voxpipe.frames import (
    BotStartedSpeakingFrame,
    BotStoppedSpeakingFrame,
    CancelTaskFrame,
    EndTaskFrame,
    EscalationStartedFrame,
    Frame,
    FunctionCallInProgressFrame,
    FunctionCallResultFrame,
    LLMResponseEndFrame,
    LLMResponseStartFrame,
    TranscriptionFrame,
    UserStartedSpeakingFrame,
    UserStoppedSpeakingFrame,
)
from voxpipe.pipelines.clock import Clock, VirtualClock
from voxpipe.pipelines.task import PipelineTask
from voxpipe.processors.base import FrameProcessor
from voxpipe.testing.scenario_checks import (
    Failure,
    ScenarioResult,
    TurnOutcome,
    check_stored,
    check_turn,
    stored_text,
)
from voxpipe.testing.scenario_schema import (
    Scenario,
    ScenarioError,
    Turn,
    load_scenario,
    parse_scenario,
)
from voxpipe.testing.summary import CallSummarizer
from voxpipe.transports.memory import MemoryTransport
from voxpipe.transports.params import TransportParams
from voxpipe.transports.wire import AudioFormat

__all__ = ["Failure", "ScenarioResult", "TurnOutcome", "run_scenario", "scenario_settings"]

logger = logging.getLogger(__name__)

PHONE = AudioFormat("mulaw", 8000, 1)
SETTLE_S = 3.0  # a turn is over once nothing has happened for this long (virtual seconds)
MAX_TURN_S = 120.0  # a turn that never settles fails rather than running forever
POLL_S = 0.1
WORD_S = 0.3  # text mode: how long the caller takes per word (between started and stopped)


# ---------------------------------------------------------------------------- settings


def scenario_settings(
    scenario: Scenario,
    scratch: Path,
    *,
    base: VoxpipeSettings | None = None,
    live: bool = False,
) -> VoxpipeSettings:
    """The call's settings: ``base`` (default: the environment's), the scenario's ``settings:``,
    scratch stores under ``scratch``, and (unless ``live``) no provider credentials."""
    from voxpipe.testing.scratch import scratch_settings

    base = base if base is not None else VoxpipeSettings()  # type: ignore[call-arg]
    try:
        return scratch_settings(base, scratch, overrides=scenario.settings, offline=not live)
    except ValueError as exc:
        where = scenario.path or "<scenario>"
        first = str(exc).splitlines()
        raise ScenarioError([f"{where}: settings: {' '.join(first[:3])}"]) from exc


# ---------------------------------------------------------------------------- watching the call


class _Watcher(CallSummarizer):
    """The call's events (``CallSummarizer``) plus what says whether a turn is still going."""

    def __init__(self, clock: Clock) -> None:
        super().__init__(clock)
        self.bot_speaking = False
        self.user_speaking = False
        self.speaking_since = 0.0
        self.llm_busy = 0
        self.tools_running = 0
        self.last_activity = clock.now()

    def record(self, frame: Frame) -> None:
        super().record(frame)
        kind = type(frame)
        now = self._clock.now()
        if kind is LLMResponseStartFrame:
            self.llm_busy += 1
        elif kind is LLMResponseEndFrame:
            self.llm_busy = max(0, self.llm_busy - 1)
        elif kind is FunctionCallInProgressFrame:
            self.tools_running += 1
        elif kind is FunctionCallResultFrame:
            self.tools_running = max(0, self.tools_running - 1)
        elif kind is EscalationStartedFrame:
            self._add("escalated", reason=getattr(frame, "reason", ""))
        elif kind is EndTaskFrame or kind is CancelTaskFrame:
            self._add("hangup", reason=getattr(frame, "reason", ""))
        elif kind is UserStartedSpeakingFrame:
            self.user_speaking = True
        elif kind is UserStoppedSpeakingFrame:
            self.user_speaking = False
        elif kind is BotStartedSpeakingFrame:
            self.bot_speaking = True
            self.speaking_since = now
        elif kind is BotStoppedSpeakingFrame:
            self.bot_speaking = False
        self.last_activity = now

    def idle(self, settle: float) -> bool:
        return (
            not self.bot_speaking
            and not self.user_speaking
            and not self.llm_busy
            and not self.tools_running
            and self._clock.now() - self.last_activity >= settle
        )


# ---------------------------------------------------------------------------- the bot's services


def _walk(root: object) -> Iterator[FrameProcessor]:
    if isinstance(root, PipelineTask):
        root = root.pipeline
    if isinstance(root, FrameProcessor):
        yield from root.processors()


def _prepare_services(built: object, scenario: Scenario, *, live: bool) -> None:
    """Scenario rules first in the scripted dialog; the ``latency:`` block on the services."""
    from voxpipe.processors.llm.scripted import ScriptedLLMService
    from voxpipe.processors.tts.base import TTSService

    lat = scenario.latency
    intents = [_intent(i, r) for i, r in enumerate(scenario.replies)]
    for proc in _walk(built):
        if isinstance(proc, ScriptedLLMService):
            proc.intents[:0] = intents
            if "llm_first_token_ms" in lat:
                proc.first_token_delay = lat["llm_first_token_ms"] / 1000
            if "llm_token_ms" in lat:
                proc.token_delay = lat["llm_token_ms"] / 1000
        elif isinstance(proc, TTSService) and lat.get("tts_ms") and not live:
            _delay_tts(proc, lat["tts_ms"] / 1000)
    if intents and not any(isinstance(p, ScriptedLLMService) for p in _walk(built)) and not live:
        raise ScenarioError(
            [f"{scenario.path or '<scenario>'}: replies: the bot has no scripted LLM to give them"]
        )


def _intent(i: int, reply: Any) -> Any:
    from voxpipe.processors.llm.scripted import Intent, IntentMatch

    args = reply.args

    def arguments(m: IntentMatch) -> dict[str, Any]:
        if args is None:
            return dict(m.groups)
        # "{city}" in an argument is the pattern's named group.
        return {
            k: v.format_map(_Groups(m.groups)) if isinstance(v, str) else v for k, v in args.items()
        }

    return Intent(
        f"scenario_reply_{i}",
        patterns=[reply.when],
        reply=reply.say or "",
        tool=reply.tool,
        arguments=arguments,
        after_tool=reply.after_tool,
    )


class _Groups(dict[str, str]):
    def __missing__(self, key: str) -> str:
        return "{" + key + "}"


def _delay_tts(tts: Any, seconds: float) -> None:
    """Each reply's first audio comes ``seconds`` after its first sentence (a cloud TTS's first
    byte); later sentences stream on behind it."""
    original = tts.synthesize
    started: set[int] = set()

    async def synthesize(text: str, reply: Any) -> None:
        if reply.index not in started:
            started.add(reply.index)
            await tts.clock.sleep(seconds)
        await original(text, reply)

    tts.synthesize = synthesize


# ---------------------------------------------------------------------------- the run


class _Run:
    def __init__(
        self, scenario: Scenario, settings: VoxpipeSettings, *, audio: bool, live: bool
    ) -> None:
        self.scenario = scenario
        self.settings = settings
        self.audio = audio
        self.live = live
        self._t0 = 0.0
        self.result = ScenarioResult(
            scenario.name, str(scenario.path) if scenario.path is not None else ""
        )

    async def run(self, clock: Clock) -> ScenarioResult:
        from voxpipe.state.shared import close_shared_stores
        from voxpipe.testing.bot_runs import _make_call, turn_kwargs_for

        scn = self.scenario
        meta: dict[str, Any] = {
            "caller": scn.caller.get("from", ""),
            "called": scn.caller.get("to", ""),
            "country": scn.caller.get("country"),
            "custom_parameters": dict(scn.caller.get("params") or {}),
        }
        if scn.caller.get("locale"):
            meta["locale"] = scn.caller["locale"]
        params = TransportParams(
            audio_in=PHONE,
            audio_out=PHONE,
            allow_interruptions=self.settings.allow_interruptions,
            **await turn_kwargs_for(self.settings, scn.caller.get("carrier", "twilio"), meta),
        )
        transport = MemoryTransport(params, name="scenario")
        call_id = f"scenario-{re.sub(r'[^A-Za-z0-9_-]', '-', scn.name)}"
        try:
            call = await _make_call(
                transport,
                self.settings,
                PHONE,
                call_id=call_id,
                carrier=scn.caller.get("carrier", "twilio"),
                meta=meta,
            )
            built = await load_bot(scn.bot)(call)
            task = build_task(call, built)
            _prepare_services(built, scn, live=self.live)
            watcher = _Watcher(clock)
            task.add_observer(watcher)
            runner = asyncio.get_running_loop().create_task(task.run())
            await task.wait_started()
            self._t0 = clock.now()
            watcher.start(self._t0)
            try:
                outcomes = await self._turns(clock, call, task, transport, watcher, runner)
                self.result.call_seconds = round(clock.now() - self._t0, 3)
                if not runner.done():
                    # The caller hangs up after the last turn, as a caller does.
                    await transport.on_wire_closed("scenario ended")
                await runner
                self.result.end_reason = task.end_reason
                if any(o.turn.expect.stored or o.turn.expect.not_stored for o in outcomes):
                    stored = await stored_text(call)
                    self.result.failures += check_stored(stored, outcomes)
            finally:
                if not runner.done():
                    runner.cancel()
        except ScenarioError:
            raise
        except Exception as exc:  # the bot itself broke: report it as the scenario's error
            logger.debug("scenario %s raised", scn.name, exc_info=exc)
            self.result.error = f"{type(exc).__name__}: {exc}"
        finally:
            await close_shared_stores()
        return self.result

    async def _turns(
        self,
        clock: Clock,
        call: Call,
        task: PipelineTask,
        transport: MemoryTransport,
        watcher: _Watcher,
        runner: asyncio.Task[None],
    ) -> list[TurnOutcome]:
        turns = self.scenario.turns
        outcomes: list[TurnOutcome] = []
        first = turns[0]
        first_acts = first if first.caller is not None or first.press is not None else None
        if first_acts is not None:
            # The greeting plays before the caller's first words (not part of turn 1).
            await self._wait(clock, transport, watcher, runner, first.barge_in_ms, 0)
        for i, turn in enumerate(turns):
            if runner.done():
                self._fail(
                    turn, "the call to still be up", f"the call had ended ({task.end_reason})"
                )
                break
            # A first turn that only waits hears the greeting (said as the call started).
            mark = 0 if i == 0 and turn is not first_acts else len(watcher.events)
            spoke_at = await self._act(clock, task, transport, turn)
            nxt = turns[i + 1].barge_in_ms if i + 1 < len(turns) else None
            await self._wait(clock, transport, watcher, runner, nxt, mark)
            outcome = self._outcome(turn, watcher.events[mark:], spoke_at, runner.done())
            outcomes.append(outcome)
            self.result.failures += check_turn(outcome)
        self.result.turns = outcomes
        return outcomes

    async def _act(
        self, clock: Clock, task: PipelineTask, transport: MemoryTransport, turn: Turn
    ) -> float | None:
        """Play the turn's action; the call time the caller's speech ended (text mode)."""
        if turn.pause_ms:
            await self._line(clock, transport, turn.pause_ms / 1000)
        inp = transport.input()
        if turn.press is not None:
            for digit in turn.press:
                await inp.push_dtmf(digit)
                await self._line(clock, transport, 0.2)
            return None
        if turn.caller is None:
            return None
        if self.audio:
            await _speak(transport, turn.caller, self.settings)
            return None
        words = max(1, len(turn.caller.split()))
        if inp.bot_speaking and inp.can_interrupt and inp.params.guard.min_words == 0:
            await inp.request_interruption("caller speech")  # what the VAD's onset does
        await task.inject(UserStartedSpeakingFrame())
        await clock.sleep(words * WORD_S)
        stt_s = self.scenario.latency.get("stt_ms", 0.0) / 1000
        text = TranscriptionFrame(text=turn.caller, user_id=self.scenario.caller.get("from", ""))
        if stt_s <= 0:
            await task.inject(text)
        end = clock.now()
        await task.inject(UserStoppedSpeakingFrame())
        if stt_s > 0:
            await clock.sleep(stt_s)
            await task.inject(text)
        return end

    async def _line(self, clock: Clock, transport: MemoryTransport, seconds: float) -> None:
        """Let ``seconds`` pass; in audio mode the line carries silence meanwhile (as a phone's)."""
        if self.audio:
            await transport.play_silence(seconds)
        else:
            await clock.sleep(seconds)

    async def _wait(
        self,
        clock: Clock,
        transport: MemoryTransport,
        watcher: _Watcher,
        runner: asyncio.Task[None],
        barge_in_ms: float | None,
        mark: int,
    ) -> None:
        """Until the bot is done (or, for a barge-in next, ``barge_in_ms`` into its speech)."""
        start = clock.now()
        while not runner.done():
            # A barge-in comes that long into the bot's current stretch of speech.
            if barge_in_ms is not None and watcher.bot_speaking:
                if clock.now() - watcher.speaking_since >= barge_in_ms / 1000:
                    return
            if watcher.idle(SETTLE_S):
                return
            if clock.now() - start > MAX_TURN_S:
                logger.warning("scenario turn did not settle in %.0f s", MAX_TURN_S)
                return
            await self._line(clock, transport, POLL_S)

    def _outcome(
        self, turn: Turn, events: list[dict[str, Any]], spoke_at: float | None, ended: bool
    ) -> TurnOutcome:
        out = TurnOutcome(turn)
        said = [e["text"] for e in events if e["type"] in ("llm_reply", "bot_says") and e["text"]]
        out.reply = " ".join(said).strip()
        out.tools = [
            {"name": e["name"], "arguments": e["arguments"]}
            for e in events
            if e["type"] == "tool_call"
        ]
        out.escalated = any(e["type"] == "escalated" for e in events)
        out.hangup = ended or any(e["type"] == "hangup" for e in events)
        starts = [e["t"] for e in events if e["type"] == "bot_started_speaking"]
        out.bot_spoke = bool(starts)
        if spoke_at is None:  # audio mode: the VAD's end of speech
            stops = [e["t"] for e in events if e["type"] == "user_stopped_speaking"]
            end = stops[0] if stops else None
        else:
            end = spoke_at - self._t0
        if end is not None:
            nxt = next((t for t in starts if t >= end), None)
            out.latency_ms = round((nxt - end) * 1000, 1) if nxt is not None else None
        return out

    def _fail(self, turn: Turn | str, expected: str, happened: str) -> None:
        where = turn.describe() if isinstance(turn, Turn) else turn
        self.result.failures.append(Failure(where, expected, happened))


async def _speak(transport: MemoryTransport, text: str, settings: VoxpipeSettings) -> None:
    """The caller says ``text`` (offline TTS) into the line, then half a second of silence."""
    from voxpipe.testing.fresh_speech import speak_fresh

    # In a fresh process: the same text sounds the same whatever this process said before.
    # Blocking on purpose: on the virtual clock the call's time must not move meanwhile.
    [(pcm, rate)] = speak_fresh([text], "en-us", 150)
    await transport.play_caller(pcm, rate)
    await transport.play_silence(0.5)


# ---------------------------------------------------------------------------- public


def run_scenario(
    scenario: str | Path | dict[str, Any] | Scenario,
    *,
    audio: bool = False,
    live: bool = False,
    settings: VoxpipeSettings | None = None,
) -> ScenarioResult:
    """Run one scenario (a file, a parsed YAML dict or a ``Scenario``) and check its turns.

    Raises ``ScenarioError`` (one line per problem) when the scenario is not valid.
    ``settings`` is the base the scenario's ``settings:`` apply to (default: the environment).
    With ``audio`` the result is the same in a fresh process every time, but may depend on
    what espeak-ng said before in this one (``voxpipe test --audio`` runs each in its own).
    """
    if isinstance(scenario, Scenario):
        scn = scenario
    elif isinstance(scenario, dict):
        scn = parse_scenario(scenario)
    else:
        scn = load_scenario(scenario)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="voxpipe-scenario-") as scratch:
        call_settings = scenario_settings(scn, Path(scratch), base=settings, live=live)
        run = _Run(scn, call_settings, audio=audio, live=live)
        clock: Clock
        if live:
            # Real providers answer in real time: a virtual clock would jump past their replies.
            clock = Clock()
            result = asyncio.run(run.run(clock))
        else:
            vclock = VirtualClock()
            result = vclock.run(run.run(vclock))
    result.wall_seconds = round(time.perf_counter() - started, 3)
    return result
