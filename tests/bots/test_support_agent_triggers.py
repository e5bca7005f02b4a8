"""The support agent's escalation triggers, through its own wiring: the escalation record says
which trigger started it (loop, sentiment, confidence, request), and the false positives of
issue 11 do not escalate. (The detectors per language: tests/processors/policy/test_triggers.)"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from voxpipe.call import Call, build_task, load_bot
from voxpipe.config.locales import load_seed_rows
from voxpipe.config.settings import VoxpipeSettings
from voxpipe.frames import TranscriptionFrame
from voxpipe.pipelines import Pipeline
from voxpipe.processors.aggregators.assistant import AssistantContextAggregator
from voxpipe.processors.aggregators.transcript import TranscriptRecorder
from voxpipe.processors.policy.escalation import EscalationPolicy
from voxpipe.state.shared import close_shared_stores
from voxpipe.state.sqlite_store import SqliteTranscriptStore
from voxpipe.testing import caller_wav, run_frames
from voxpipe.testing.bot_runs import run_wav_call
from voxpipe.testing.fakes import FakeDeepgram, FakeElevenLabs, FakeOpenAI, FakeReply
from voxpipe.testing.helpers import wait_until
from voxpipe.transports.memory import MemoryTransport
from voxpipe.transports.params import TransportParams
from voxpipe.transports.wire import AudioFormat

BOT_PATH = Path(__file__).resolve().parents[2] / "bots" / "support_agent.py"
BOT = load_bot(BOT_PATH)


def _settings(tmp_path: Path, **extra: Any) -> VoxpipeSettings:
    return VoxpipeSettings(  # type: ignore[call-arg]
        _env_file=None,
        sqlite_path=str(tmp_path / "db.sqlite3"),
        spool_dir=str(tmp_path / "spool"),
        **extra,
    )


async def _agent(tmp_path: Path, locale: str, **extra: Any) -> Pipeline:
    row = next(r for r in load_seed_rows() if r.locale == locale)
    call = Call(
        transport=MemoryTransport(),
        call_id=f"CA{locale}",
        settings=_settings(tmp_path, **extra),
        carrier="twilio",
        caller="+15550009999",
        locale=locale,
        locale_row=row,
        consent_policy="notice",
    )
    try:
        return await BOT(call)
    finally:
        await close_shared_stores()


def _parts(pipeline: Pipeline) -> tuple[EscalationPolicy, TranscriptRecorder, Any]:
    by_type = {type(p).__name__: p for p in pipeline._processors}
    policy, recorder = by_type["EscalationPolicy"], by_type["TranscriptRecorder"]
    assert isinstance(policy, EscalationPolicy) and isinstance(recorder, TranscriptRecorder)
    llm = next(p for p in pipeline._processors if hasattr(p, "fallback_text"))
    return policy, recorder, llm


async def test_two_cannot_help_calls_escalate_with_the_confidence_trigger(tmp_path: Path) -> None:
    pipeline = await _agent(tmp_path, "en-US")
    policy, recorder, llm = _parts(pipeline)
    cannot_help = llm._functions["cannot_help"]
    assert cannot_help.schema["function"]["name"] == "cannot_help"  # offered to the model
    first = await cannot_help.handler(reason="no tariff data for Mars")
    assert first["status"] == "noted" and "say" not in first  # nothing canned said yet
    assert "escalation" not in recorder.meta and not policy.escalation.escalated
    second = await cannot_help.handler(reason="cannot change the contract owner")
    # No transfer path on this call: the model is told so, and what to say instead.
    assert second["status"] == "unavailable" and second["say"].startswith("I'm sorry")
    record = recorder.meta["escalation"]
    assert record["trigger"] == "confidence"
    assert "cannot change the contract owner" in record["reason"]


async def test_sentiment_escalates_a_french_caller_but_not_a_negated_complaint(
    tmp_path: Path,
) -> None:
    pipeline = await _agent(tmp_path, "fr-FR", escalation_sentiment_threshold=-0.5)
    policy, recorder, _ = _parts(pipeline)
    assert policy.params.sentiment_threshold == -0.5 and policy.params.locale == "fr-FR"
    calm = [
        "Ce n'est pas terrible, ce n'est pas le pire.",
        "Est-ce que je parle à un humain ?",  # a question about the bot, not a request
        "La facture est pour quelqu'un d'autre.",
        "Ce n'est pas horrible, ce n'est pas le pire.",
    ]
    await run_frames([policy], [TranscriptionFrame(t) for t in calm])
    assert "escalation" not in recorder.meta and not policy.escalation.escalated
    upset = ["Je suis vraiment furieux", "C'est absolument scandaleux, vous êtes nuls !"]
    await run_frames([policy], [TranscriptionFrame(t) for t in upset])
    record = recorder.meta["escalation"]
    assert record["trigger"] == "sentiment" and record["reason"] == "caller is upset"


async def test_false_positives_do_not_escalate_and_the_threshold_setting_applies(
    tmp_path: Path,
) -> None:
    pipeline = await _agent(tmp_path, "en-US", escalation_sentiment_threshold=-0.95)
    policy, recorder, _ = _parts(pipeline)
    said = [
        "Am I talking to a human?",
        "The bill is for someone else.",
        "I don't want to talk to a human, just tell me why it is so high.",
        "Not terrible, not the worst.",
        "I am so angry",
        "This is absolutely ridiculous, you are useless!",  # strong, but not below -0.95
    ]
    await run_frames([policy], [TranscriptionFrame(t) for t in said])
    assert "escalation" not in recorder.meta and not policy.escalation.escalated
    await run_frames([policy], [TranscriptionFrame("Can I speak to someone, please?")])
    assert recorder.meta["escalation"]["trigger"] == "request"


def test_offline_call_asking_the_same_question_three_times_escalates_as_a_loop(
    tmp_path: Path,
) -> None:
    wav = caller_wav(["where is my order"] * 3, tmp_path / "caller.wav")
    db = tmp_path / "calls.sqlite3"
    settings = VoxpipeSettings(  # type: ignore[call-arg]
        _env_file=None, sqlite_path=str(db), spool_dir=str(tmp_path / "spool")
    )
    out = run_wav_call(load_bot(BOT_PATH), wav, settings=settings, metadata={"call_id": "CAloop"})
    assert out.transcript["end_reason"]

    async def read() -> Any:
        store = SqliteTranscriptStore(db)
        await store.start()
        try:
            return await store.read("CAloop", reader="test")
        finally:
            await store.close()

    row = asyncio.run(read())
    assert row is not None
    heard = [t.text.lower() for t in row.turns if t.role == "user"]
    assert heard.count("where is my order") == 3, heard
    record = row.metadata["escalation"]
    assert record["trigger"] == "loop" and record["reason"] == "same question asked 3 times"
    said = [t.text for t in row.turns if t.role == "assistant"]
    assert any(s.startswith("I'm sorry, I can't put you through to a colleague") for s in said)


async def test_after_an_untransferable_escalation_calm_words_do_not_escalate_again(
    tmp_path: Path,
) -> None:
    pipeline = await _agent(tmp_path, "en-US")
    policy, recorder, _ = _parts(pipeline)
    escalated: list[str] = []

    async def seen(state: Any, detail: str) -> None:
        if state.value == "transferring":
            escalated.append(policy.escalation.trigger)

    policy.escalation.add_listener(seen)
    said = [
        "I am so angry",
        "This is absolutely ridiculous, you are useless!",  # second strong one: sentiment
        "ok, where is my order",  # calm: no second escalation
        "What's my balance?",
        "what is my balance please",
        "so what is my balance then",  # third time: loop
        "what is my balance",  # a fourth time right after: not again
    ]
    await run_frames([policy], [TranscriptionFrame(t) for t in said])
    assert escalated == ["sentiment", "loop"]
    assert recorder.meta["escalation"]["trigger"] == "loop"  # the record is the latest one


# ------------------------------------------------- the model's cannot_help, over a real socket


def _model(body: dict[str, Any]) -> FakeReply | str:
    """The fake model: cannot answer tariff questions (says so through cannot_help, never in
    words), answers the rest; after a tool, says what the result tells it to."""
    if not body.get("stream"):
        return "The caller asks about tariffs we have no data on."  # a summary request
    last = body["messages"][-1]
    if last["role"] == "tool":
        result = json.loads(last["content"])
        if result.get("status") == "noted":
            return "I'm sorry, I can't answer that. Can I help with something else?"
        return str(result.get("say", ""))
    said = str(last.get("content") or "").lower()
    if "tariff" in said or "roaming" in said:
        return FakeReply.call("cannot_help", {"reason": f"no data: {said}"})
    return "How can I help?"


@pytest.mark.slow
async def test_the_model_failing_twice_escalates_with_the_confidence_trigger(
    tmp_path: Path,
) -> None:
    async with (
        FakeDeepgram(utterances=[], latency=0.05) as dg,
        FakeOpenAI(replies=_model, first_token_delay=0.02) as oa,
        FakeElevenLabs(ms_per_char=2.0, first_audio_latency=0.02) as el,
    ):
        wire = AudioFormat("mulaw", 8000)
        call = Call(
            transport=MemoryTransport(TransportParams(audio_in=wire, audio_out=wire)),
            call_id="CAconfidence",
            settings=_settings(
                tmp_path,
                deepgram_api_key="test-key",
                deepgram_base_url=dg.url,
                openai_api_key="test-key",
                openai_base_url=oa.base_url,
                elevenlabs_api_key="test-key",
                elevenlabs_base_url=el.url,
                consent_mode="off",
            ),
            carrier="twilio",
            caller="+15550008888",
            audio_in=wire,
            audio_out=wire,
        )
        task = build_task(call, await BOT(call))
        runner = asyncio.get_running_loop().create_task(task.run())
        try:
            await task.wait_started()
            assistant = next(
                p for p in task.pipeline.processors() if isinstance(p, AssistantContextAggregator)
            )
            policy, recorder, _ = _parts(task.pipeline)

            def heard() -> list[str]:
                entries = policy.context.entries
                return [str(e.message.get("content")) for e in entries if e.role == "assistant"]

            async def say(text: str, reply: str) -> None:
                before = len(heard())
                await task.queue_frame(TranscriptionFrame(text))
                await wait_until(
                    lambda: (
                        any(reply in h for h in heard()[before:]) and assistant.open_entry is None
                    ),
                    20,
                )

            await wait_until(lambda: len(heard()) >= 1 and assistant.open_entry is None, 20)
            await say("What is the tariff for calls to Mars?", "I can't answer that")
            assert "escalation" not in recorder.meta  # one failure: no escalation yet
            await say("And the roaming charges on the Moon?", "I can't put you through")
        finally:
            await task.cancel("caller hung up")
            await runner
            await close_shared_stores()
    streamed = [r.json for r in oa.requests if r.json.get("stream")]
    tools = {t["function"]["name"] for t in streamed[0]["tools"]}
    assert {"cannot_help", "escalate_to_human"} <= tools
    record = recorder.meta["escalation"]
    assert record["trigger"] == "confidence" and "roaming" in record["reason"]
