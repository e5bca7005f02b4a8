"""The support agent's callback continuity, end to end: the real bot (its pipeline, its
verification hook), OpenAI played by FakeOpenAI over a real socket (Deepgram and ElevenLabs by
theirs), state in the real Redis under a key prefix of this test's own, and each call on its
own "worker" (its own settings, hence its own stores and connection pools).

A caller's turn is injected as the STT's final transcript; the bot's replies are heard on a
simulated phone line (``MemoryTransport``) in real time, so what reaches the context is what
the caller heard."""

from __future__ import annotations

import asyncio
import base64
import importlib.util
import json
import re
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from voxpipe.call import Call, build_task, load_bot
from voxpipe.config.settings import VoxpipeSettings
from voxpipe.frames import TranscriptionFrame
from voxpipe.pipelines.task import PipelineTask
from voxpipe.processors.aggregators.assistant import AssistantContextAggregator
from voxpipe.processors.aggregators.continuity import ContinuityKeeper
from voxpipe.processors.aggregators.resume import WITHHELD_TEXT
from voxpipe.state.shared import close_shared_stores
from voxpipe.testing.fakes import FakeDeepgram, FakeElevenLabs, FakeOpenAI, FakeReply
from voxpipe.testing.helpers import wait_until
from voxpipe.transports.memory import MemoryTransport
from voxpipe.transports.params import TransportParams
from voxpipe.transports.wire import AudioFormat

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
BOT = load_bot(ROOT / "bots" / "support_agent.py")
NUMBER = "+447700900123"  # in the bot's demo lookup: PIN 4321
KEY_B64 = base64.b64encode(bytes(range(32))).decode()


def _servers() -> Any:
    name = "voxpipe_tests_vp_servers"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, ROOT / "tests/state/vp_servers.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


redis_client = _servers().redis_client
redis_prefix = _servers().redis_prefix


def replies(body: dict[str, Any]) -> FakeReply | str:
    """The fake model: asks for the order, looks it up, verifies the caller on a PIN."""
    if not body.get("stream"):
        return "The caller asked about an order."  # a summary request
    last = body["messages"][-1]
    if last["role"] == "tool":
        if '"verified": true' in last["content"]:
            return "Thank you, you are verified."
        if '"verified": false' in last["content"]:
            return "Sorry, that PIN does not match."
        return "Your order A123 is out for delivery and arrives tomorrow."
    said = str(last.get("content") or "").lower()
    if "help with my order" in said:
        return "Sure, what is the order number?"
    if "a123" in said:
        return FakeReply.call("order_status", {"order": "A123"})
    if "pin" in said:
        return FakeReply.call("verify_caller", {"pin": re.sub(r"\D", "", said)})
    return "How can I help?"


class Worker:
    """One voxpipe worker: its settings (hence its own shared stores) and the fakes' URLs."""

    def __init__(self, tmp: Path, prefix: str, dg: Any, oa: Any, el: Any, **kw: Any) -> None:
        self.settings = VoxpipeSettings(  # type: ignore[call-arg]
            _env_file=None,
            deepgram_api_key="test-key",
            deepgram_base_url=dg.url,
            openai_api_key="test-key",
            openai_base_url=oa.base_url,
            elevenlabs_api_key="test-key",
            elevenlabs_base_url=el.url,
            redis_url="redis://127.0.0.1:6379/0",
            redis_key_prefix=prefix,
            sqlite_path=str(tmp / f"{id(self)}.sqlite3"),
            spool_dir=str(tmp / "spool"),
            transcript_key=KEY_B64,
            consent_mode="off",
            **kw,
        )


class PhoneCall:
    """One call into the support agent, driven turn by turn."""

    def __init__(self, worker: Worker, oa: FakeOpenAI, call_id: str, caller: str) -> None:
        self.oa = oa
        wire = AudioFormat("mulaw", 8000)
        self.transport = MemoryTransport(TransportParams(audio_in=wire, audio_out=wire))
        self.call = Call(
            transport=self.transport,
            call_id=call_id,
            settings=worker.settings,
            carrier="twilio",
            caller=caller,
            country="GB",
            audio_in=wire,
            audio_out=wire,
        )
        self.task: PipelineTask | None = None
        self.runner: asyncio.Task[None] | None = None
        self.first_request = 0

    @property
    def keeper(self) -> ContinuityKeeper:
        assert self.task is not None
        return next(p for p in self.task.pipeline.processors() if isinstance(p, ContinuityKeeper))

    def settled(self) -> bool:
        """No assistant message is still being heard."""
        assert self.task is not None
        assistant = next(
            p for p in self.task.pipeline.processors() if isinstance(p, AssistantContextAggregator)
        )
        return assistant.open_entry is None

    def heard(self) -> list[str]:
        entries = self.keeper.context.entries
        return [str(e.message.get("content")) for e in entries if e.role == "assistant"]

    async def start(self) -> None:
        self.first_request = len(self.oa.requests)
        self.task = build_task(self.call, await BOT(self.call))
        self.runner = asyncio.get_running_loop().create_task(self.task.run())
        await self.task.wait_started()
        # The greeting is heard before the caller speaks.
        await wait_until(lambda: len(self.heard()) >= 1 and self.settled(), 20)

    def requests(self) -> list[dict[str, Any]]:
        """This call's streamed chat requests (summaries left out)."""
        return [r.json for r in self.oa.requests[self.first_request :] if r.json.get("stream")]

    async def say(self, text: str, reply: str) -> dict[str, Any]:
        """The caller says ``text``; returns the request it caused once ``reply`` was heard."""
        before = len(self.requests())
        heard = len(self.heard())
        assert self.task is not None
        await self.task.queue_frame(TranscriptionFrame(text))
        await wait_until(
            lambda: any(reply in h for h in self.heard()[heard:]) and self.settled(), 20
        )
        return self.requests()[before]

    async def hang_up(self) -> None:
        """The line drops (a cancel, as when the socket closes)."""
        assert self.task is not None and self.runner is not None
        await self.task.cancel("caller hung up")
        await self.runner


@pytest.fixture
async def fakes() -> AsyncIterator[tuple[Any, FakeOpenAI, Any]]:
    async with (
        FakeDeepgram(utterances=[], latency=0.05) as dg,
        FakeOpenAI(replies=replies, first_token_delay=0.02) as oa,
        FakeElevenLabs(ms_per_char=2.0, first_audio_latency=0.02) as el,
    ):
        yield dg, oa, el
    await close_shared_stores()


def sent(request: dict[str, Any]) -> str:
    return json.dumps(request["messages"], ensure_ascii=False)


async def first_call(worker: Worker, oa: FakeOpenAI, call_id: str = "CA1") -> PhoneCall:
    """The earlier call: asks about an order, gives its number, hears its status, drops."""
    call = PhoneCall(worker, oa, call_id, NUMBER)
    await call.start()
    assert call.heard()[0].startswith("Hello")  # a new caller: the locale's greeting
    await call.say("I need help with my order.", "what is the order number")
    await call.say("It is A123.", "out for delivery")
    return call


async def test_a_callback_on_another_worker_continues_and_withholds_details_until_verified(
    tmp_path: Path, redis_prefix: str, fakes: Any
) -> None:
    dg, oa, el = fakes
    call1 = await first_call(Worker(tmp_path, redis_prefix, dg, oa, el), oa)
    await call1.hang_up()

    call2 = PhoneCall(Worker(tmp_path, redis_prefix, dg, oa, el), oa, "CA2", NUMBER)
    await call2.start()
    assert call2.heard()[0] == "Welcome back — we were talking about your order. Shall we continue?"
    first = await call2.say("Yes, let's continue.", "How can I help?")
    assert first is call2.requests()[0]  # the first LLM request of the callback...
    text = sent(first)
    # ...carries the earlier turns...
    assert "I need help with my order." in text
    assert "Sure, what is the order number?" in text
    assert "unverified" in first["messages"][0]["content"]
    # ...but not what the tool returned, the order number, nor its read-back.
    assert "out for delivery" not in text
    assert "A123" not in text
    assert WITHHELD_TEXT in text

    # The bot's verification hook (verify_caller, PIN checked bot-side) passes...
    verified = await call2.say("My PIN is 4321.", "you are verified")
    assert verified["messages"][-1]["content"] == "My PIN is 4321."
    assert "out for delivery" not in sent(verified)  # the request that asked for verification
    result = call2.requests()[-1]  # the tool round continues the request that asked
    assert json.loads(result["messages"][-1]["content"]) == {"verified": True}
    # ...and from the next request on, the earlier details are there.
    after = await call2.say("So where is it now?", "How can I help?")
    assert "out for delivery" in sent(after) and "A123" in sent(after)
    assert WITHHELD_TEXT not in sent(after)
    await call2.hang_up()


async def test_a_wrong_pin_keeps_the_details_withheld(
    tmp_path: Path, redis_prefix: str, fakes: Any
) -> None:
    dg, oa, el = fakes
    worker = Worker(tmp_path, redis_prefix, dg, oa, el)
    await (await first_call(worker, oa)).hang_up()

    call2 = PhoneCall(worker, oa, "CA2", NUMBER)
    await call2.start()
    await call2.say("My PIN is 9999.", "does not match")
    after = call2.requests()[-1]
    assert json.loads(after["messages"][-1]["content"]) == {"verified": False}
    assert "out for delivery" not in sent(after) and "A123" not in sent(after)
    await call2.hang_up()


async def test_a_withheld_number_never_continues(
    tmp_path: Path, redis_prefix: str, fakes: Any, redis_client: Any
) -> None:
    dg, oa, el = fakes
    worker = Worker(tmp_path, redis_prefix, dg, oa, el)
    call1 = PhoneCall(worker, oa, "CA1", "anonymous")
    await call1.start()
    await call1.say("I need help with my order.", "what is the order number")
    await call1.hang_up()
    assert [k async for k in redis_client.scan_iter(match=f"{redis_prefix}continuity:*")] == []

    call2 = PhoneCall(worker, oa, "CA2", "anonymous")
    await call2.start()
    assert call2.heard()[0].startswith("Hello")
    first = await call2.say("Hello, is anyone there?", "How can I help?")
    assert "I need help with my order." not in sent(first)
    assert "unverified" not in first["messages"][0]["content"]
    await call2.hang_up()


async def test_two_simultaneous_calls_from_one_number_stay_separate(
    tmp_path: Path, redis_prefix: str, fakes: Any
) -> None:
    dg, oa, el = fakes
    worker_a = Worker(tmp_path, redis_prefix, dg, oa, el)
    worker_b = Worker(tmp_path, redis_prefix, dg, oa, el)
    await (await first_call(worker_a, oa, "CA0")).hang_up()

    live = PhoneCall(worker_a, oa, "CA1", NUMBER)  # continues CA0
    await live.start()
    assert live.heard()[0].startswith("Welcome back")
    second = PhoneCall(worker_b, oa, "CA2", NUMBER)  # same number, while CA1 is live
    await second.start()
    assert second.heard()[0].startswith("Hello")  # starts fresh
    fresh = await second.say("Something else entirely.", "How can I help?")
    assert "I need help with my order." not in sent(fresh)
    await second.hang_up()  # saves nothing: it does not own the caller's conversation

    cont = await live.say("Yes, let's continue.", "How can I help?")
    assert "I need help with my order." in sent(cont)
    assert "Something else entirely." not in sent(cont)
    await live.hang_up()

    call3 = PhoneCall(worker_b, oa, "CA3", NUMBER)
    await call3.start()
    third = await call3.say("Hi again.", "How can I help?")
    assert "Yes, let's continue." in sent(third)  # CA1's conversation, not CA2's
    assert "Something else entirely." not in sent(third)
    await call3.hang_up()
