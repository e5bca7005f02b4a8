"""Warm transfers of Telnyx and Vonage calls: their settings, and the bot's handoff for each.

``TelnyxTransferConfig.from_settings`` / ``VonageTransferConfig.from_settings`` are the
carrier's transfer path, or None (logged) when a setting it needs is missing: then the
escalation tool answers "unavailable" and the bot takes a message. ``TelnyxHandoff`` and
``VonageHandoff`` are the ``transfer(reason, summary)`` callables a bot gives ``Escalation``
(see ``voxpipe.telephony.handoff``). The caller's return to the bot needs a fresh stream URL of
the same call: the server gives the bot one (``Call.stream_url``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar
from urllib.parse import quote

from voxpipe.config.settings import VoxpipeSettings
from voxpipe.telephony.handoff import Handoff
from voxpipe.telephony.telnyx_calls import TelnyxCallControl
from voxpipe.telephony.telnyx_transfer import TelnyxTransfer, TelnyxTransferPlan
from voxpipe.telephony.transfers import HOLD_PATH, TRANSFERS, transfer_settings
from voxpipe.telephony.vonage_calls import VonageVoice, load_private_key
from voxpipe.telephony.vonage_transfer import VonageTransfer, VonageTransferPlan
from voxpipe.telephony.warm_transfer import EscalationRecord, TransferWording

__all__ = [
    "TELNYX_EVENTS_PATH",
    "VONAGE_EVENTS_PATH",
    "TelnyxHandoff",
    "TelnyxTransferConfig",
    "VonageHandoff",
    "VonageTransferConfig",
    "vonage_input_path",
]

logger = logging.getLogger(__name__)

C = TypeVar("C", bound="_CarrierPath")

TELNYX_EVENTS_PATH = "/transfer/telnyx/events"
VONAGE_EVENTS_PATH = "/transfer/vonage/events"


def vonage_input_path(call_uuid: str) -> str:
    """Where the agent's digit for ``call_uuid``'s transfer is sent."""
    return f"/transfer/vonage/{quote(call_uuid, safe='')}/input"


@dataclass(frozen=True, slots=True, kw_only=True)
class _CarrierPath:
    """What every carrier's transfer path has (see ``transfer_settings``)."""

    targets: tuple[str, ...]
    public_url: str
    ring_timeout_s: int
    hold_url: str | None
    from_number: str | None

    @property
    def hold_audio_url(self) -> str:
        return self.hold_url or self.public_url + HOLD_PATH


@dataclass(frozen=True, slots=True, kw_only=True)
class TelnyxTransferConfig(_CarrierPath):
    """The Telnyx transfer path: Call Control key and connection, targets, public URL."""

    api_key: str
    api_base_url: str
    connection_id: str

    @classmethod
    def from_settings(cls, settings: VoxpipeSettings) -> TelnyxTransferConfig | None:
        """The path, or None when TRANSFER_TO or a setting it needs is unset."""
        s = settings
        needs = (
            ("TELNYX_API_KEY", s.telnyx_api_key),
            ("TELNYX_CONNECTION_ID", s.telnyx_connection_id),
            ("TELNYX_PUBLIC_KEY", s.telnyx_public_key),  # our webhook route checks it
            ("PUBLIC_URL", s.public_url),
        )
        common = transfer_settings(s, "Telnyx", needs)
        if common is None:
            return None
        assert s.telnyx_api_key and s.telnyx_connection_id
        return cls(
            api_key=s.telnyx_api_key.get_secret_value(),
            api_base_url=s.telnyx_api_base_url,
            connection_id=s.telnyx_connection_id,
            **common,
        )

    def plan(self, from_number: str, stream_url: Callable[[], str]) -> TelnyxTransferPlan:
        return TelnyxTransferPlan(
            connection_id=self.connection_id,
            from_number=from_number,
            webhook_url=self.public_url + TELNYX_EVENTS_PATH,
            hold_audio_url=self.hold_audio_url,
            resume_stream_url=stream_url,
            ring_timeout_s=self.ring_timeout_s,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class VonageTransferConfig(_CarrierPath):
    """The Vonage transfer path: application id and key, targets, public URL."""

    application_id: str
    private_key: str
    api_base_url: str

    @classmethod
    def from_settings(cls, settings: VoxpipeSettings) -> VonageTransferConfig | None:
        """The path, or None when TRANSFER_TO or a setting it needs is unset."""
        s = settings
        needs = (
            ("VONAGE_APPLICATION_ID", s.vonage_application_id),
            ("VONAGE_PRIVATE_KEY", s.vonage_private_key),
            ("VONAGE_SIGNATURE_SECRET", s.vonage_signature_secret),  # our routes check it
            ("PUBLIC_URL", s.public_url),
        )
        common = transfer_settings(s, "Vonage", needs)
        if common is None:
            return None
        assert s.vonage_application_id and s.vonage_private_key
        try:
            key = load_private_key(s.vonage_private_key.get_secret_value())
        except (OSError, ValueError) as exc:
            logger.error("%s: escalations take a message instead", exc)
            return None
        return cls(
            application_id=s.vonage_application_id,
            private_key=key,
            api_base_url=s.vonage_api_base_url,
            **common,
        )

    def plan(
        self, call_uuid: str, from_number: str, stream_url: Callable[[], str]
    ) -> VonageTransferPlan:
        return VonageTransferPlan(
            from_number=from_number,
            event_url=self.public_url + VONAGE_EVENTS_PATH,
            input_url=self.public_url + vonage_input_path(call_uuid),
            hold_audio_url=self.hold_audio_url,
            resume_stream_url=stream_url,
            ring_timeout_s=self.ring_timeout_s,
        )


class _StreamHandoff(Handoff, Generic[C]):
    """A handoff whose caller returns to the bot on a fresh stream URL of the call."""

    def __init__(
        self,
        config: C,
        *,
        call_id: str,
        called: str,
        stream_url: Callable[[], str],
        **kwargs: Any,
    ) -> None:
        super().__init__(call_id=call_id, **kwargs)
        self.config = config
        self.called = called
        self.stream_url = stream_url

    @property
    def from_number(self) -> str:
        return self.config.from_number or self.called


class TelnyxHandoff(_StreamHandoff[TelnyxTransferConfig]):
    """A Telnyx call's warm transfer (``TelnyxTransfer``) over Call Control."""

    def _new_transfer(self, record: EscalationRecord, wording: TransferWording) -> TelnyxTransfer:
        config = self.config
        return TelnyxTransfer(
            call_control_id=self.call_id,
            targets=list(config.targets),
            control=TelnyxCallControl(config.api_key, base_url=config.api_base_url),
            plan=config.plan(self.from_number, self.stream_url),
            wording=wording,
            record=record,
            on_finish=self._finished,
            count=TRANSFERS.count,
        )


class VonageHandoff(_StreamHandoff[VonageTransferConfig]):
    """A Vonage call's warm transfer (``VonageTransfer``) over the Voice API."""

    def _new_transfer(self, record: EscalationRecord, wording: TransferWording) -> VonageTransfer:
        config = self.config
        return VonageTransfer(
            call_uuid=self.call_id,
            targets=list(config.targets),
            voice=VonageVoice(
                config.application_id, config.private_key, base_url=config.api_base_url
            ),
            plan=config.plan(self.call_id, self.from_number, self.stream_url),
            wording=wording,
            record=record,
            on_finish=self._finished,
            count=TRANSFERS.count,
        )
