"""Live calls heartbeat from start to end, so the orphan sweeper never takes one (issue 10 #1).

Real Redis. Time as the stores and the sweeper see it is a manual wall clock the test moves
on; after each move the test waits for the call's next heartbeat (an event), then sweeps.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

from voxpipe.frames import (
    BotStartedSpeakingFrame,
    BotStoppedSpeakingFrame,
    EndFrame,
    Frame,
    LLMResponseEndFrame,
    LLMResponseStartFrame,
    RetentionConsentFrame,
    TranscriptionFrame,
    TTSTextFrame,
    UserStartedSpeakingFrame,
    UserStoppedSpeakingFrame,
)
from voxpipe.pipelines.pipeline import Pipeline
from voxpipe.pipelines.task import PipelineTask
from voxpipe.processors.aggregators import LLMContext, UserContextAggregator
from voxpipe.processors.aggregators.assistant import AssistantContextAggregator
from voxpipe.processors.aggregators.transcript import TranscriptRecorder
from voxpipe.state.redis_store import RedisSessionStore
from voxpipe.state.sqlite_store import SqliteTranscriptStore
from voxpipe.state.sweeper import OrphanSweeper
from voxpipe.state.transcripts import Transcript

servers = __import__("sys").modules["voxpipe_tests_vp_servers"]
REPO = Path(__file__).resolve().parents[2]
TIMEOUT_S = 60.0  # HEARTBEAT_TIMEOUT_S's default
INTERVAL_S = 10.0  # HEARTBEAT_INTERVAL_S's default, in the wall clock's time


class Wall:
    """The wall clock of the stores and the sweeper; moved by the test."""

    def __init__(self) -> None:
        self.now = 1_900_000_000.0

    def __call__(self) -> float:
        return self.now


class BeatingRedis(RedisSessionStore):
    """The Redis store, telling the test the wall time each finished heartbeat wrote."""

    last_beat_at = 0.0
    _beaten: asyncio.Event | None = None

    async def heartbeat(self, session_id: str, worker_id: str) -> None:
        at = self._clock()
        await super().heartbeat(session_id, worker_id)
        self.last_beat_at = at
        self.beaten.set()

    @property
    def beaten(self) -> asyncio.Event:
        if self._beaten is None:
            self._beaten = asyncio.Event()
        return self._beaten

    async def beat_at_or_after(self, at: float) -> None:
        async def wait() -> None:
            while self.last_beat_at < at:
                self.beaten.clear()
                await self.beaten.wait()

        try:  # beats come every 10 ms; the timeout only turns "never" into a failure
            await asyncio.wait_for(wait(), 10)
        except TimeoutError:
            raise AssertionError("the live call does not heartbeat") from None


class CountingTranscripts(SqliteTranscriptStore):
    written: list[Transcript]

    async def write(self, transcript: Transcript) -> bool:
        self.__dict__.setdefault("written", []).append(transcript)
        return await super().write(transcript)


def user_turn(text: str) -> list[Frame]:
    return [UserStartedSpeakingFrame(), TranscriptionFrame(text), UserStoppedSpeakingFrame()]


def reply(text: str) -> list[Frame]:
    return [
        LLMResponseStartFrame(),
        BotStartedSpeakingFrame(),
        TTSTextFrame(text),
        LLMResponseEndFrame(),
        BotStoppedSpeakingFrame(),
    ]


async def turns_stored(store: RedisSessionStore, call_id: str, n: int) -> None:
    # The recorder's writer task stores turns in the background; the deadline only guards.
    deadline = time.monotonic() + 10
    while True:
        state = await store.load(call_id)
        if state is not None and len(state.turns) >= n:
            return
        assert time.monotonic() < deadline, f"{n} turns never reached the session store"
        await asyncio.sleep(0.005)


class Call:
    """A call through user aggregator, assistant aggregator and recorder, fed by the test."""

    def __init__(self, sessions: RedisSessionStore, transcripts: Any, **recorder: Any) -> None:
        context = LLMContext("be brief")
        assistant = AssistantContextAggregator(context)
        self.recorder = TranscriptRecorder(
            assistant,
            sessions=sessions,
            transcripts=transcripts,
            heartbeat_interval_s=0.01,  # real seconds: only how fast the test runs
            worker_id="worker-test",
            **recorder,
        )
        self.task = PipelineTask(
            Pipeline([UserContextAggregator(context), assistant, self.recorder])
        )
        self.runner: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.runner = asyncio.create_task(self.task.run())
        await self.task.wait_started()

    async def feed(self, frames: list[Frame]) -> None:
        for f in frames:
            await self.task.inject(f)

    async def end(self) -> None:
        await self.task.queue_frame(EndFrame(reason="caller hung up"))
        assert self.runner is not None
        await self.runner


async def stay_silent(
    store: BeatingRedis, wall: Wall, sweeper: OrphanSweeper, seconds: float
) -> None:
    """Let ``seconds`` of wall time pass with nothing said, sweeping at every heartbeat."""
    end = wall.now + seconds
    while wall.now < end:
        wall.now += INTERVAL_S
        await store.beat_at_or_after(wall.now)
        result = await sweeper.sweep_once()
        assert result.persisted == [] and result.failed == [], "a live call was swept"


async def test_a_call_silent_for_three_timeouts_keeps_its_state(
    redis_prefix: str, tmp_path: Path
) -> None:
    wall = Wall()
    sessions = BeatingRedis.from_url(servers.REDIS_URL, key_prefix=redis_prefix, clock=wall)
    transcripts = CountingTranscripts(tmp_path / "t.sqlite3")
    await transcripts.start()
    sweeper = OrphanSweeper(sessions, transcripts, heartbeat_timeout_s=TIMEOUT_S, clock=wall)
    call = Call(sessions, transcripts, call_id="CA-silent", meta={"caller": "+447700900123"})
    try:
        await call.start()
        await call.feed([*user_turn("I need to find my order number"), *reply("Take your time.")])
        await turns_stored(sessions, "CA-silent", 2)

        # The caller looks for the number: nothing is said for three heartbeat timeouts.
        await stay_silent(sessions, wall, sweeper, 3 * TIMEOUT_S)

        state = await sessions.load("CA-silent")
        assert state is not None, "the live call's state was taken"
        assert [t.text for t in state.turns] == [
            "I need to find my order number",
            "Take your time.",
        ]
        assert state.meta["caller"] == "+447700900123"
        assert state.meta["worker_id"] == "worker-test"
        assert wall.now - state.heartbeat_at <= INTERVAL_S

        await call.feed([*user_turn("it is 4 5 6"), *reply("Found it.")])
        await call.end()

        # One complete transcript, written by the call itself (not by the sweeper).
        assert len(transcripts.written) == 1
        assert await transcripts.call_ids() == ["CA-silent"]
        t = await transcripts.read("CA-silent", reader="test")
        assert t is not None and not t.metadata.get("swept")
        assert [x.text for x in t.turns] == [
            "I need to find my order number",
            "Take your time.",
            "it is 4 5 6",
            "Found it.",
        ]
        # The call is over: its session and its liveness are gone, the heartbeat stopped.
        assert await sessions.load("CA-silent") is None
        assert await sessions.liveness("CA-silent") is None
        assert not call.recorder.heartbeat.running
    finally:
        await sessions.close()
        await transcripts.close()


async def test_a_call_beats_before_consent_and_stores_nothing_until_it(
    redis_prefix: str, redis_client: Any, tmp_path: Path
) -> None:
    wall = Wall()
    sessions = BeatingRedis.from_url(servers.REDIS_URL, key_prefix=redis_prefix, clock=wall)
    transcripts = CountingTranscripts(tmp_path / "t.sqlite3")
    await transcripts.start()
    sweeper = OrphanSweeper(sessions, transcripts, heartbeat_timeout_s=TIMEOUT_S, clock=wall)
    call = Call(
        sessions,
        transcripts,
        call_id="CA-asking",
        meta={"caller": "+4915112345678"},
        require_consent=True,
    )
    try:
        await call.start()
        await call.feed(user_turn("hello? my name is Hans Meier"))  # over the consent prompt
        await stay_silent(sessions, wall, sweeper, 3 * TIMEOUT_S)

        # Alive, and known to be: a liveness record naming the worker, nothing else.
        beat = await sessions.liveness("CA-asking")
        assert beat is not None and beat.worker_id == "worker-test" and beat.at == wall.now
        assert await sessions.load("CA-asking") is None
        assert await sessions.list_sessions() == []
        keys = sorted([k async for k in redis_client.scan_iter(match=f"{redis_prefix}*")])
        assert keys == [f"{redis_prefix}CA-asking:alive", f"{redis_prefix}generation"]
        alive = json.loads(await redis_client.get(f"{redis_prefix}CA-asking:alive"))
        assert set(alive) == {"worker_id", "at"}

        await call.feed([RetentionConsentFrame(granted=True, source="dtmf")])
        await call.feed([*user_turn("where is my parcel"), *reply("It ships today.")])
        await call.end()
        t = await transcripts.read("CA-asking", reader="test")
        assert t is not None and [x.text for x in t.turns] == [
            "where is my parcel",
            "It ships today.",
        ]
        assert len(transcripts.written) == 1
        assert await sessions.liveness("CA-asking") is None
    finally:
        await sessions.close()
        await transcripts.close()


# A worker running a real call through the recorder: it stores two turns, beats every 50 ms,
# says "ready", then runs until it is killed.
WORKER = r"""
import asyncio, os, sys
from pathlib import Path
from voxpipe.frames import *
from voxpipe.pipelines.pipeline import Pipeline
from voxpipe.pipelines.task import PipelineTask
from voxpipe.processors.aggregators import LLMContext, UserContextAggregator
from voxpipe.processors.aggregators.assistant import AssistantContextAggregator
from voxpipe.processors.aggregators.transcript import TranscriptRecorder
from voxpipe.state.redis_store import RedisSessionStore
from voxpipe.state.sqlite_store import SqliteTranscriptStore

async def main(url, prefix, db):
    sessions = RedisSessionStore.from_url(url, key_prefix=prefix)
    context = LLMContext()
    assistant = AssistantContextAggregator(context)
    recorder = TranscriptRecorder(
        assistant, sessions=sessions, transcripts=SqliteTranscriptStore(db),
        call_id="CA-killed", heartbeat_interval_s=0.05, worker_id=f"worker-{os.getpid()}",
        meta={"caller": "+447700900123", "locale": "en-GB"},
    )
    task = PipelineTask(Pipeline([UserContextAggregator(context), assistant, recorder]))
    runner = asyncio.create_task(task.run())
    await task.wait_started()
    for f in [UserStartedSpeakingFrame(), TranscriptionFrame("my card was charged twice"),
              UserStoppedSpeakingFrame(), LLMResponseStartFrame(), BotStartedSpeakingFrame(),
              TTSTextFrame("Let me check that."), LLMResponseEndFrame(),
              BotStoppedSpeakingFrame()]:
        await task.inject(f)
    while True:
        state = await sessions.load("CA-killed")
        if state is not None and len(state.turns) == 2:
            break
        await asyncio.sleep(0.01)
    print("ready", flush=True)
    await runner

asyncio.run(main(*sys.argv[1:]))
"""


async def test_a_sigkilled_workers_call_is_still_swept(
    redis_prefix: str, redis_client: Any, tmp_path: Path
) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        WORKER,
        servers.REDIS_URL,
        redis_prefix,
        str(tmp_path / "worker.sqlite3"),
        cwd=REPO,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    sessions = RedisSessionStore.from_url(servers.REDIS_URL, key_prefix=redis_prefix)
    transcripts = SqliteTranscriptStore(tmp_path / "t.sqlite3")
    try:
        line = await asyncio.wait_for(proc.stdout.readline(), 60)
        assert line.strip() == b"ready", await proc.stderr.read()
        # The worker beats: its liveness moves on (polled; the deadline only guards).
        first = await sessions.liveness("CA-killed")
        assert first is not None and first.worker_id == f"worker-{proc.pid}"
        deadline = time.monotonic() + 10
        while (beat := await sessions.liveness("CA-killed")) is not None and beat.at <= first.at:
            assert time.monotonic() < deadline, "the worker does not heartbeat"
            await asyncio.sleep(0.01)
        # While it lives, a sweep leaves the call alone.
        live = OrphanSweeper(sessions, transcripts, heartbeat_timeout_s=TIMEOUT_S)
        assert (await live.sweep_once()).persisted == []
    finally:
        proc.kill()  # SIGKILL: no cleanup, no transcript; the worker just vanishes
        await proc.wait()
    assert proc.returncode == -9

    # Its heartbeats stop: a minute and a second later (the sweeper's clock runs ahead) it is
    # an orphan, and the sweeper in this process writes what the session held.
    sweeper = OrphanSweeper(
        sessions, transcripts, heartbeat_timeout_s=TIMEOUT_S, clock=lambda: time.time() + 61
    )
    try:
        result = await sweeper.sweep_once()
        assert result.persisted == ["CA-killed"] and result.failed == []
        t = await transcripts.read("CA-killed", reader="test")
        assert t is not None
        assert [x.text for x in t.turns] == ["my card was charged twice", "Let me check that."]
        assert (t.caller, t.locale) == ("+447700900123", "en-GB")
        assert t.metadata["swept"] is True
        assert t.metadata["worker_id"] == f"worker-{proc.pid}"
        assert await sessions.load("CA-killed") is None
        assert await sessions.liveness("CA-killed") is None
    finally:
        await sessions.close()
        await transcripts.close()
