"""Drives one browser call end to end: voxpipe's server with the echo bot, headless Chromium.

Run by tests/server/test_webrtc_browser.py inside a private network namespace whose loopback
also carries 127.0.0.2 (aiortc never offers 127.0.0.1, and nothing here may touch a real
network). Chromium's fake microphone plays a WAV file of speech; the page is driven over
the Chrome DevTools Protocol (a websocket, no extra package). Prints one JSON object with
what the server and the page saw, for the test to check.

    python webrtc_browser_driver.py --host 127.0.0.2 --wav speech.wav [--chromium PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import websockets

sys.path.insert(0, str(Path(__file__).resolve().parent))
import webrtc_support as support  # noqa: E402

from voxpipe.config.settings import VoxpipeSettings  # noqa: E402
from voxpipe.server.app import create_app  # noqa: E402
from voxpipe.server.run import running_server  # noqa: E402

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-extensions",
    "--mute-audio",
    "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream",
    # The page's AudioContext (level meters) may start without a click.
    "--autoplay-policy=no-user-gesture-required",
    # Chromium gathers no ICE candidate on loopback interfaces without this.
    "--allow-loopback-in-peer-connection",
    "--remote-debugging-port=0",
]


class CDP:
    """A minimal Chrome DevTools Protocol client over the browser's websocket."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self._ids = itertools.count(1)
        self._waiting: dict[int, asyncio.Future[Any]] = {}
        self.console: list[str] = []
        self._pump = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        async for raw in self.ws:
            msg = json.loads(raw)
            fut = self._waiting.pop(msg.get("id", -1), None)
            if fut is not None and not fut.done():
                if "error" in msg:
                    fut.set_exception(RuntimeError(f"CDP error: {msg['error']}"))
                else:
                    fut.set_result(msg.get("result", {}))
            elif msg.get("method") == "Runtime.consoleAPICalled":
                args = msg["params"].get("args", [])
                self.console.append(
                    " ".join(str(a.get("value", a.get("description"))) for a in args)
                )
            elif msg.get("method") == "Runtime.exceptionThrown":
                self.console.append(json.dumps(msg["params"].get("exceptionDetails", {}))[:500])

    async def call(
        self, method: str, params: dict[str, Any] | None = None, session: str = ""
    ) -> Any:
        i = next(self._ids)
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiting[i] = fut
        msg: dict[str, Any] = {"id": i, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        await self.ws.send(json.dumps(msg))
        return await asyncio.wait_for(fut, 15)

    async def evaluate(self, session: str, expression: str, *, await_promise: bool = False) -> Any:
        result = await self.call(
            "Runtime.evaluate",
            {"expression": expression, "returnByValue": True, "awaitPromise": await_promise},
            session,
        )
        if "exceptionDetails" in result:
            raise RuntimeError(f"page error: {result['exceptionDetails']}")
        return result["result"].get("value")

    async def close(self) -> None:
        self._pump.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self._pump


async def devtools_url(user_data_dir: Path, proc: subprocess.Popen[bytes], timeout: float) -> str:
    """The browser websocket from DevToolsActivePort (Chromium writes it once it listens)."""
    path = user_data_dir / "DevToolsActivePort"
    deadline = time.monotonic() + timeout
    while True:
        if path.exists():
            lines = path.read_text().splitlines()
            if len(lines) >= 2:
                return f"ws://127.0.0.1:{lines[0]}{lines[1]}"
        if proc.poll() is not None:
            raise RuntimeError(
                f"chromium exited with status {proc.returncode} before DevTools was up"
            )
        if time.monotonic() > deadline:
            raise RuntimeError(f"chromium did not open DevTools within {timeout:.0f} s")
        await asyncio.sleep(0.05)  # Chromium gives no other signal that the port file is ready


def start_chromium(chromium: str, wav: str, tmp: Path) -> subprocess.Popen[bytes]:
    """Headless Chromium with the WAV as its microphone; its log goes to tmp/chromium.log."""
    with open(tmp / "chromium.log", "wb") as log:
        return subprocess.Popen(
            [
                chromium,
                *CHROMIUM_FLAGS,
                f"--user-data-dir={tmp / 'profile'}",
                f"--use-file-for-fake-audio-capture={wav}",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=log,
        )


def page_done(state: dict[str, Any] | None, stats: support.ProbeStats, min_peak: float) -> bool:
    if not state:
        return False
    types = [m.get("type") for m in state.get("messages", [])]
    return (
        state.get("remotePeak", 0) >= min_peak
        and "bot-started-speaking" in types
        and "bot-stopped-speaking" in types
        and stats.count("user-started-speaking") >= 1
    )


async def run(args: argparse.Namespace) -> dict[str, Any]:
    stats = support.ProbeStats()
    settings = VoxpipeSettings()
    app = support.include_webrtc(create_app(support.probe_echo_bot(stats), settings))
    st = app.state.voxpipe
    out: dict[str, Any] = {"ok": False}
    tmp = Path(tempfile.mkdtemp(prefix="voxpipe-chromium-"))
    proc: subprocess.Popen[bytes] | None = None
    cdp: CDP | None = None
    t0 = time.monotonic()
    try:
        async with running_server(app, settings, host=args.host, port=0) as srv:
            proc = start_chromium(args.chromium, args.wav, tmp)
            url = await devtools_url(tmp / "profile", proc, 30)
            async with websockets.connect(url, max_size=None) as ws:
                cdp = CDP(ws)
                target = await cdp.call("Target.createTarget", {"url": "about:blank"})
                attached = await cdp.call(
                    "Target.attachToTarget", {"targetId": target["targetId"], "flatten": True}
                )
                session = attached["sessionId"]
                await cdp.call("Runtime.enable", {}, session)
                await cdp.call("Page.enable", {}, session)
                await cdp.call("Page.navigate", {"url": srv.url + "/"}, session)
                deadline = time.monotonic() + 15
                while not await cdp.evaluate(session, "typeof window.voxpipe === 'object'"):
                    if time.monotonic() > deadline:
                        raise RuntimeError("the page did not load its script within 15 s")
                    await asyncio.sleep(0.05)
                await cdp.evaluate(session, "window.voxpipe.start(); true")
                out["page_loaded_s"] = round(time.monotonic() - t0, 2)
                state: dict[str, Any] | None = None
                deadline = time.monotonic() + args.timeout
                while time.monotonic() < deadline:
                    state = await cdp.evaluate(session, "window.voxpipe.state")
                    if (
                        page_done(state, stats, args.min_peak)
                        or (state or {}).get("status") == "failed"
                    ):
                        break
                    await asyncio.sleep(0.1)
                out["page"] = state
                out["inbound_rtp"] = await cdp.evaluate(
                    session, "window.voxpipe.inboundAudioStats()", await_promise=True
                )
                out["server_during_call"] = {
                    "active_calls": len(st.registry),
                    "calls_started": dict(st.metrics.calls_started),
                }
                out["server"] = stats.summary()
                sessions = st.registry.sessions
                out["elapsed_s"] = round(time.monotonic() - t0, 2)
                # Hang up from the page; the server must notice and end the call.
                await cdp.evaluate(session, "window.voxpipe.hangUp(); true")
                try:
                    await asyncio.wait_for(stats.ended.wait(), 15)
                    for session in sessions:
                        await asyncio.wait_for(session.ended.wait(), 10)
                except TimeoutError:
                    pass
                out["after_hangup"] = {
                    "call_ended": stats.ended.is_set(),
                    "active_calls": len(st.registry),
                    "calls_ended": {"/".join(k): v for k, v in st.metrics.calls_ended.items()},
                }
                out["console"] = cdp.console[-20:]
                with contextlib.suppress(Exception):
                    await cdp.call("Browser.close")
            out["ok"] = True
    except Exception as exc:
        out["error"] = f"{type(exc).__name__}: {exc}"
        out.setdefault("server", stats.summary())
    finally:
        if cdp is not None:
            await cdp.close()
        if proc is not None:
            try:
                await asyncio.to_thread(proc.wait, 10)
            except subprocess.TimeoutExpired:
                proc.kill()
                await asyncio.to_thread(proc.wait)
        log_path = tmp / "chromium.log"
        if not out.get("ok") and log_path.exists():
            out["chromium_log_tail"] = log_path.read_text(errors="replace").splitlines()[-30:]
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.2")
    parser.add_argument("--wav", default=str(support.SPEECH_WAV))
    parser.add_argument("--chromium", default=shutil.which("chromium") or "chromium")
    parser.add_argument("--timeout", type=float, default=40.0)
    parser.add_argument("--min-peak", type=float, default=0.02)
    args = parser.parse_args()
    logging.basicConfig(level=os.environ.get("VOXPIPE_DRIVER_LOG", "WARNING"), stream=sys.stderr)
    print(json.dumps(asyncio.run(run(args))))


if __name__ == "__main__":
    main()
