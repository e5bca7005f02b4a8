"""LLM retries wait a jittered backoff on the call's clock; replies that fail every attempt are
a provider outage (reported; past the grace the call ends gracefully)."""

from __future__ import annotations

import random
from collections.abc import AsyncGenerator
from typing import Any

import pytest

from voxpipe.frames import (
    EndTaskFrame,
    FrameDirection,
    LLMMessagesFrame,
    LLMTextFrame,
    ProviderOutageFrame,
    TTSSpeakFrame,
)
from voxpipe.pipelines.clock import Clock
from voxpipe.processors.llm.base import ChatChunk, LLMProviderError, LLMService
from voxpipe.processors.llm.openai import OpenAILLMService
from voxpipe.processors.outage import Backoff
from voxpipe.testing import Sleep, run_frames
from voxpipe.testing.fakes import FakeOpenAI, FakeReply

UP = FrameDirection.UPSTREAM
FALLBACK = "Sorry, say that again?"


def ask(text: str = "Hi") -> LLMMessagesFrame:
    return LLMMessagesFrame([{"role": "user", "content": text}])


class Failing(LLMService):
    """Fails while ``failing`` is true (a retryable provider error), else answers."""

    provider_name = "acme"

    def __init__(self, *, retry_after: float | None = None, **kwargs: Any) -> None:
        kwargs.setdefault("max_tokens", 50)
        kwargs.setdefault("first_token_timeout", 0.8)
        kwargs.setdefault("retries", 1)
        kwargs.setdefault("fallback_text", FALLBACK)
        super().__init__(**kwargs)
        self.failing = True
        self.retry_after = retry_after
        self.attempts: list[float] = []

    async def stream_chat(
        self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None
    ) -> AsyncGenerator[ChatChunk, None]:
        self.attempts.append(self.clock.now())
        if self.failing:
            raise LLMProviderError(
                "HTTP 503", status=503, retryable=True, retry_after=self.retry_after
            )
        yield ChatChunk(text="Hello.")


async def test_the_retry_waits_a_jittered_backoff_on_the_call_clock() -> None:
    gaps = []
    for seed in (1, 2):
        expected = Backoff(base_s=0.2, cap_s=1.0, rng=random.Random(seed)).delay(0)
        llm = Failing(retry_backoff=Backoff(base_s=0.2, cap_s=1.0, rng=random.Random(seed)))
        r = await run_frames([llm], [ask()])
        assert len(llm.attempts) == 2
        gap = llm.attempts[1] - llm.attempts[0]
        assert gap == pytest.approx(expected) and 0.1 <= gap <= 0.2
        gaps.append(gap)
        assert [f.text for f in r.of_type(TTSSpeakFrame)] == [FALLBACK]  # still spoken
    assert gaps[0] != gaps[1]  # jittered: two calls do not retry in step


async def test_a_retry_after_from_the_provider_is_honoured_up_to_a_bound() -> None:
    llm = Failing(retry_after=0.7, retry_backoff=Backoff(base_s=0.2, cap_s=1.0))
    await run_frames([llm], [ask()])
    assert llm.attempts[1] - llm.attempts[0] == pytest.approx(0.7)
    llm = Failing(retry_after=3600.0, retry_backoff=Backoff(base_s=0.2, cap_s=1.0))
    await run_frames([llm], [ask()])
    assert llm.attempts[1] - llm.attempts[0] == pytest.approx(2.0)  # twice the cap at most


async def test_failing_replies_report_an_outage_and_the_next_good_one_ends_it() -> None:
    llm = Failing(outage_grace_s=30.0)
    r = await run_frames([llm, _Heal(llm)], [ask(), Sleep(5.0), ask()])
    reports = r.of_type(ProviderOutageFrame, UP)
    assert [(f.state, f.provider, f.service) for f in reports] == [
        ("down", "acme", "llm"),
        ("up", "acme", "llm"),
    ]
    assert reports[1].duration_s >= 5.0
    assert [f.text for f in r.of_type(TTSSpeakFrame)] == [FALLBACK]
    assert [f.text for f in r.of_type(LLMTextFrame)] == ["Hello."]


class _Heal(LLMService):
    """After the first fallback line passes, the provider works again."""

    def __init__(self, llm: Failing) -> None:
        super().__init__(max_tokens=1, first_token_timeout=1, retries=0, fallback_text="")
        self.llm = llm

    async def process_frame(self, frame: Any, direction: FrameDirection) -> None:
        if isinstance(frame, TTSSpeakFrame):
            self.llm.failing = False
        await self.push_frame(frame, direction)


async def test_past_the_grace_the_call_ends_without_another_fallback() -> None:
    llm = Failing(outage_grace_s=10.0)
    r = await run_frames([llm], [ask(), Sleep(12.0), ask()], send_end=False)
    assert [f.state for f in r.of_type(ProviderOutageFrame, UP)] == ["down", "gave_up"]
    assert r.of_type(EndTaskFrame, UP)
    # The first failure spoke the fallback; the one that gave up leaves the word to the
    # goodbye (the outage policy's).
    assert [f.text for f in r.of_type(TTSSpeakFrame)] == [FALLBACK]


async def test_openai_retry_over_a_real_socket_is_not_in_the_same_millisecond() -> None:
    async with FakeOpenAI(
        replies=[FakeReply.server_error(503), FakeReply.server_error(503)], first_token_delay=0.0
    ) as fake:
        llm = OpenAILLMService(
            api_key="test-key",
            base_url=fake.base_url,
            model="gpt-4o-mini",
            fallback_text=FALLBACK,
            retries=1,
            first_token_timeout=2.0,
            retry_backoff=Backoff(base_s=0.2, cap_s=1.0, rng=random.Random(3)),
        )
        r = await run_frames([llm], [ask()], clock=Clock())
    expected = Backoff(base_s=0.2, cap_s=1.0, rng=random.Random(3)).delay(0)
    first, second = fake.requests
    assert second.received_at - first.received_at >= expected - 0.005
    assert [f.text for f in r.of_type(TTSSpeakFrame)] == [FALLBACK]
    assert [f.state for f in r.of_type(ProviderOutageFrame, UP)] == ["down"]
