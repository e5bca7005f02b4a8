"""LLM token counts go to their own counter, not the latency histogram."""

from __future__ import annotations

from voxpipe.frames import MetricsFrame
from voxpipe.server.metrics import ServerMetrics


def test_token_counts_are_counted_not_timed() -> None:
    m = ServerMetrics(active_calls=lambda: 0)
    m.observe(MetricsFrame("OpenAILLMService#3", "ttfb", 0.21))
    m.observe(MetricsFrame("OpenAILLMService#3", "prompt_tokens", 120))
    m.observe(MetricsFrame("OpenAILLMService#3", "completion_tokens", 30))
    text = m.render().decode()
    assert 'voxpipe_llm_tokens_total{kind="prompt",stage="OpenAILLMService"} 120.0' in text
    assert 'voxpipe_llm_tokens_total{kind="completion",stage="OpenAILLMService"} 30.0' in text
    latency = [line for line in text.splitlines() if line.startswith("voxpipe_stage_latency")]
    assert latency and not any("tokens" in line for line in latency)


def test_preemptive_replies_are_counted_by_outcome() -> None:
    m = ServerMetrics(active_calls=lambda: 0)
    for outcome in ("started", "started", "discarded", "used"):
        m.observe(MetricsFrame("UserContextAggregator#1", f"preemptive_{outcome}", 1.0))
    text = m.render().decode()
    assert 'voxpipe_preemptive_replies_total{outcome="started"} 2.0' in text
    assert 'voxpipe_preemptive_replies_total{outcome="discarded"} 1.0' in text
    assert 'voxpipe_preemptive_replies_total{outcome="used"} 1.0' in text
    latency = [line for line in text.splitlines() if line.startswith("voxpipe_stage_latency")]
    assert not any("preemptive" in line for line in latency)
