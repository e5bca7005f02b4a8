"""Held (preemptive) replies in the LLM service, on the virtual clock: nothing goes downstream
and no tool runs until the turn is confirmed; a discard stops the reply unheard."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any

from voxpipe.frames import (
    Frame,
    FrameDirection,
    FunctionCallInProgressFrame,
    LLMResponseEndFrame,
    LLMResponseStartFrame,
    LLMTextFrame,
)
from voxpipe.processors.base import FrameProcessor
from voxpipe.processors.llm.base import ChatChunk, LLMService, ToolCallDelta
from voxpipe.processors.turn.frames import PreemptiveLLMMessagesFrame, PreemptiveReplyFrame
from voxpipe.testing import Sleep, run_frames

ASK = [{"role": "user", "content": "Where is my order 456?"}]


class ToolFirst(LLMService):
    """Takes 0.2 s, asks for the order_status tool, then says what it returned."""

    def __init__(self) -> None:
        super().__init__(max_tokens=100, first_token_timeout=5.0, retries=0, fallback_text="Sorry.")
        self.requests = 0
        self.ran: list[str] = []

        async def order_status(order: str = "") -> dict[str, str]:
            """Look an order up.

            Args:
                order: The order number.
            """
            self.ran.append(order)
            return {"status": "shipped"}

        self.register_function(order_status)

    async def stream_chat(
        self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None
    ) -> AsyncGenerator[ChatChunk, None]:
        self.requests += 1
        await self.clock.sleep(0.2)
        if messages[-1]["role"] == "tool":
            yield ChatChunk(text="It has shipped.")
            return
        call = ToolCallDelta(0, "call_1", "order_status", '{"order": "456"}')
        yield ChatChunk(tool_calls=[call], finish_reason="tool_calls")


class Seen(FrameProcessor):
    """After the LLM: when each reply frame went by, on the call's clock."""

    def __init__(self) -> None:
        super().__init__()
        self.at: list[tuple[float, type]] = []

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        self.at.append((self.clock.now(), type(frame)))
        await self.push_frame(frame, direction)


def _kinds(frames: list[Any]) -> list[type]:
    wanted = (LLMResponseStartFrame, LLMTextFrame, FunctionCallInProgressFrame, LLMResponseEndFrame)
    return [type(f) for f in frames if isinstance(f, wanted)]


async def test_a_held_reply_runs_its_tool_only_once_released() -> None:
    llm = ToolFirst()
    seen = Seen()
    r = await run_frames(
        [llm, seen],
        [
            PreemptiveLLMMessagesFrame(ASK, reply_id=1),
            Sleep(1.0),  # the model asked for the tool long ago: held, not run
            PreemptiveReplyFrame(reply_id=1, release=True),
            Sleep(1.0),
        ],
    )
    assert llm.ran == ["456"] and llm.requests == 2
    assert _kinds(r.downstream) == [
        LLMResponseStartFrame,
        FunctionCallInProgressFrame,
        LLMTextFrame,
        LLMResponseEndFrame,
    ]
    # Nothing went out before the release, at 1.0 s.
    [start] = [t for t, kind in seen.at if kind is LLMResponseStartFrame]
    assert start >= 1.0
    assert (llm.holds.started, llm.holds.released, llm.holds.discarded) == (1, 1, 0)


async def test_a_discarded_reply_is_never_heard_and_its_tool_never_runs() -> None:
    llm = ToolFirst()
    r = await run_frames(
        [llm],
        [
            PreemptiveLLMMessagesFrame(ASK, reply_id=1),
            Sleep(0.5),
            PreemptiveReplyFrame(reply_id=1, release=False),
            # The request that replaces it is answered as usual.
            PreemptiveLLMMessagesFrame(ASK, reply_id=2),
            Sleep(0.1),
            PreemptiveReplyFrame(reply_id=2, release=True),
            Sleep(1.0),
        ],
    )
    assert llm.ran == ["456"]  # once: for the reply released
    assert _kinds(r.downstream) == [
        LLMResponseStartFrame,
        FunctionCallInProgressFrame,
        LLMTextFrame,
        LLMResponseEndFrame,
    ]
    assert (llm.holds.started, llm.holds.released, llm.holds.discarded) == (2, 1, 1)


async def test_a_reply_discarded_before_it_started_is_skipped() -> None:
    llm = ToolFirst()
    r = await run_frames(
        [llm],
        [
            PreemptiveReplyFrame(reply_id=3, release=False),
            PreemptiveLLMMessagesFrame(ASK, reply_id=3),
            Sleep(1.0),
        ],
    )
    assert llm.requests == 0 and _kinds(r.downstream) == []
