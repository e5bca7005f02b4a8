"""A served voxpipe app for carrier transfer tests: its signed transfer routes, a session and
transcript store, and a bot that only records the calls it is given (a caller sent back to
the bot arrives as a new stream of the same call)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from voxpipe.call import Call
from voxpipe.config.settings import VoxpipeSettings
from voxpipe.pipelines import Pipeline
from voxpipe.processors.aggregators import LLMContext
from voxpipe.processors.aggregators.assistant import AssistantContextAggregator
from voxpipe.processors.aggregators.transcript import TranscriptRecorder
from voxpipe.server.app import create_app
from voxpipe.server.run import running_server
from voxpipe.state.memory import MemorySessionStore
from voxpipe.state.session import Turn
from voxpipe.state.sqlite_store import SqliteTranscriptStore
from voxpipe.telephony.warm_transfer import TransferWording

CALLER_NUMBER = "+447700900123"
CALLED_NUMBER = "+442079460000"


def wording(reason: str, summary: str) -> TransferWording:
    return TransferWording(
        brief=f"Reason: {reason}. Summary: {summary}",
        hold_line="Please hold.",
        language="en-GB",
    )


@dataclass
class Rig:
    settings: VoxpipeSettings
    url: str
    app: Any
    sessions: MemorySessionStore
    transcripts: SqliteTranscriptStore
    bot_calls: list[Call] = field(default_factory=list)
    bot_started: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def state(self) -> Any:
        return self.app.state.voxpipe

    def recorder(self, call_id: str) -> TranscriptRecorder:
        return TranscriptRecorder(
            AssistantContextAggregator(LLMContext("test")),
            sessions=self.sessions,
            transcripts=self.transcripts,
            call_id=call_id,
        )

    def handoff_kwargs(self, call_id: str) -> dict[str, Any]:
        return {
            "recorder": self.recorder(call_id),
            "sessions": self.sessions,
            "transcripts": self.transcripts,
            "wording": wording,
        }

    async def seed(self, call_id: str) -> None:
        """The conversation so far, as the bot's recorder left it in the session."""
        await self.sessions.set_meta(call_id, {"call_id": call_id, "caller": CALLER_NUMBER})
        await self.sessions.append_turn(call_id, Turn("user", "I want a person.", 1.0, 2.0))

    async def calls_over(self) -> None:
        async with asyncio.timeout(10):
            while len(self.state.registry):
                await self.state.registry.sessions[0].ended.wait()


@contextlib.asynccontextmanager
async def served(tmp_path: Path, **settings: Any) -> AsyncIterator[Rig]:
    config = VoxpipeSettings(
        _env_file=None,  # type: ignore[call-arg]
        spool_dir=str(tmp_path / "spool"),
        **settings,
    )
    calls: list[Call] = []
    started = asyncio.Event()

    async def bot(call: Call) -> Pipeline:
        calls.append(call)
        started.set()
        return Pipeline([call.transport.input(), call.transport.output()])

    app = create_app(bot, config, batched_vad=None)
    transcripts = SqliteTranscriptStore(tmp_path / "t.sqlite3")
    await transcripts.start()
    try:
        async with running_server(app, config) as srv:
            config.public_url = srv.url  # carriers need absolute callback URLs
            yield Rig(config, srv.url, app, MemorySessionStore(), transcripts, calls, started)
    finally:
        await transcripts.close()
