"""What the fake Twilio does with calls beyond REST bookkeeping: outbound legs answered by
scripted agents, conferences, and the signed callbacks Twilio POSTs to the app.

Callbacks are form-encoded POSTs signed with ``X-Twilio-Signature`` = base64(HMAC-SHA1(auth
token, URL + each parameter sorted by name as name + value)), computed here independently of
voxpipe's own checker.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import logging
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

import httpx

__all__ = ["Callback", "FakeAgent", "FakeConference", "TwimlFetch", "sign"]

logger = logging.getLogger(__name__)


def sign(auth_token: str, url: str, params: Mapping[str, str]) -> str:
    """The ``X-Twilio-Signature`` of a POST of ``params`` to ``url``."""
    data = url + "".join(name + params[name] for name in sorted(params))
    digest = hmac.new(auth_token.encode(), data.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


@dataclass(frozen=True, slots=True)
class FakeAgent:
    """How the person at one number behaves when the fake dials them.

    ``answer``: picks up, listens to the whisper and presses ``digits`` ("" = says nothing,
    the Gather times out); ``hangup``: picks up and hangs up during the whisper; ``no-answer``:
    rings for ``ring_s`` (until the leg is cancelled, at most the call's ``Timeout``) then
    Twilio reports no-answer; ``busy`` / ``failed``: reported at once.
    """

    action: Literal["answer", "hangup", "no-answer", "busy", "failed"] = "answer"
    digits: str = "1"
    ring_s: float = 0.0


@dataclass(slots=True)
class Callback:
    """One callback the fake POSTed to the app, and what the app answered."""

    url: str
    form: dict[str, str]
    status: int
    body: str


@dataclass(slots=True)
class TwimlFetch:
    """TwiML the fake fetched for a call (a ``Url`` it was sent to)."""

    call_sid: str
    url: str
    status: int
    twiml: str


@dataclass(slots=True)
class FakeConference:
    """A conference and who is in it."""

    name: str
    sid: str
    status_callback: str | None = None
    events: tuple[str, ...] = ()
    wait_url: str | None = None
    wait_method: str = "POST"
    participants: dict[str, bool] = field(default_factory=dict)  # CallSid -> endOnExit
    started: bool = False
    ended: bool = False
    hold_audio: list[tuple[int, str, int]] = field(default_factory=list)  # status, type, bytes


@dataclass(frozen=True, slots=True)
class DialConference:
    """A ``<Dial><Conference>`` verb as TwiML gave it."""

    name: str
    attrs: dict[str, str]


def parse_conference(twiml: str) -> DialConference | None:
    """The ``<Dial><Conference>`` of a TwiML document, if it has one."""
    try:
        root = ET.fromstring(twiml)
    except ET.ParseError:
        return None
    node = root.find("./Dial/Conference")
    if node is None:
        return None
    return DialConference((node.text or "").strip(), dict(node.attrib))


def parse_gather(twiml: str) -> tuple[str | None, list[str], bool]:
    """(Gather action, texts said, whether TwiML ends in Hangup) of a whisper."""
    root = ET.fromstring(twiml)
    said = [(n.text or "").strip() for n in root.iter("Say")]
    gather = root.find("./Gather")
    action = gather.attrib.get("action") if gather is not None else None
    return action, said, root.find("./Hangup") is not None


async def post_signed(
    client: httpx.AsyncClient, auth_token: str, url: str, form: dict[str, str]
) -> tuple[int, str]:
    """POST ``form`` to ``url`` as Twilio does (signed); (status, body), (0, error) unreachable."""
    headers = {"X-Twilio-Signature": sign(auth_token, url, form)}
    try:
        resp = await client.post(url, data=form, headers=headers)
    except httpx.HTTPError as exc:
        logger.warning("fake Twilio: callback %s failed: %s", url, exc)
        return 0, str(exc)
    return resp.status_code, resp.text


async def wait_or(event: asyncio.Event, seconds: float) -> bool:
    """True if ``event`` was set within ``seconds``."""
    try:
        async with asyncio.timeout(seconds):
            await event.wait()
        return True
    except TimeoutError:
        return False
