"""One SIP call from INVITE to BYE: a state machine that runs the bot over RTP.

States: ``incoming`` (INVITE taken, media being set up) → ``ringing`` (180 sent, bot building)
→ ``answered`` (200 OK sent, the pipeline runs) → ``ended``; ``incoming``/``ringing`` may go
straight to ``ended`` (CANCEL, an error). Every change goes through ``_transition``.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from typing import TYPE_CHECKING, Any

from aiosipua import IncomingCall, SipRequest, parse_address, parse_sdp, parse_uri

from voxpipe.call import Call, build_task, choose_call_locale
from voxpipe.logs import call_ended, call_started
from voxpipe.processors.turn.params import transport_turn_kwargs
from voxpipe.server.metrics import FrameCounter
from voxpipe.server.sessions import CallSession
from voxpipe.transports.base import Transport
from voxpipe.transports.params import TransportParams
from voxpipe.transports.sip.control import SipCallControl
from voxpipe.transports.sip.rtp import RtpSink, SdpNegotiationError, SipMedia

if TYPE_CHECKING:
    from aiortp import PortAllocator

    from voxpipe.server.state import ServerState

__all__ = ["SipCall", "caller_identity"]

logger = logging.getLogger(__name__)

CARRIER = "sip"
ACK_WAIT_S = 32.0  # 64 x T1: how long a 2xx waits for its ACK (RFC 3261 §13.3.1.4)
_TRANSITIONS = {
    "incoming": {"ringing", "ended"},
    "ringing": {"answered", "ended"},
    "answered": {"ended"},
    "ended": set(),
}


def _user(uri_or_address: str) -> str:
    """The user part of a SIP URI or name-addr (``"Bob" <sip:+1555@host>`` → ``+1555``)."""
    text = uri_or_address.strip()
    inner = text[text.find("<") + 1 : text.find(">")] if "<" in text and ">" in text else text
    if inner.lower().startswith("tel:"):  # RFC 3966, common in P-Asserted-Identity
        return inner[4:].split(";")[0]
    try:
        if not inner.lower().startswith(("sip:", "sips:")):
            return ""
        uri = parse_address(text).uri if "<" in text else parse_uri(text)
        return uri.user or uri.host
    except Exception:
        return ""


def caller_identity(inc: IncomingCall) -> tuple[str, str]:
    """(caller, called): P-Asserted-Identity (set by a trusted PBX) over From; To."""
    pai = inc.invite.get_header("p-asserted-identity")
    caller = _user(pai.split(",")[0]) if pai else ""
    return caller or _user(inc.caller), _user(inc.callee)


class SipCall:
    """One inbound SIP call: media, the bot's pipeline, and how the call ended."""

    def __init__(
        self, st: ServerState, inc: IncomingCall, ports: PortAllocator, *, bind_ip: str, sdp_ip: str
    ) -> None:
        self.st = st
        self.inc = inc
        self.call_id = inc.call_id or f"sip-{secrets.token_hex(6)}"
        self.state = "incoming"
        self.media = SipMedia(self.call_id, ports, bind_ip=bind_ip, sdp_ip=sdp_ip)
        self.sink: RtpSink | None = None
        self.transport: Transport | None = None
        self.hangup = asyncio.Event()  # BYE, CANCEL or session expiry from the far end
        self.hangup_reason = ""
        self.outcome = ""
        self.transferred_to = ""  # a REFER moved the caller there: we end our leg
        self.bye_received = False
        self._ack: asyncio.Future[SipRequest] | None = None  # delayed offer: the ACK's answer
        self.control = SipCallControl(
            inc,
            reliable=bool(getattr(inc.transport, "reliable", False)),
            end_transferred=self._transferred,
        )
        self.log = logging.LoggerAdapter(logger, {"call_id": self.call_id})

    def _transition(self, new: str) -> bool:
        """Move to ``new`` when allowed from the current state; False (and no change) if not."""
        if new not in _TRANSITIONS[self.state]:
            return False
        self.log.debug("call %s: %s -> %s", self.call_id, self.state, new)
        self.state = new
        return True

    # ------------------------------------------------------------------ signalling events

    def far_end_left(self, reason: str) -> None:
        """BYE / CANCEL / session expiry: the far end is gone."""
        if reason in ("caller hung up", "cancelled", "session expired"):
            self.bye_received = reason != "cancelled"
            self.control.far_end_gone.set()
        if not self.hangup.is_set():
            self.hangup_reason = reason
            self.hangup.set()

    def _transferred(self, target: str) -> None:
        """The REFER succeeded: the call ends for us (BYE unless the far end sent one)."""
        self.transferred_to = target
        if not self.hangup.is_set():
            self.hangup_reason = f"transferred to {target}"
            self.hangup.set()

    def ack(self, request: SipRequest) -> None:
        """The ACK of our 2xx (its body is the SDP answer of a delayed offer)."""
        if self._ack is not None and not self._ack.done():
            self._ack.set_result(request)

    async def reinvite(self, inc: IncomingCall) -> None:
        """A re-INVITE on the answered call: hold/resume or a codec change."""
        offer = inc.sdp_offer
        if offer is None or self.media.session is None:
            inc.accept(self.media.answer)  # a refresh without SDP: the same session
            return
        try:
            answer = await self.media.reoffer(offer, self.sink)
        except SdpNegotiationError as exc:
            self.log.warning("call %s: re-INVITE refused (488): %s", self.call_id, exc)
            inc._send_response(488, "Not Acceptable Here")
            return
        except Exception as exc:  # the call goes on with the media it had
            self.log.warning("call %s: re-INVITE failed (500): %r", self.call_id, exc)
            inc._send_response(500, "Server Internal Error")
            return
        self.media.touch()
        inc.accept(answer)
        self.log.info("call %s: re-INVITE %s", self.call_id, "hold" if self.media.held else "ok")

    # ------------------------------------------------------------------ the call

    async def run(self) -> None:
        """Answer, run the bot until either side hangs up, and account for the outcome."""
        inc, m = self.inc, self.st.metrics
        offer = inc.sdp_offer
        if offer is None:
            return await self._run_delayed_offer()
        try:
            answer = await self.media.start(offer)
        except SdpNegotiationError as exc:
            self.log.warning("call %s: no common codec (488): %s", self.call_id, exc)
            return self._refuse(488, "no-common-codec")
        except Exception as exc:
            self.log.error("call %s: RTP setup failed: %s", self.call_id, exc)
            await self.media.close()
            return self._refuse(503, "media-error")
        if self.hangup.is_set() or not self._transition("ringing"):
            await self.media.close()
            m.calls_refused[CARRIER, "cancelled"] += 1
            return
        inc.ringing()
        try:
            task, call = await self._build()
        except Exception as exc:
            self.log.exception("call %s: the bot failed to build its pipeline", self.call_id)
            await self.media.close()
            return self._refuse(500, "bot-error", f"bot failed: {type(exc).__name__}")
        if self.hangup.is_set():  # CANCEL while the bot was building: 487 already sent
            self._transition("ended")
            await self.media.close()
            m.calls_refused[CARRIER, "cancelled"] += 1
            return
        inc.accept(answer)
        self._transition("answered")
        await self._converse(task, call)

    async def _run_delayed_offer(self) -> None:
        """An INVITE without SDP: our offer goes in the 200 OK, the answer comes in the ACK
        (RFC 3261 §13.2.1, RFC 3264); the bot is built once the codec is known."""
        inc, m = self.inc, self.st.metrics
        try:
            offer = await self.media.offer()
        except Exception as exc:
            self.log.error("call %s: RTP setup failed: %s", self.call_id, exc)
            await self.media.close()
            return self._refuse(503, "media-error")
        if self.hangup.is_set() or not self._transition("ringing"):
            await self.media.close()
            m.calls_refused[CARRIER, "cancelled"] += 1
            return
        inc.ringing()
        acked: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._ack = acked
        inc.accept(offer)
        self._transition("answered")
        self.log.info("call %s: INVITE without SDP: offer sent in the 200 OK", self.call_id)
        problem, metric = "", ""
        far: asyncio.Future[Any] = asyncio.ensure_future(self.hangup.wait())
        try:
            done, _ = await asyncio.wait(
                {acked, far}, timeout=ACK_WAIT_S, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            far.cancel()
        if acked not in done:
            problem, metric = "no ACK with an SDP answer", "no-sdp-answer"
            if self.hangup.is_set():
                problem, metric = "caller left before the ACK", "cancelled"
        else:
            ack = acked.result()
            if not ack.body or ack.content_type != "application/sdp":
                problem, metric = "ACK without an SDP answer", "no-sdp-answer"
            else:
                try:
                    await self.media.take_answer(parse_sdp(ack.text))
                except SdpNegotiationError as exc:
                    problem, metric = f"answer has no codec we offered: {exc}", "no-common-codec"
                except Exception as exc:
                    problem, metric = f"bad SDP answer in the ACK: {exc!r:.120}", "no-sdp-answer"
        if not problem:
            try:
                task, call = await self._build()
            except Exception as exc:
                self.log.exception("call %s: the bot failed to build its pipeline", self.call_id)
                problem, metric = f"bot failed: {type(exc).__name__}", "bot-error"
        if problem:
            # Answered already: RFC 3264 §12.1 leaves BYE as the way out.
            self.log.warning("call %s: delayed offer failed (BYE): %s", self.call_id, problem)
            if not self.bye_received:
                inc.hangup()
            self._transition("ended")
            await self.media.close()
            m.calls_refused[CARRIER, metric] += 1
            return
        await self._converse(task, call)

    def _refuse(self, code: int, metric: str, reason: str = "") -> None:
        if self._transition("ended"):
            self.inc.reject(code, reason)
        self.st.metrics.calls_refused[CARRIER, metric] += 1

    async def _build(self) -> tuple[Any, Call]:
        st = self.st
        fmt = self.media.audio_format
        assert self.media.session is not None
        caller, called = caller_identity(self.inc)
        params = {k: v for k, v in self.inc.x_headers.items()}
        params.setdefault("From", caller)
        params.setdefault("To", called)
        try:
            row = choose_call_locale(st.settings, caller=caller, custom_parameters=params)
            locale, locale_row = row.locale, row
        except Exception as exc:  # a broken locale table must not refuse calls
            self.log.warning("locale choice failed: %s", exc)
            locale, locale_row = st.settings.default_locale, None
        tparams = TransportParams(
            audio_in=fmt,
            audio_out=fmt,
            allow_interruptions=st.settings.allow_interruptions,
            **transport_turn_kwargs(st.settings, locale_row),  # the row's turn-taking, if set
        )
        transport = Transport(None, tparams, batched_vad=st.batched_vad, name=CARRIER)
        self.sink = RtpSink(self.media.session, transport.mark_played)
        self.sink.held = self.media.held
        transport.set_sink(self.sink)
        self.transport = transport
        call = Call(
            transport=transport,
            call_id=self.call_id,
            settings=st.settings,
            carrier=CARRIER,
            caller=caller,
            called=called,
            custom_parameters=params,
            locale=locale,
            locale_row=locale_row,
            audio_in=fmt,
            audio_out=fmt,
            allow_interruptions=st.settings.allow_interruptions,
            owner=f"sip:{self.call_id}",
            control=self.control,
        )
        return build_task(call, await st.bot(call)), call

    async def _converse(self, task: Any, call: Call) -> None:
        st, m = self.st, self.st.metrics
        assert self.transport is not None and self.sink is not None
        transport, sink = self.transport, self.sink
        counter = FrameCounter(m)
        task.add_observer(counter)
        task.on_downstream(counter.on_output)
        task.on_upstream(counter.on_output)
        task.on_downstream(self.control.on_frame)
        self.control.task, self.control.output = task, transport.output()
        if st.record_dir is not None:
            from voxpipe.server.media import call_recorder

            task.add_observer(call_recorder(st, call, task))
        loop = asyncio.get_running_loop()
        runner = loop.create_task(task.run(), name=f"call:{self.call_id}")
        stopped = asyncio.Event()

        async def end(reason: str) -> None:  # the registry: server shutdown or silence sweep
            self.far_end_left(reason)
            stopped.set()

        session = CallSession(
            call_id=self.call_id,
            carrier=CARRIER,
            last_activity=lambda: loop.time() - self.media.silent_for(),
            end=end,
        )
        st.registry.add(session)
        m.calls_started[CARRIER] += 1
        call_started(self.call_id, CARRIER, f"{self.inc.source_addr[0]}:{self.inc.source_addr[1]}")
        sink.start()
        feeder = loop.create_task(self._feed(transport), name=f"rtp-in:{self.call_id}")
        watchdog = loop.create_task(self._watch_media(), name=f"rtp-timeout:{self.call_id}")
        far = loop.create_task(self.hangup.wait())
        how = "bot-ended"
        try:
            await asyncio.wait({runner, far, watchdog}, return_when=asyncio.FIRST_COMPLETED)
            if not runner.done():
                if watchdog.done() and not far.done():
                    how, reason = "rtp-timeout", "no media from the caller"
                    self.log.warning(
                        "call %s: no RTP for %.0f s: ending",
                        self.call_id,
                        st.settings.sip_rtp_timeout_s,
                    )
                elif self.transferred_to:
                    how, reason = "transferred", self.hangup_reason
                elif stopped.is_set():
                    how, reason = "server-ended", self.hangup_reason
                elif self.hangup_reason == "session expired":
                    how, reason = "session-expired", "no session refresh (RFC 4028)"
                else:
                    how, reason = "caller-hung-up", self.hangup_reason or "caller hung up"
                # Graceful: the pipeline ends (transcript written) within its own bound.
                await transport.on_wire_closed(reason)
                limit = transport.params.hangup_timeout_secs + task.end_timeout + 1.0
                await asyncio.wait({runner}, timeout=limit)
                if not runner.done():
                    await task.cancel("did not end after hang-up")
            elif task.end_reason == "fatal error":
                how = "bot-error"
            await asyncio.gather(runner, return_exceptions=True)
        except asyncio.CancelledError:
            how = "server-shutdown"
            await task.cancel("server shutting down")
            raise
        finally:
            self.control.far_end_gone.set()  # a REFER still waiting gives up: the call is over
            for t in (feeder, watchdog, far):
                t.cancel()
            if not runner.done():
                runner.cancel()
            await asyncio.gather(runner, feeder, watchdog, far, return_exceptions=True)
            if self.transferred_to and how != "server-shutdown":
                how = "transferred"  # whoever hung up first, the call went to a person
            if not self.bye_received:  # else aiosipua answered the far end's BYE
                self.inc.hangup()  # BYE: the bot (or the server) ended the call
            self._transition("ended")
            self.outcome = how
            await sink.close()
            await self.media.close()
            st.registry.remove(session)
            m.calls_ended[CARRIER, how] += 1
            call_ended(
                self.call_id,
                CARRIER,
                how,
                loop.time() - session.started_at,
                task.end_reason or self.hangup_reason,
            )

    async def _feed(self, transport: Transport) -> None:
        """Caller audio and digits from RTP into the pipeline, in arrival order."""
        inp = transport.input()
        while not inp.started:
            await asyncio.sleep(0.005)  # audio before the StartFrame would be dropped
        q = self.media.inbound
        while True:
            kind, value = await q.get()
            if kind == "audio":
                await transport.push_wire_audio(value)
            else:
                await transport.push_dtmf(value)

    async def _watch_media(self) -> None:
        """Return when the caller has sent no RTP for SIP_RTP_TIMEOUT_S (not on hold)."""
        limit = self.st.settings.sip_rtp_timeout_s
        while True:
            idle = self.media.silent_for()
            if idle >= limit:
                return
            await asyncio.sleep(min(1.0, limit - idle + 0.01))
