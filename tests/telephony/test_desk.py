"""The agent desk: a live escalation shows up in headless Chromium with its brief (masked
caller, locale, reason, summary, the conversation so far, time waiting) and leaves when the
caller hangs up; the API refuses requests without the desk token."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest
import websockets

from voxpipe.call import Call
from voxpipe.config.settings import VoxpipeSettings
from voxpipe.processors.aggregators import LLMContext
from voxpipe.processors.aggregators.assistant import AssistantContextAggregator
from voxpipe.processors.aggregators.transcript import TranscriptRecorder
from voxpipe.processors.base import FrameProcessor
from voxpipe.server.app import create_app
from voxpipe.server.desk import mask_number
from voxpipe.server.run import running_server
from voxpipe.state.memory import MemorySessionStore
from voxpipe.state.sqlite_store import SqliteTranscriptStore
from voxpipe.telephony.handoff import TwilioHandoff
from voxpipe.telephony.transfers import TransferConfig
from voxpipe.telephony.twilio_transfer import TransferWording
from voxpipe.testing.fakes import FakeTwilioREST
from voxpipe.testing.fakes.twilio_flow import FakeAgent

pytestmark = pytest.mark.slow

ACCOUNT = "AC" + "3" * 32
TOKEN = "desk-test-twilio-token"
DESK = "desk-secret-token"
AGENT = "+15550003001"
CALLER = "+447700900789"


def _driver() -> ModuleType:
    # The WebRTC browser test's Chrome DevTools Protocol client, loaded by path.
    name = "voxpipe_tests_webrtc_browser_driver"
    if name not in sys.modules:
        here = Path(__file__).resolve().parents[1] / "server"
        sys.path.insert(0, str(here))
        spec = importlib.util.spec_from_file_location(name, here / "webrtc_browser_driver.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


async def _no_bot(call: Call) -> FrameProcessor:
    return FrameProcessor()


@contextlib.asynccontextmanager
async def desk_server(tmp_path: Path) -> AsyncIterator[tuple[str, FakeTwilioREST, Any]]:
    agents = {AGENT: FakeAgent("no-answer", ring_s=600)}  # rings while the desk looks
    async with FakeTwilioREST(account_sid=ACCOUNT, auth_token=TOKEN, agents=agents) as fake:
        settings = VoxpipeSettings(
            _env_file=None,  # type: ignore[call-arg]
            twilio_account_sid=ACCOUNT,
            twilio_auth_token=TOKEN,
            twilio_api_base_url=fake.url,
            transfer_to=AGENT,
            desk_token=DESK,
            spool_dir=str(tmp_path / "spool"),
        )
        app = create_app(_no_bot, settings, batched_vad=None)
        async with running_server(app, settings) as srv:
            settings.public_url = srv.url
            yield srv.url, fake, settings


async def _escalate(
    settings: VoxpipeSettings, fake: FakeTwilioREST, tmp: Path
) -> tuple[str, TwilioHandoff]:
    """A call escalated and ringing the agent: its id and its handoff."""
    sid = "CA" + uuid.uuid4().hex
    fake.add_call(sid)
    sessions = MemorySessionStore()
    transcripts = SqliteTranscriptStore(tmp / f"{sid}.sqlite3")
    context = LLMContext("test")
    context.add_user_message("My router keeps dropping the connection.")
    context.add_assistant_message("Have you tried restarting it?")
    context.add_user_message("Yes, three times. Get me a person.")
    recorder = TranscriptRecorder(
        AssistantContextAggregator(context),
        sessions=sessions,
        transcripts=transcripts,
        call_id=sid,
        meta={"caller": CALLER},
    )
    config = TransferConfig.from_settings(settings)
    assert config is not None
    handoff = TwilioHandoff(
        config,
        call_sid=sid,
        called="+15550009999",
        recorder=recorder,
        sessions=sessions,
        transcripts=transcripts,
        wording=lambda r, s: TransferWording(brief=f"{r}. {s}", language="en-GB"),
    )
    await handoff("caller asked for a person", "Router drops the connection; restarted thrice.")
    await fake.wait_for(lambda: fake.dialled and fake.dialled[-1].status == "ringing")
    return sid, handoff


async def _records_written(handoff: TwilioHandoff) -> None:
    """After the caller hung up: the transcript row is written, then its store closed."""
    async with asyncio.timeout(10):
        await handoff.records_done.wait()
    await handoff.transcripts.close()


def test_mask_number_keeps_the_last_four_digits() -> None:
    assert mask_number("+447700900789") == "•••0789"
    assert mask_number("") == ""


async def test_the_api_needs_the_desk_token_and_lists_the_brief(tmp_path: Path) -> None:
    async with desk_server(tmp_path) as (url, fake, settings):
        sid, handoff = await _escalate(settings, fake, tmp_path)
        async with httpx.AsyncClient(base_url=url) as client:
            assert (await client.get("/api/escalations")).status_code == 401
            wrong = {"Authorization": "Bearer nope"}
            assert (await client.get("/api/escalations", headers=wrong)).status_code == 401
            ok = await client.get("/api/escalations", headers={"Authorization": f"Bearer {DESK}"})
        assert ok.status_code == 200
        (item,) = [e for e in ok.json()["escalations"] if e["call_id"] == sid]
        assert item["caller"] == "•••0789" and CALLER not in json.dumps(item)
        assert item["locale"] == "en-GB"
        assert item["reason"] == "caller asked for a person"
        assert item["conversation"][0] == {
            "role": "user",
            "text": "My router keeps dropping the connection.",
        }
        assert item["state"] == "ringing" and item["ringing"] == AGENT
        assert item["waiting_s"] >= 0
        await fake.hang_up(sid)
        await _records_written(handoff)


def test_desk_page_shows_a_live_escalation_in_chromium(tmp_path: Path) -> None:
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip("Chromium is not installed (apt-get install chromium); .ci/run installs it")
    asyncio.run(_browser(chromium, tmp_path))


def _start_chromium(drv: ModuleType, chromium: str, tmp: Path) -> subprocess.Popen[bytes]:
    with open(tmp / "chromium.log", "wb") as log:
        return subprocess.Popen(
            [chromium, *drv.CHROMIUM_FLAGS, f"--user-data-dir={tmp / 'profile'}"],
            stdout=subprocess.DEVNULL,
            stderr=log,
        )


async def _browser(chromium: str, tmp_path: Path) -> None:
    drv = _driver()
    tmp = Path(tempfile.mkdtemp(prefix="voxpipe-desk-"))
    async with desk_server(tmp_path) as (url, fake, settings):
        proc = _start_chromium(drv, chromium, tmp)
        try:
            devtools = await drv.devtools_url(tmp / "profile", proc, 30)
            async with websockets.connect(devtools, max_size=None) as ws:
                cdp = drv.CDP(ws)
                target = await cdp.call("Target.createTarget", {"url": "about:blank"})
                attached = await cdp.call(
                    "Target.attachToTarget", {"targetId": target["targetId"], "flatten": True}
                )
                session = attached["sessionId"]
                await cdp.call("Runtime.enable", {}, session)
                await cdp.call("Page.navigate", {"url": f"{url}/desk#token={DESK}"}, session)

                async def page(expression: str, timeout: float = 15) -> Any:
                    # The page updates from its event stream; poll what it shows.
                    deadline = time.monotonic() + timeout
                    while True:
                        value = await cdp.evaluate(session, expression)
                        if value:
                            return value
                        if time.monotonic() > deadline:
                            raise AssertionError(f"page never showed {expression}: {cdp.console}")
                        await asyncio.sleep(0.05)

                await page("window.desk && window.desk.status === 'live'")
                sid, handoff = await _escalate(settings, fake, tmp_path)
                text = await page(
                    "document.querySelector('.esc') && document.getElementById('list').innerText"
                )
                assert "•••0789" in text and CALLER not in text
                assert "caller asked for a person" in text
                assert "Router drops the connection; restarted thrice." in text
                assert "Yes, three times. Get me a person." in text
                assert "en-GB" in text and "waiting" in text
                await fake.hang_up(sid)
                await page("document.querySelectorAll('.esc').length === 0")
                await _records_written(handoff)
                await cdp.close()
        finally:
            proc.terminate()
            proc.wait(10)
            shutil.rmtree(tmp, ignore_errors=True)
