"""AssistantContextAggregator: records in the context what the caller actually heard."""

from __future__ import annotations

from voxpipe.frames import (
    BotStoppedSpeakingFrame,
    CancelFrame,
    EndFrame,
    Frame,
    FrameDirection,
    FunctionCallInProgressFrame,
    FunctionCallResultFrame,
    LLMResponseEndFrame,
    LLMResponseStartFrame,
    TTSTextFrame,
)
from voxpipe.processors.aggregators.context import ContextEntry, LLMContext
from voxpipe.processors.base import FrameProcessor
from voxpipe.processors.llm.base import result_content

DOWNSTREAM = FrameDirection.DOWNSTREAM

# Text that attaches to the previous word with no space.
_NO_SPACE_BEFORE = tuple(",.;:!?)]}%'’”…")


class AssistantContextAggregator(FrameProcessor):
    """Placed after the output transport: builds the assistant's messages from ``TTSTextFrame``s,
    which pass the transport only once their audio has played.

    The message enters the context with the first heard words and grows as more are heard,
    so it always holds what the caller heard so far and sits before anything said after it.
    ``LLMResponseEndFrame`` closes it; an ``InterruptionFrame`` closes it marked
    ``interrupted``. Text generated but never played never arrives here, so never enters the
    context. Tool calls and results (``FunctionCallInProgressFrame`` /
    ``FunctionCallResultFrame``) are recorded too. Lines spoken outside an LLM response (a
    greeting, the fallback line) are recorded the same way and closed when the bot stops.
    """

    def __init__(self, context: LLMContext, *, name: str | None = None) -> None:
        super().__init__(name=name)
        self.context = context
        self._open: ContextEntry | None = None
        self._text = ""
        self._in_response = False

    async def on_interruption(self) -> None:
        self._close(interrupted=True)
        self._in_response = False

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        if direction is DOWNSTREAM:
            if isinstance(frame, TTSTextFrame):
                self._hear(frame.text)
            elif isinstance(frame, LLMResponseStartFrame):
                self._close()
                self._in_response = True
            elif isinstance(frame, LLMResponseEndFrame):
                self._close()
                self._in_response = False
            elif isinstance(frame, FunctionCallInProgressFrame):
                # Joins the open message (words said just before the call) and closes it.
                self.context.add_tool_call(frame.tool_call_id, frame.function_name, frame.arguments)
                self._open = None
                self._text = ""
            elif isinstance(frame, FunctionCallResultFrame):
                self.context.add_tool_result(
                    frame.tool_call_id,
                    frame.function_name,
                    frame.arguments,
                    result_content(frame.result),
                )
            elif isinstance(frame, BotStoppedSpeakingFrame):
                if not self._in_response:
                    self._close()
            elif isinstance(frame, EndFrame | CancelFrame):
                self._close()
        await self.push_frame(frame, direction)

    def _hear(self, text: str) -> None:
        if not text or not text.strip():
            if self._text:
                self._text += text
            return
        if self._open is not None and self._open is not self._last_entry():
            self._close()  # something was added after it: later words form a new message
        self._text = _join(self._text, text)
        if self._open is None:
            self._open = self.context.add_assistant_message(self._text.strip())
        else:
            self._open.message["content"] = self._text.strip()

    def _last_entry(self) -> ContextEntry | None:
        # The open message keeps growing only while nothing was added after it (e.g. a
        # caller's turn, with interruptions off): later words start a new message then.
        entries = self.context.entries
        return entries[-1] if entries else None

    @property
    def open_entry(self) -> ContextEntry | None:
        """The assistant message still growing as its words are heard (None between replies)."""
        return self._open

    def _close(self, *, interrupted: bool = False) -> None:
        if self._open is not None and interrupted:
            self._open.interrupted = True
            self.logger.debug("assistant turn interrupted; heard: %r", self._text.strip())
        self._open = None
        self._text = ""

    @property
    def heard_text(self) -> str:
        """What the caller has heard of the assistant's current message."""
        return self._text.strip()


def _join(before: str, piece: str) -> str:
    if not before:
        return piece.lstrip()
    if before[-1].isspace() or piece[0].isspace() or piece.startswith(_NO_SPACE_BEFORE):
        return before + piece
    return before + " " + piece
