"""The live transfers of this worker, their step counts, and the transfer settings.

A bot starts a transfer (``TwilioTransfer``, ``TelnyxTransfer``, ``VonageTransfer``) while its
call runs; the carrier's callbacks about it reach the server's transfer routes, which find it
here by the caller's call id (or an agent leg's). Callbacks must reach the worker that started
the transfer (one worker, or sticky routing by call id).
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter, OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

if TYPE_CHECKING:
    from voxpipe.config.settings import VoxpipeSettings
    from voxpipe.telephony.twilio_transfer import TransferUrls
    from voxpipe.telephony.warm_transfer import WarmTransfer

__all__ = [
    "RESUME_PARAM",
    "TRANSFERS",
    "TransferConfig",
    "TransferRegistry",
    "parse_targets",
    "transfer_settings",
]

logger = logging.getLogger(__name__)

# Query parameter of the voice webhook URL a returned caller is sent to; reaches the bot as a
# custom parameter, telling it to resume the conversation from the session store.
RESUME_PARAM = "voxpipe_resume"
HOLD_PATH = "/transfer/hold.wav"
_KEEP_FINISHED = 1000  # late callbacks (a leg's "completed") still find their transfer


def parse_targets(value: str | None) -> list[str]:
    """``TRANSFER_TO`` as a list: E.164 numbers and ``sip:`` URIs, in order.

    Raises ValueError naming the bad entry.
    """
    targets = []
    for raw in (value or "").split(","):
        item = raw.strip()
        if not item:
            continue
        if item.lower().startswith("sip:"):
            if "@" not in item or " " in item:
                raise ValueError(f"TRANSFER_TO entry {item!r} is not a sip: URI (sip:user@host)")
        elif not (item.startswith("+") and item[1:].isdigit() and 8 <= len(item) <= 16):
            raise ValueError(f"TRANSFER_TO entry {item!r} is not an E.164 number (+15550001111)")
        targets.append(item)
    return targets


def transfer_settings(
    settings: VoxpipeSettings, carrier: str, needs: Sequence[tuple[str, object]]
) -> dict[str, Any] | None:
    """What every carrier's transfer path takes from the settings (targets, public URL, ring
    timeout, hold audio, caller id), or None (logged) when TRANSFER_TO is unset or bad or one
    of ``needs`` (setting name, value) is not set: escalations then take a message."""
    if not settings.transfer_to:
        return None
    missing = [name for name, value in needs if not value]
    if missing:
        logger.warning(
            "TRANSFER_TO is set but %s is not: %s calls cannot be transferred "
            "(escalations take a message instead)",
            ", ".join(missing),
            carrier,
        )
        return None
    try:
        targets = tuple(parse_targets(settings.transfer_to))
    except ValueError as exc:
        logger.error("%s: escalations take a message instead", exc)
        return None
    return {
        "targets": targets,
        "public_url": (settings.public_url or "").rstrip("/"),
        "ring_timeout_s": settings.transfer_ring_timeout_s,
        "hold_url": settings.transfer_hold_url,
        "from_number": settings.transfer_from,
    }


@dataclass(frozen=True, slots=True)
class TransferConfig:
    """A carrier's configured transfer path (Twilio REST keys, targets, public URL)."""

    account_sid: str
    auth_token: str
    api_base_url: str
    targets: tuple[str, ...]
    public_url: str
    ring_timeout_s: int
    hold_url: str | None
    from_number: str | None

    @classmethod
    def from_settings(cls, settings: VoxpipeSettings) -> TransferConfig | None:
        """The Twilio transfer path, or None (logged) when a setting it needs is missing."""
        s = settings
        common = transfer_settings(
            s,
            "Twilio",
            (
                ("TWILIO_ACCOUNT_SID", s.twilio_account_sid),
                ("TWILIO_AUTH_TOKEN", s.twilio_auth_token),
                ("PUBLIC_URL", s.public_url),
            ),
        )
        if common is None:
            return None
        assert s.twilio_account_sid and s.twilio_auth_token
        return cls(
            account_sid=s.twilio_account_sid,
            auth_token=s.twilio_auth_token.get_secret_value(),
            api_base_url=s.twilio_api_base_url,
            **common,
        )

    def urls(self, call_sid: str) -> TransferUrls:
        """Where Twilio calls back about ``call_sid``'s transfer."""
        from voxpipe.telephony.twilio_transfer import TransferUrls

        base = f"{self.public_url}/transfer/twilio/{quote(call_sid, safe='')}"
        return TransferUrls(
            whisper=f"{base}/whisper",
            answer=f"{base}/answer",
            agent_status=f"{base}/agent-status",
            conference_status=f"{base}/conference-status",
            hold=self.hold_url or f"{self.public_url}{HOLD_PATH}",
            resume=f"{self.public_url}/twilio/voice?{RESUME_PARAM}=transfer",
        )


class TransferRegistry:
    """Transfers by caller call id (live ones, and the last finished ones), and step counts."""

    def __init__(self) -> None:
        self._live: dict[str, WarmTransfer[Any]] = {}
        self._finished: OrderedDict[str, WarmTransfer[Any]] = OrderedDict()
        self.steps: Counter[str] = Counter()  # /metrics: voxpipe_transfer_steps{step}
        self.version = 0  # bumped on every step: the agent desk's event stream follows it
        self._changed = asyncio.Event()

    def add(self, transfer: WarmTransfer[Any]) -> None:
        self._live[transfer.call_sid] = transfer
        self._notify()

    def _notify(self) -> None:
        self.version += 1
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def wait_changed(self, version: int) -> int:
        """Return the registry's version once it differs from ``version``."""
        while self.version == version:
            await self._changed.wait()
        return self.version

    def get(self, call_sid: str) -> WarmTransfer[Any] | None:
        return self._live.get(call_sid) or self._finished.get(call_sid)

    def by_leg(self, leg: str) -> WarmTransfer[Any] | None:
        """The transfer that dialled the agent leg ``leg`` (live ones first)."""
        for transfers in (self._live.values(), reversed(self._finished.values())):
            for transfer in transfers:
                if leg in transfer.legs:
                    return transfer
        return None

    def done(self, transfer: WarmTransfer[Any]) -> None:
        """Move a finished transfer out of the live set (kept a while for late callbacks)."""
        if self._live.get(transfer.call_sid) is transfer:
            del self._live[transfer.call_sid]
        self._finished[transfer.call_sid] = transfer
        while len(self._finished) > _KEEP_FINISHED:
            self._finished.popitem(last=False)
        self._notify()

    def live(self) -> list[WarmTransfer[Any]]:
        return list(self._live.values())

    def count(self, step: str) -> None:
        self.steps[step] += 1
        self._notify()


TRANSFERS = TransferRegistry()
