"""Call control a bot gets on a SIP call: REFER the caller elsewhere, speak, end our leg.

``SipCallControl`` is ``Call.control`` for ``call.carrier == "sip"``. ``refer(target)`` sends an
in-dialog REFER (RFC 3515: ``Refer-To``, ``Referred-By``, optional brief header), waits for the
REFER's final response and then for the NOTIFY whose ``message/sipfrag`` body carries a final
status of the new call (RFC 3515 §2.4.5); a 2xx there means the caller is with the target.
A BYE from the far end after the REFER was accepted also counts as success: many PBXs drop
the transferor's leg themselves (RFC 5589 §6.1). aiosipua 0.7 answers NOTIFYs; it has no
client transaction for requests a UAS sends, so the REFER is retransmitted here over UDP
(RFC 3261 timer E) and its response routed here by the server.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aiosipua import SipResponse
from aiosipua.utils import format_addr

from voxpipe.frames import BotStartedSpeakingFrame, BotStoppedSpeakingFrame, Frame, TTSSpeakFrame

if TYPE_CHECKING:
    from aiosipua import IncomingCall

__all__ = ["ReferResult", "SipCallControl", "brief_header_value"]

logger = logging.getLogger(__name__)

T1, T2, TIMER_F = 0.5, 4.0, 32.0  # RFC 3261 §17.1.2.2
BRIEF_HEADER = "X-Voxpipe-Brief"
MAX_BRIEF = 500  # header bytes a PBX will reasonably carry


@dataclass(frozen=True, slots=True)
class ReferResult:
    """How one REFER ended: the status that decided it and whether the caller moved."""

    transferred: bool
    status: int  # the REFER's rejection, the final sipfrag status, or 0 (timeout / hang-up)
    detail: str


def brief_header_value(text: str) -> str:
    """``text`` as one header line: no CR/LF or control characters, at most MAX_BRIEF bytes."""
    flat = " ".join("".join(ch if ch.isprintable() else " " for ch in text).split())
    data = flat.encode()[:MAX_BRIEF]
    return data.decode(errors="ignore")


class SipCallControl:
    """REFER, speech and leg control for one answered SIP call (see the module docstring)."""

    def __init__(
        self,
        inc: IncomingCall,
        *,
        reliable: bool,
        end_transferred: Callable[[str], None],
    ) -> None:
        self.inc = inc
        self.reliable = reliable
        self._end_transferred = end_transferred
        self.task: Any = None  # the call's PipelineTask, once built
        self.output: Any = None  # the transport's output processor (idle = nothing left to say)
        self._response: asyncio.Future[SipResponse] | None = None
        self._cseq = 0
        self._progress: asyncio.Queue[tuple[int, str]] = asyncio.Queue()
        self.far_end_gone = asyncio.Event()
        self._started = asyncio.Event()
        self._stopped = asyncio.Event()
        self.log = logging.LoggerAdapter(logger, {"call_id": inc.call_id})

    # ------------------------------------------------------------------ from the server / task

    def on_response(self, resp: SipResponse) -> None:
        """A response to a request we sent on this dialog (the REFER's is the one kept)."""
        cseq = resp.cseq
        fut = self._response
        if cseq is None or cseq.method.upper() != "REFER" or cseq.seq != self._cseq:
            return
        if fut is not None and not fut.done() and resp.status_code >= 200:
            fut.set_result(resp)

    def on_progress(self, status: int, reason: str) -> None:
        """A NOTIFY's sipfrag status about the REFER's new call."""
        self._progress.put_nowait((status, reason))

    def on_frame(self, frame: Frame) -> None:
        """Frames leaving the pipeline: when the bot starts and stops speaking."""
        if isinstance(frame, BotStartedSpeakingFrame):
            self._started.set()
        elif isinstance(frame, BotStoppedSpeakingFrame):
            self._stopped.set()

    # ------------------------------------------------------------------ for the bot

    def watch_speech(self) -> None:
        """Start watching for the next utterance (call before it is asked for)."""
        self._started.clear()
        self._stopped.clear()

    async def wait_spoken(self, start_within_s: float = 5.0, limit_s: float = 30.0) -> None:
        """Return once the utterance after ``watch_speech`` has been played out (bounded)."""
        try:
            async with asyncio.timeout(start_within_s):
                await self._started.wait()
        except TimeoutError:
            return  # nothing was said: do not hold the transfer up
        try:
            async with asyncio.timeout(limit_s):
                while True:
                    await self._stopped.wait()
                    if self.output is None or self.output.idle:
                        return
                    self._stopped.clear()  # more was queued behind it
        except TimeoutError:
            self.log.warning("call %s: the bot was still speaking; transferring", self.call_id)

    @property
    def call_id(self) -> str:
        return self.inc.call_id

    @property
    def peer_host(self) -> str:
        """``host:port`` the call came from (the PBX or trunk): where a bare number goes."""
        return format_addr(*self.inc.source_addr)

    async def say(self, text: str) -> None:
        """Have the bot speak ``text`` (queued behind what it is saying)."""
        if self.task is not None:
            await self.task.queue_frame(TTSSpeakFrame(text))

    def end_transferred(self, target: str) -> None:
        """The caller is with ``target``: end our leg with BYE (RFC 5589 §6.1)."""
        self._end_transferred(target)

    async def refer(
        self, target: str, *, brief: str = "", notify_timeout_s: float = 30.0
    ) -> ReferResult:
        """REFER the caller to ``target`` and wait for the outcome (see the module docstring)."""
        inc = self.inc
        if self.far_end_gone.is_set():
            return ReferResult(False, 0, "caller hung up")
        addr = inc._signaling_addr()
        req = inc.dialog.create_request(
            "REFER",
            via_host=addr[0],
            via_port=addr[1],
            via_transport="TCP" if self.reliable else "UDP",
        )
        self._cseq = req.cseq.seq if req.cseq else 0
        req.headers.set_single("Refer-To", f"<{target}>")
        req.headers.set_single("Referred-By", f"<{inc.dialog.local_uri}>")
        req.headers.set_single("Contact", f"<sip:{format_addr(*addr)}>")
        if brief:
            req.headers.set_single(BRIEF_HEADER, brief_header_value(brief))
        if inc.user_agent:
            req.headers.set_single("User-Agent", inc.user_agent)
        while not self._progress.empty():  # stale progress of an earlier REFER
            self._progress.get_nowait()
        loop = asyncio.get_running_loop()
        self._response = loop.create_future()
        self.log.info("call %s: REFER to %s", self.call_id, target)
        try:
            resp = await self._send_until_answered(req)
        finally:
            self._response = None
        if resp is None:
            if self.far_end_gone.is_set():
                return ReferResult(False, 0, "caller hung up")
            return ReferResult(False, 408, "no response to REFER")
        if resp.status_code >= 300:
            return ReferResult(False, resp.status_code, f"REFER refused: {resp.reason_phrase}")
        return await self._await_notify(notify_timeout_s)

    async def _send_until_answered(self, req: Any) -> SipResponse | None:
        assert self._response is not None and self.inc.transport is not None
        interval, waited = T1, 0.0
        answered: asyncio.Future[Any] = self._response
        gone: asyncio.Future[Any] = asyncio.ensure_future(self.far_end_gone.wait())
        try:
            while waited < TIMER_F:
                self.inc.transport.send(req, self.inc.source_addr)
                wait = TIMER_F - waited if self.reliable else min(interval, TIMER_F - waited)
                done, _ = await asyncio.wait(
                    {answered, gone}, timeout=wait, return_when=asyncio.FIRST_COMPLETED
                )
                if answered in done:
                    result: SipResponse = answered.result()
                    return result
                if gone in done:
                    return None
                waited += wait
                interval = min(interval * 2, T2)
            return None
        finally:
            gone.cancel()

    async def _await_notify(self, timeout_s: float) -> ReferResult:
        gone: asyncio.Future[Any] = asyncio.ensure_future(self.far_end_gone.wait())
        progress: asyncio.Future[Any] | None = None
        try:
            async with asyncio.timeout(timeout_s):
                while True:
                    progress = asyncio.ensure_future(self._progress.get())
                    done, _ = await asyncio.wait(
                        {progress, gone}, return_when=asyncio.FIRST_COMPLETED
                    )
                    if progress not in done:
                        # The PBX took the call and dropped our leg (no final NOTIFY first).
                        return ReferResult(True, 0, "the far end ended our leg")
                    status, reason = progress.result()
                    self.log.info("call %s: transfer progress %s %s", self.call_id, status, reason)
                    if status >= 300:
                        return ReferResult(False, status, reason)
                    if status >= 200:
                        return ReferResult(True, status, reason)
        except TimeoutError:
            return ReferResult(False, 408, f"no final NOTIFY in {timeout_s:g} s")
        finally:
            gone.cancel()
            if progress is not None and not progress.done():
                progress.cancel()
