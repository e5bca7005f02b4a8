"""The carriers of the warm-transfer harness (test_carrier_transfer.py): one adapter per
carrier that starts its fake, serves the app with that carrier's settings, builds its handoff,
and checks what only that carrier does (its REST commands, its hold, its resumed stream)."""

from __future__ import annotations

import contextlib
import json
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, ClassVar

import httpx
import jwt

from tests.telephony.carrier_rig import CALLED_NUMBER, CALLER_NUMBER, Rig, served
from voxpipe.server.carrier_transfer_routes import stream_url_for
from voxpipe.telephony.carrier_handoffs import (
    TelnyxHandoff,
    TelnyxTransferConfig,
    VonageHandoff,
    VonageTransferConfig,
)
from voxpipe.testing.fakes.telnyx_rest import FakeTelnyxAgent, FakeTelnyxREST
from voxpipe.testing.fakes.vonage_rest import FakeVonageAgent, FakeVonageREST

A, B = "+442079460001", "+442079460002"
BRIEF = (
    "Reason: caller asked for a person. Summary: Billing question about a double "
    "charge. Press 1 to take the call."
)


class Carrier(ABC):
    """What the scenarios need from a carrier; the subclasses fill it in."""

    name: ClassVar[str]
    call: ClassVar[str]  # the caller's call id
    fake_class: ClassVar[type[Any]]
    agent_class: ClassVar[type[Any]]
    config_class: ClassVar[Any]
    handoff_class: ClassVar[type[Any]]
    events_url_field: ClassVar[str]  # the fake call's field: where its own events go
    callback_step: ClassVar[str]  # a transfer step its signed callbacks count in /metrics
    # Nobody takes the call: the second number's script, the attempts and the outcome.
    second_unanswered: ClassVar[str]
    unanswered_results: ClassVar[list[str]]
    unanswered_outcome: ClassVar[str]

    def agent(self, script: str, **kw: Any) -> Any:
        return self.agent_class(script, **kw)

    @contextlib.asynccontextmanager
    async def rig(
        self, tmp_path: Path, agents: dict[str, Any], scale: float = 0.01
    ) -> AsyncIterator[tuple[Any, Rig, Any]]:
        """The fake carrier, the served app and a handoff for ``call``, the session seeded."""
        async with self.fake_class(agents=agents, timeout_scale=scale) as fake:
            async with served(tmp_path, transfer_to=f"{A},{B}", **self.settings(fake)) as r:
                # The carrier's event URL is our route: the caller's own events reach us.
                events_url = r.url + f"/transfer/{self.name}/events"
                fake.add_call(self.call, **{self.events_url_field: events_url})
                await r.seed(self.call)
                config = self.config_class.from_settings(r.settings)
                assert config is not None
                stream_url = stream_url_for(
                    r.state, self.name, self.call, caller=CALLER_NUMBER, called=CALLED_NUMBER
                )
                assert stream_url is not None
                handoff = self.handoff_class(
                    config,
                    call_id=self.call,
                    called=CALLED_NUMBER,
                    stream_url=stream_url,
                    **r.handoff_kwargs(self.call),
                )
                yield fake, r, handoff

    def caller_events_elsewhere(self, fake: Any) -> None:
        """The caller's own events go to a URL that is not ours."""
        setattr(fake.calls[self.call], self.events_url_field, None)

    def goodbye(self) -> list[dict[str, Any]]:
        """What the carrier sends when the caller hangs up the resumed stream."""
        return []

    # What only the carrier knows (each subclass defines them): -------------------------
    @abstractmethod
    def settings(self, fake: Any) -> dict[str, Any]: ...
    @abstractmethod
    async def check_connected(self, fake: Any, r: Rig, agent: Any, record: Any) -> None: ...
    @abstractmethod
    def check_declined_then_connected(self, first: Any, second: Any) -> None: ...
    @abstractmethod
    def check_returned(self, fake: Any, r: Rig) -> Any: ...  # the resumed stream's endpoint
    @abstractmethod
    def stream_uri(self, endpoint: Any) -> str: ...
    @abstractmethod
    def hello(self, fake: Any, endpoint: Any) -> list[dict[str, Any]]: ...
    @abstractmethod
    def ringing(self, fake: Any) -> Callable[[], bool]: ...
    @abstractmethod
    async def check_agent_leg_ended(self, fake: Any, agent: Any) -> None: ...
    @abstractmethod
    def forged(self, r: Rig, fake: Any) -> list[tuple[str, dict[str, Any]]]: ...
    @abstractmethod
    def check_not_joined(self, fake: Any, agent: Any) -> None: ...


class Telnyx(Carrier):
    """Telnyx Call Control: ``FakeTelnyxREST``, Ed25519-signed webhooks."""

    name = "telnyx"
    call = "v3:caller-call-control-id"
    fake_class = FakeTelnyxREST
    agent_class = FakeTelnyxAgent
    config_class = TelnyxTransferConfig
    handoff_class = TelnyxHandoff
    events_url_field = "webhook_url"
    callback_step = "callback_telnyx_event"
    second_unanswered = "reject"
    unanswered_results = ["no_answer", "declined"]
    unanswered_outcome = "declined"

    def settings(self, fake: FakeTelnyxREST) -> dict[str, Any]:
        return {
            "telnyx_public_key": fake.public_key,
            "telnyx_api_key": fake.api_key,
            "telnyx_connection_id": "conn-1",
            "telnyx_api_base_url": fake.url,
        }

    async def check_connected(
        self, fake: FakeTelnyxREST, r: Rig, agent: Any, record: dict[str, Any]
    ) -> None:
        caller = fake.calls[self.call]
        assert caller.commands() == ["streaming_stop", "playback_start", "playback_stop"]
        assert caller.actions[1][1]["audio_url"] == r.url + "/transfer/hold.wav"
        assert (agent.to, agent.from_, agent.connection_id) == (A, CALLED_NUMBER, "conn-1")
        assert agent.webhook_url == r.url + "/transfer/telnyx/events"
        assert agent.bridged_with == self.call
        assert all(w.status == 200 for w in fake.webhooks)

    def check_declined_then_connected(self, first: Any, second: Any) -> None:
        assert first.commands() == ["gather_using_speak", "hangup"]
        assert second.bridged_with == self.call

    def check_returned(self, fake: FakeTelnyxREST, r: Rig) -> dict[str, Any]:
        caller = fake.calls[self.call]
        assert caller.commands()[-2:] == ["playback_stop", "streaming_start"]
        resume: dict[str, Any] = caller.actions[-1][1]
        assert resume["stream_url"].startswith(
            r.url.replace("http://", "ws://") + "/telnyx/stream/"
        )
        return resume

    def stream_uri(self, endpoint: dict[str, Any]) -> str:
        return str(endpoint["stream_url"])

    def hello(self, fake: FakeTelnyxREST, endpoint: dict[str, Any]) -> list[dict[str, Any]]:
        # Telnyx opens the new stream; its start carries the client_state we set.
        start = {
            "call_control_id": self.call,
            "call_session_id": fake.calls[self.call].session_id,
            "from": CALLER_NUMBER,
            "to": CALLED_NUMBER,
            "client_state": endpoint["client_state"],
            "media_format": {"encoding": "PCMU", "sample_rate": 8000, "channels": 1},
        }
        return [
            {"event": "connected", "version": "1.0.0"},
            {"event": "start", "sequence_number": "1", "start": start, "stream_id": "st-2"},
        ]

    def goodbye(self) -> list[dict[str, Any]]:
        return [{"event": "stop", "stream_id": "st-2"}]

    def ringing(self, fake: FakeTelnyxREST) -> Callable[[], bool]:
        return lambda: bool(fake.dialled)

    async def check_agent_leg_ended(self, fake: FakeTelnyxREST, agent: Any) -> None:
        assert agent.commands() == ["hangup"] and not agent.alive

    def forged(self, r: Rig, fake: FakeTelnyxREST) -> list[tuple[str, dict[str, Any]]]:
        body = json.dumps(
            {"data": {"event_type": "call.hangup", "payload": {"call_control_id": self.call}}}
        ).encode()
        forged = {"telnyx-signature-ed25519": "AAAA", "telnyx-timestamp": "1700000000"}
        url = r.url + "/transfer/telnyx/events"
        return [(url, {"content": body, "headers": h}) for h in ({}, forged)]

    def check_not_joined(self, fake: FakeTelnyxREST, agent: Any) -> None:
        # Pressing 1 found the call ended (Call Control answered 422): the agent is released.
        assert agent.bridged_with is None and not agent.alive
        assert agent.commands() == ["gather_using_speak", "hangup"]


class Vonage(Carrier):
    """The Vonage Voice API: ``FakeVonageREST``, JWT-signed event and input webhooks."""

    name = "vonage"
    call = "63f61863-4a51-4f6b-86e1-46edebcf9356"
    fake_class = FakeVonageREST
    agent_class = FakeVonageAgent
    config_class = VonageTransferConfig
    handoff_class = VonageHandoff
    events_url_field = "event_url"
    callback_step = "callback_vonage_input"
    second_unanswered = "busy"
    unanswered_results = ["no_answer", "busy"]
    unanswered_outcome = "no_answer"

    @property
    def conversation(self) -> str:
        return f"voxpipe-{self.call}"

    def settings(self, fake: FakeVonageREST) -> dict[str, Any]:
        return {
            "vonage_signature_secret": fake.signature_secret,
            "vonage_application_id": fake.application_id,
            "vonage_private_key": fake.private_key_pem,
            "vonage_api_base_url": fake.url,
        }

    async def check_connected(
        self, fake: FakeVonageREST, r: Rig, agent: Any, record: dict[str, Any]
    ) -> None:
        # The caller was moved off the bot's websocket into a conversation named after the
        # call, hearing the hold line then our hold audio; it ends when they leave.
        hold = fake.calls[self.call].transfers[0]
        assert hold[0] == {
            "action": "talk",
            "text": "Please hold.",
            "language": "en-GB",
            "bargeIn": False,
        }
        assert hold[1] == {
            "action": "conversation",
            "name": self.conversation,
            "musicOnHoldUrl": [r.url + "/transfer/hold.wav"],
            "startOnEnter": False,
            "endOnExit": True,
        }
        async with httpx.AsyncClient() as client:
            music = await client.get(hold[1]["musicOnHoldUrl"][0])
        assert music.status_code == 200 and music.headers["content-type"] == "audio/wav"
        # The agent was dialled from the number called, then pressed 1.
        assert (agent.to, agent.from_, agent.ringing_timer) == ("442079460001", "442079460000", 20)
        conv = fake.conversations[self.conversation]
        assert conv.started and conv.participants == [self.call, agent.uuid]
        assert all(w.status in (200, 204) for w in fake.webhooks)
        inputs = [w for w in fake.webhooks if w.kind == "input"]
        assert inputs[0].answer == [
            {
                "action": "conversation",
                "name": self.conversation,
                "startOnEnter": True,
                "endOnExit": True,
            }
        ]
        assert record["attempts"][0]["uuid"] == agent.uuid

    def check_declined_then_connected(self, first: Any, second: Any) -> None:
        assert first.digits_sent == ["2"]
        assert first.conversation is None and second.conversation == self.conversation

    def check_returned(self, fake: FakeVonageREST, r: Rig) -> dict[str, Any]:
        assert [d.status for d in fake.dialled] == ["timeout", "busy"]
        # The caller was connected to a new websocket of the same call, with the resume marker.
        caller = fake.calls[self.call]
        assert caller.alive and caller.conversation is None
        endpoint = caller.websocket
        assert endpoint is not None and endpoint["type"] == "websocket"
        assert endpoint["headers"] == {"uuid": self.call, "voxpipe_resume": "transfer"}
        return endpoint

    def stream_uri(self, endpoint: dict[str, Any]) -> str:
        return str(endpoint["uri"])

    def hello(self, fake: FakeVonageREST, endpoint: dict[str, Any]) -> list[dict[str, Any]]:
        # Vonage opens it: the server accepts the stream token and the bot gets the call back.
        connected = {"event": "websocket:connected", "content-type": endpoint["content-type"]}
        return [{**connected, **endpoint["headers"]}]

    def ringing(self, fake: FakeVonageREST) -> Callable[[], bool]:
        return lambda: bool(fake.dialled) and fake.dialled[0].status == "ringing"

    async def check_agent_leg_ended(self, fake: FakeVonageREST, agent: Any) -> None:
        await fake.wait_for(lambda: agent.status == "cancelled")

    def forged(self, r: Rig, fake: FakeVonageREST) -> list[tuple[str, dict[str, Any]]]:
        body = json.dumps({"uuid": self.call, "status": "completed"}).encode()
        forged = jwt.encode(
            {"iat": 1, "jti": "x"}, "not-the-signature-secret-of-32-chars", algorithm="HS256"
        )
        events = r.url + "/transfer/vonage/events"
        digits = {"uuid": fake.dialled[0].uuid, "dtmf": {"digits": "1"}}
        return [
            (events, {"content": body, "headers": {}}),
            (events, {"content": body, "headers": {"Authorization": f"Bearer {forged}"}}),
            (f"{r.url}/transfer/vonage/{self.call}/input", {"json": digits}),
        ]

    def check_not_joined(self, fake: FakeVonageREST, agent: Any) -> None:
        # Pressing 1 found the caller gone (GET /v1/calls/{uuid}): the agent is released.
        assert agent.digits_sent == ["1"] and agent.conversation is None and not agent.alive
        inputs = [w for w in fake.webhooks if w.kind == "input"]
        assert inputs[0].answer == [
            {
                "action": "talk",
                "text": "The caller has hung up.",
                "language": "en-GB",
                "bargeIn": False,
            }
        ]


CARRIERS = [Telnyx(), Vonage()]
