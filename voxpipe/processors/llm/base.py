"""LLMService: what every LLM processor shares — the reply loop, tools, timeout/retry/fallback.

A provider subclass only implements ``stream_chat``: an async generator of ``ChatChunk``s for
one request. This class turns an ``LLMMessagesFrame`` into ``LLMResponseStartFrame``, streamed
``LLMTextFrame`` fragments (as they arrive, no sentence splitting: the TTS does that) and
``LLMResponseEndFrame``; runs the tool calls the model asks for and re-runs the model with
their results; gives up on a slow first token after ``first_token_timeout`` with a retry and
then a spoken fallback line (a ``TTSSpeakFrame``). The retry waits a jittered backoff on the
call's clock (``retry_backoff``; longer when the provider asked with ``retry-after``), so the
calls of a worker do not hit a failing provider in the same millisecond. Replies that fail
every attempt are a provider outage (``ProviderOutageFrame`` upstream, ended by the next
reply that works); one still failing after ``outage_grace_s`` ends the call gracefully.
"""

from __future__ import annotations

import asyncio
import inspect
import json
from collections.abc import AsyncGenerator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from voxpipe.frames import (
    EndFrame,
    Frame,
    FrameDirection,
    FunctionCallInProgressFrame,
    FunctionCallResultFrame,
    LLMMessagesFrame,
    LLMResponseEndFrame,
    LLMResponseStartFrame,
    LLMTextFrame,
    MetricsFrame,
    StartFrame,
    SystemFrame,
    TTSSpeakFrame,
)
from voxpipe.processors.base import FrameProcessor
from voxpipe.processors.llm.hold import ReplyHolds
from voxpipe.processors.llm.tool_schema import ToolArgumentsError, ToolSignature, tool_signature
from voxpipe.processors.llm.window import cap_messages
from voxpipe.processors.outage import DEFAULT_OUTAGE_GRACE_S, Backoff, OutageTracker
from voxpipe.processors.turn.frames import PreemptiveLLMMessagesFrame, PreemptiveReplyFrame

DOWNSTREAM = FrameDirection.DOWNSTREAM

FunctionHandler = Callable[..., Any]
F = TypeVar("F", bound=FunctionHandler)

_END: Any = object()  # end-of-stream marker for anext()


# ---------------------------------------------------------------------------- stream items


@dataclass(slots=True)
class ToolCallDelta:
    """A fragment of one tool call: id and name come first, arguments in pieces after."""

    index: int = 0
    id: str | None = None
    name: str | None = None
    arguments: str | None = None


@dataclass(slots=True)
class ChatChunk:
    """One piece of a streamed reply, provider-neutral."""

    text: str = ""
    tool_calls: list[ToolCallDelta] = field(default_factory=list)
    finish_reason: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None


class LLMProviderError(Exception):
    """A request the provider refused or failed; ``retryable`` errors get the one retry."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        retryable: bool = False,
        retry_after: float | None = None,
    ):
        super().__init__(message)
        self.status = status
        self.retryable = retryable
        self.retry_after = retry_after  # seconds the provider asked to wait, if it said


# ---------------------------------------------------------------------------- tools


@dataclass(slots=True)
class FunctionSpec:
    """A function the model may call: its handler, its OpenAI tool schema and its signature."""

    name: str
    handler: FunctionHandler
    schema: dict[str, Any]
    cancel_on_interruption: bool = True
    timeout_s: float | None = None
    # Checks (and converts) the arguments a model sends; None: passed as they come.
    signature: ToolSignature | None = None


@dataclass(slots=True)
class ToolCall:
    """A complete tool call the model made in one round."""

    id: str
    name: str
    arguments_json: str

    def arguments(self) -> tuple[dict[str, Any], str | None]:
        """The parsed arguments, and an error message if they are not a JSON object."""
        if not self.arguments_json.strip():
            return {}, None
        try:
            value = json.loads(self.arguments_json)
        except ValueError as exc:
            return {}, f"arguments are not valid JSON: {exc}"
        if not isinstance(value, dict):
            return {}, "arguments must be a JSON object"
        return value, None


def tool_schema(
    name: str, schema: dict[str, Any] | None, description: str | None = None
) -> dict[str, Any]:
    """Normalise a tool schema to OpenAI's ``{"type": "function", "function": {...}}`` form.

    Accepts the full tool form, the bare function form (``name``/``description``/
    ``parameters``) or just the JSON schema of the parameters.
    """
    if schema is None:
        function: dict[str, Any] = {"parameters": {"type": "object", "properties": {}}}
    elif schema.get("type") == "function" and isinstance(schema.get("function"), dict):
        function = dict(schema["function"])
    elif "parameters" in schema or "name" in schema:
        function = dict(schema)
    elif schema.get("type") == "object":
        function = {"parameters": schema}
    else:
        raise ValueError(
            f"tool {name!r}: the schema must be an OpenAI tool, a function description or the "
            f'JSON schema of its parameters ({{"type": "object", ...}}); got {schema!r}'
        )
    if function.get("name") not in (None, name):
        raise ValueError(
            f"tool {name!r}: the schema names the function {function['name']!r}; use one name"
        )
    function["name"] = name
    if description and not function.get("description"):
        function["description"] = description
    function.setdefault("parameters", {"type": "object", "properties": {}})
    return {"type": "function", "function": function}


def result_content(result: Any) -> str:
    """A tool result as the message content the model reads (JSON unless already text)."""
    if isinstance(result, str):
        return result
    return json.dumps(result, default=str)


# ---------------------------------------------------------------------------- the service


@dataclass(slots=True)
class _Round:
    text: str = ""
    calls: list[ToolCall] = field(default_factory=list)


class LLMService(FrameProcessor):
    """Answers ``LLMMessagesFrame``s with a streamed reply, running tools; subclasses stream.

    Replies are produced one after another by an owned interruptible task (an interruption
    cancels the one in flight, which closes its provider stream, and drops queued ones).
    ``TTSSpeakFrame`` and other frames pass through, in order behind queued replies.
    A stream that goes silent for ``stall_timeout`` after its first token is cut there.
    Defaults for the numbers come from the settings (``LLM_MAX_TOKENS``, ``LLM_TIMEOUT_S``,
    ``LLM_RETRIES``, ``LLM_FALLBACK_TEXT``).
    """

    provider_name = "llm"  # the vendor, as outage reports and metrics name it

    def __init__(
        self,
        *,
        model: str | None = None,
        max_tokens: int | None = None,
        first_token_timeout: float | None = None,
        retries: int | None = None,
        fallback_text: str | None = None,
        stall_timeout: float = 5.0,
        max_tool_rounds: int = 4,
        tool_timeout_s: float | None = 10.0,
        retry_backoff: Backoff | None = None,
        outage_grace_s: float = DEFAULT_OUTAGE_GRACE_S,
        name: str | None = None,
    ) -> None:
        super().__init__(name=name)
        if None in (max_tokens, first_token_timeout, retries, fallback_text):
            from voxpipe.config.settings import get_settings

            s = get_settings()
            max_tokens = s.llm_max_tokens if max_tokens is None else max_tokens
            if first_token_timeout is None:
                first_token_timeout = s.llm_timeout_s
            retries = s.llm_retries if retries is None else retries
            fallback_text = s.llm_fallback_text if fallback_text is None else fallback_text
        assert max_tokens is not None and first_token_timeout is not None
        assert retries is not None and fallback_text is not None
        self.model = model
        self.max_tokens = max_tokens
        self.first_token_timeout = first_token_timeout
        self.retries = retries
        self.fallback_text = fallback_text
        self.stall_timeout = stall_timeout
        self.max_tool_rounds = max_tool_rounds
        self.tool_timeout_s = tool_timeout_s
        # Short: the caller is waiting; the jitter is what spreads a worker's calls apart.
        self.retry_backoff = retry_backoff or Backoff(base_s=0.2, cap_s=1.0)
        self.outage = OutageTracker(
            self, service="llm", provider=self.provider_name, grace_s=outage_grace_s
        )
        self._retry_after: float | None = None  # from the last failed attempt
        self._functions: dict[str, FunctionSpec] = {}
        self._queue: asyncio.Queue[Frame] = asyncio.Queue()
        self._pending = 0  # frames queued or being handled by the worker
        self._worker: asyncio.Task[None] | None = None
        # Preemptive replies (PreemptiveLLMMessagesFrame): held until the turn is confirmed.
        self.holds = ReplyHolds()

    # ------------------------------------------------------------------ provider hook

    def stream_chat(
        self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None
    ) -> AsyncGenerator[ChatChunk, None]:
        """Stream one chat completion; raise ``LLMProviderError`` for provider failures.

        Implemented as an async generator; it must release its connection in ``finally`` (it
        is closed early on timeouts and interruptions).
        """
        raise NotImplementedError

    # ------------------------------------------------------------------ tools

    def register_function(
        self,
        name: str | FunctionHandler,
        handler: FunctionHandler | None = None,
        schema: dict[str, Any] | None = None,
        *,
        description: str | None = None,
        cancel_on_interruption: bool = True,
        timeout_s: float | None = None,
    ) -> None:
        """Let the model call ``handler(**arguments)`` (async or not) as tool ``name``.

        ``register_function(handler)`` names the tool after the function. Without ``schema``
        the JSON schema of the arguments is inferred from the handler's signature and
        docstring (``voxpipe.processors.llm.tool_schema``) and the model's arguments are
        converted to the parameter types; an explicit ``schema`` (an OpenAI tool, a function
        description or the JSON schema of the parameters) wins. ``description`` defaults to
        the docstring (without its ``Args:`` section). Arguments that do not fit the
        signature give the model a tool error naming the problem, not a crash. A handler
        that must finish even if the caller interrupts (a booking, a transfer) sets
        ``cancel_on_interruption=False``.
        """
        if not isinstance(name, str):
            if handler is not None:
                raise TypeError(
                    "register_function(handler) takes the handler alone; to name the tool use "
                    "register_function(name, handler)"
                )
            handler = name
            name = _tool_name(handler)
        if handler is None or not callable(handler):
            raise TypeError(f"tool {name!r}: the handler must be callable, got {handler!r}")
        explicit = tool_schema(name, schema) if schema is not None else None
        signature = tool_signature(
            handler,
            name,
            parameters=explicit["function"]["parameters"] if explicit is not None else None,
        )
        doc = description or signature.description
        full = tool_schema(name, explicit or {"type": "object", **signature.parameters}, doc)
        self._functions[name] = FunctionSpec(
            name=name,
            handler=handler,
            schema=full,
            cancel_on_interruption=cancel_on_interruption,
            timeout_s=timeout_s,
            signature=signature,
        )

    def function(
        self,
        schema: dict[str, Any] | Callable[..., Any] | None = None,
        *,
        name: str | None = None,
        description: str | None = None,
        cancel_on_interruption: bool = True,
        timeout_s: float | None = None,
    ) -> Any:
        """Decorator form of ``register_function``: ``@llm.function`` (schema from the
        signature), ``@llm.function(name=..., cancel_on_interruption=False)`` or
        ``@llm.function({...explicit schema...})``."""
        if callable(schema):  # used bare: @llm.function
            fn = schema
            self.register_function(fn)
            return fn

        def decorate(fn: F) -> F:
            self.register_function(
                name or _tool_name(fn),
                fn,
                schema,
                description=description,
                cancel_on_interruption=cancel_on_interruption,
                timeout_s=timeout_s,
            )
            return fn

        return decorate

    def function_named(self, tool: str | FunctionHandler) -> FunctionSpec | None:
        """The registered tool called ``tool``, or the one whose handler is ``tool``."""
        if isinstance(tool, str):
            return self._functions.get(tool)
        found = next((f for f in self._functions.values() if f.handler == tool), None)
        return found or self._functions.get(getattr(tool, "__name__", ""))

    def unregister_function(self, name: str) -> None:
        """Forget tool ``name``."""
        self._functions.pop(name, None)

    @property
    def tools(self) -> list[dict[str, Any]] | None:
        """The registered tools in OpenAI form, or None when there are none."""
        return [f.schema for f in self._functions.values()] or None

    # ------------------------------------------------------------------ frame flow

    async def on_start(self, frame: StartFrame) -> None:
        self._worker = self.create_task(self._work(self._queue), name="replies")

    async def on_interruption(self) -> None:
        # The worker (interruptible) was cancelled with whatever reply it was streaming;
        # queued requests are stale now. Only an EndFrame survives.
        if self.holds.current is not None:
            self.holds.current = None
            self.holds.discarded += 1
        old = self._queue
        self._queue = asyncio.Queue()
        self._pending = 0
        self._worker = self.create_task(self._work(self._queue), name="replies")
        while not old.empty():
            item = old.get_nowait()
            if isinstance(item, EndFrame):
                self._enqueue(item)

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        if isinstance(frame, PreemptiveReplyFrame):
            await self._decide_held(frame.reply_id, frame.release)
        elif direction is not DOWNSTREAM or isinstance(frame, SystemFrame):
            await self.push_frame(frame, direction)
        elif isinstance(frame, LLMMessagesFrame | EndFrame) or self._pending:
            # Ordered frames wait behind replies in progress so order is kept.
            self._enqueue(frame)
        else:
            await self.push_frame(frame, direction)

    def _enqueue(self, frame: Frame) -> None:
        if self._worker is None or self._worker.done():
            self._worker = self.create_task(self._work(self._queue), name="replies")
        self._pending += 1
        self._queue.put_nowait(frame)

    async def _work(self, queue: asyncio.Queue[Frame]) -> None:
        while True:
            frame = await queue.get()
            try:
                if isinstance(frame, PreemptiveLLMMessagesFrame):
                    await self._respond_preemptive(frame)
                elif isinstance(frame, LLMMessagesFrame):
                    await self._respond(frame)
                else:
                    await self._emit(frame)
            finally:
                if queue is self._queue:
                    self._pending -= 1

    async def _emit(self, frame: Frame) -> None:
        """Push from the reply worker, and stop it if an interruption swept by meanwhile."""
        held = self.holds.current
        if held is not None and not held.released:
            held.frames.append(frame)  # a preemptive reply: kept until the turn is confirmed
            return
        await self.push_frame(frame)
        if asyncio.current_task() is not self._worker:
            # The sweep ran inside this very push (a processor downstream asked for it), so
            # the engine could not cancel this task: it stops here as if cancelled, and its
            # stream is closed on the way out.
            raise asyncio.CancelledError

    # ------------------------------------------------------------------ preemptive replies

    async def _respond_preemptive(self, frame: PreemptiveLLMMessagesFrame) -> None:
        how = self.holds.begin(frame.reply_id)
        if how is False:
            return  # discarded before it was taken up
        held = self.holds.current
        try:
            await self._respond(frame)
            if held is not None and not held.released:
                # The whole reply is kept; what is queued behind it waits for the decision.
                await held.wait_released()
        finally:
            self.holds.end(frame.reply_id)

    async def _decide_held(self, reply_id: int, release: bool) -> None:
        """The turn a preemptive reply was prepared for is confirmed (release) or not."""
        holds = self.holds
        held = holds.current
        if held is None or held.reply_id != reply_id:
            holds.remember(reply_id, release)
            return
        if release:
            holds.released += 1
            while held.frames:  # the reply may add frames while these go out: in order
                await self.push_frame(held.frames.pop(0))
            held.mark_released()
            return
        holds.current = None
        holds.discarded += 1
        self.logger.debug("%s: preemptive reply %d discarded", self.name, reply_id)
        # Stop the reply where it is (its stream is closed on the way out); what is queued
        # behind it (the request that replaces it) is answered next.
        worker = self._worker
        self._worker = self.create_task(self._work(self._queue), name="replies")
        if worker is not None and not worker.done():
            worker.cancel()

    # ------------------------------------------------------------------ one reply

    async def _respond(self, frame: LLMMessagesFrame) -> None:
        if not frame.messages:
            return
        messages = list(frame.messages)
        tools = frame.tools if frame.tools is not None else self.tools
        await self._emit(LLMResponseStartFrame())
        self.start_processing_metrics()
        spoke = False
        try:
            for _round in range(self.max_tool_rounds + 1):
                result = await self._complete(messages, tools)
                if result is None:  # nothing came: say the fallback line instead
                    if not spoke and not self.outage.gave_up:  # (giving up says goodbye)
                        await self._emit(TTSSpeakFrame(self.fallback_text))
                    break
                spoke = spoke or bool(result.text.strip())
                if not result.calls:
                    break
                messages.append(
                    {
                        "role": "assistant",
                        "content": result.text or None,
                        "tool_calls": [
                            {
                                "id": c.id,
                                "type": "function",
                                "function": {"name": c.name, "arguments": c.arguments_json},
                            }
                            for c in result.calls
                        ],
                    }
                )
                for call, value in zip(
                    result.calls, await self._run_tools(result.calls), strict=True
                ):
                    messages.append(
                        {"role": "tool", "tool_call_id": call.id, "content": result_content(value)}
                    )
                if frame.max_messages is not None:  # the context window's cap holds here too
                    messages = cap_messages(messages, frame.max_messages)
            else:
                self.logger.warning(
                    "%s: the model kept calling tools after %d rounds; reply ended",
                    self.name,
                    self.max_tool_rounds,
                )
        except Exception as exc:
            # A bug or an unexpected client error: the call goes on with the fallback line.
            self.logger.exception("%s: reply failed", self.name)
            await self.push_error(f"{self.name}: reply failed: {exc}", exc=exc)
            if not spoke:
                await self._emit(TTSSpeakFrame(self.fallback_text))
        await self.stop_processing_metrics(self.model)
        await self._emit(LLMResponseEndFrame())

    async def _complete(
        self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None
    ) -> _Round | None:
        """One model request with timeout and retry; None when it produced nothing at all."""
        attempts = self.retries + 1
        failure = ""
        for attempt in range(1, attempts + 1):
            if attempt > 1:
                await self.clock.sleep(self._retry_delay(attempt - 2))
            self._retry_after = None
            outcome, result, failure = await self._attempt(messages, tools)
            if outcome == "ok":
                await self.outage.recovered()
                return result
            if outcome == "fail":
                return None
            self.outage.lost()
            self.logger.warning("%s: %s (attempt %d of %d)", self.name, failure, attempt, attempts)
        await self.push_error(
            f"{self.name}: the model failed {attempts} time(s) ({failure}); "
            "spoke the fallback line. Check the provider's status and LLM_TIMEOUT_S."
        )
        await self.outage.failed(failure)
        if self.outage.expired:
            await self.outage.give_up(
                f"the model has failed every request for {self.outage.elapsed:.0f} s ({failure})"
            )
        return None

    def _retry_delay(self, retry: int) -> float:
        """Seconds before retry number ``retry``: jittered backoff, or the provider's
        ``retry-after`` when it asked for longer (capped: the caller is waiting)."""
        delay = self.retry_backoff.delay(retry)
        if self._retry_after is not None:
            delay = max(delay, min(self._retry_after, self.retry_backoff.cap_s * 2))
        return delay

    async def _attempt(
        self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None
    ) -> tuple[str, _Round, str]:
        """One request: ("ok", reply, ""), ("retry", _, why) or ("fail", _, why) (reported)."""
        self.start_ttfb_metrics()
        stream = self.stream_chat(messages, tools)
        result = _Round()
        calls: dict[int, ToolCallDelta] = {}
        first = True
        try:
            while True:
                wait = self.first_token_timeout if first else self.stall_timeout
                try:
                    # The pipeline clock is the event loop's clock (real or virtual), so a
                    # deadline on it is a deadline on self.clock.
                    async with asyncio.timeout_at(self.clock.now() + wait):
                        chunk = await anext(stream, _END)
                except TimeoutError:
                    if first:
                        return "retry", result, f"no first token within {wait:g} s"
                    if not (result.text or calls):
                        return "retry", result, f"the stream stalled for {wait:g} s"
                    await self.push_error(f"{self.name}: reply cut off: stalled for {wait:g} s")
                    break
                if chunk is _END:
                    break
                ttfb = self.take_ttfb() if first else None
                first = False
                await self._take(chunk, result, calls)
                # The metric after the first text: the TTS gets it a few frames sooner.
                await self.push_ttfb_metrics(ttfb, self.model)
        except LLMProviderError as exc:
            if result.text or calls:
                # Part of the reply is out already: keep it, report the cut.
                await self.push_error(f"{self.name}: reply cut off: {exc}", exc=exc)
            elif exc.retryable:
                self._retry_after = exc.retry_after
                return "retry", result, str(exc)
            else:
                await self.push_error(f"{self.name}: {exc}", exc=exc)
                return "fail", result, str(exc)
        finally:
            await stream.aclose()
        result.calls = [
            ToolCall(id=d.id or f"call_{i}", name=d.name or "", arguments_json=d.arguments or "")
            for i, d in sorted(calls.items())
            if d.name
        ]
        return "ok", result, ""

    async def _take(
        self, chunk: ChatChunk, result: _Round, calls: dict[int, ToolCallDelta]
    ) -> None:
        if chunk.text:
            result.text += chunk.text
            await self._emit(LLMTextFrame(chunk.text))
        for delta in chunk.tool_calls:
            acc = calls.setdefault(delta.index, ToolCallDelta(index=delta.index, arguments=""))
            if delta.id:
                acc.id = delta.id
            if delta.name and not acc.name:
                acc.name = delta.name
            if delta.arguments:
                acc.arguments = (acc.arguments or "") + delta.arguments
        if chunk.finish_reason == "length":
            self.logger.debug("%s: reply cut at max_tokens=%d", self.name, self.max_tokens)
        if chunk.prompt_tokens is not None and self.metrics_enabled:
            await self.push_frame(
                MetricsFrame(self.name, "prompt_tokens", chunk.prompt_tokens, model=self.model)
            )
        if chunk.completion_tokens is not None and self.metrics_enabled:
            await self.push_frame(
                MetricsFrame(
                    self.name, "completion_tokens", chunk.completion_tokens, model=self.model
                )
            )

    # ------------------------------------------------------------------ running tools

    async def _run_tools(self, calls: Sequence[ToolCall]) -> list[Any]:
        held = self.holds.current
        if held is not None:
            await held.wait_released()  # no tool runs for a turn that may not be over
        tasks = []
        for call in calls:
            args, _ = call.arguments()
            await self._emit(FunctionCallInProgressFrame(call.id, call.name, args))
            spec = self._functions.get(call.name)
            interruptible = spec.cancel_on_interruption if spec is not None else True
            tasks.append(
                self.create_task(
                    self._call_tool(call, spec),
                    name=f"tool:{call.name}",
                    interruptible=interruptible,
                )
            )
        # asyncio.wait (unlike gather) leaves the tool tasks alone if this reply is cancelled:
        # a tool that must finish keeps running and still reports its result.
        await asyncio.wait(tasks)
        return [t.result() if not t.cancelled() else {"error": "cancelled"} for t in tasks]

    async def _call_tool(self, call: ToolCall, spec: FunctionSpec | None) -> Any:
        args, problem = call.arguments()
        if spec is None:
            known = ", ".join(sorted(self._functions)) or "none"
            result: Any = {"error": f"unknown function {call.name!r}; available: {known}"}
            self.logger.warning("%s: the model called unknown tool %r", self.name, call.name)
        elif problem is not None:
            result = {"error": problem}
        else:
            timeout = spec.timeout_s if spec.timeout_s is not None else self.tool_timeout_s
            try:
                kwargs = spec.signature.validate(args) if spec.signature is not None else args
                if timeout is None:
                    result = await _call(spec.handler, kwargs)
                else:
                    async with asyncio.timeout_at(self.clock.now() + timeout):
                        result = await _call(spec.handler, kwargs)
            except ToolArgumentsError as exc:
                # The model's mistake, told back to it so it can ask the caller and retry.
                self.logger.warning("%s: bad arguments for tool %s: %s", self.name, call.name, exc)
                result = {"error": f"invalid arguments: {exc}"}
            except TimeoutError:
                self.logger.warning(
                    "%s: tool %s timed out after %gs", self.name, call.name, timeout
                )
                result = {"error": f"{call.name} timed out after {timeout:g} s"}
            except Exception as exc:
                self.logger.exception("%s: tool %s failed", self.name, call.name)
                result = {"error": f"{call.name} failed: {exc}"}
        await self.push_frame(FunctionCallResultFrame(call.id, call.name, args, result))
        return result


def _tool_name(handler: FunctionHandler) -> str:
    name = getattr(handler, "__name__", "")
    if not name or not name.isidentifier():
        raise TypeError(
            f"cannot name a tool after {handler!r}: use register_function(name, handler)"
        )
    return str(name)


async def _call(handler: FunctionHandler, args: dict[str, Any]) -> Any:
    value = handler(**args)
    if inspect.isawaitable(value):
        value = await value
    return value


__all__ = [
    "ChatChunk",
    "FunctionSpec",
    "LLMProviderError",
    "LLMService",
    "ToolCall",
    "ToolCallDelta",
    "ToolSignature",
    "result_content",
    "tool_schema",
]
