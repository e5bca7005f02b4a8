"""Where a call has no transfer path (not Twilio, or TRANSFER_TO / keys / PUBLIC_URL unset), an
escalation tells the model ``{"status": "unavailable"}``, the bot promises no transfer and
takes a message instead; the escalation record says so in the transcript row."""

from __future__ import annotations

import asyncio
from pathlib import Path

from voxpipe.call import load_bot
from voxpipe.config.settings import VoxpipeSettings
from voxpipe.processors.policy.escalation import Escalation
from voxpipe.state.sqlite_store import SqliteTranscriptStore
from voxpipe.telephony.transfers import TransferConfig
from voxpipe.testing import caller_wav, run_wav_call

BOT = Path(__file__).resolve().parents[2] / "bots" / "support_agent.py"


async def test_the_tool_says_unavailable_without_a_transfer_path() -> None:
    escalation = Escalation(transfer=None)
    assert await escalation.escalate("caller asked for a person", "x") == {
        "status": "unavailable",
        "reason": "caller asked for a person",
    }


async def test_a_transfer_that_cannot_move_the_caller_is_unavailable_too() -> None:
    async def refused(reason: str, summary: str) -> None:
        raise RuntimeError("the caller could not be moved to hold")

    result = await Escalation(transfer=refused).escalate("loop", "y")
    assert result["status"] == "unavailable"


def test_twilio_without_keys_or_public_url_has_no_transfer_path() -> None:
    base = {"_env_file": None, "transfer_to": "+15550001111"}
    assert TransferConfig.from_settings(VoxpipeSettings(**base)) is None  # type: ignore[arg-type]
    full = VoxpipeSettings(  # type: ignore[call-arg]
        **base,
        twilio_account_sid="AC" + "0" * 32,
        twilio_auth_token="t",
        public_url="https://voice.example.com/",
    )
    config = TransferConfig.from_settings(full)
    assert config is not None and config.targets == ("+15550001111",)
    assert config.urls("CA1").hold == "https://voice.example.com/transfer/hold.wav"
    bad = VoxpipeSettings(**{**full.model_dump(), "transfer_to": "0800 FLOWERS"})
    assert TransferConfig.from_settings(bad) is None


def test_offline_call_escalation_takes_a_message_and_promises_no_transfer(
    tmp_path: Path,
) -> None:
    wav = caller_wav(["i want to talk to a human", "please call me back"], tmp_path / "caller.wav")
    db = tmp_path / "calls.sqlite3"
    settings = VoxpipeSettings(  # type: ignore[call-arg]
        _env_file=None,
        sqlite_path=str(db),
        spool_dir=str(tmp_path / "spool"),
        transfer_to="+15550001111",  # set, but a WAV call has no carrier to transfer with
    )
    out = run_wav_call(load_bot(BOT), wav, settings=settings, metadata={"call_id": "CAnone"})
    assert out.transcript["end_reason"]

    async def read() -> object:
        store = SqliteTranscriptStore(db)
        await store.start()
        try:
            return await store.read("CAnone", reader="test")
        finally:
            await store.close()

    row = asyncio.run(read())
    assert row is not None
    said = [t.text for t in row.turns if t.role == "assistant"]  # type: ignore[attr-defined]
    assert not any("connecting you" in s.lower() for s in said), said
    # (The caller may talk over the end of it: the line is stored as far as it was heard.)
    assert any(s.startswith("I'm sorry, I can't put you through to a colleague") for s in said)
    assert any("Thank you, I've passed your message on." in s for s in said), said
    record = row.metadata["escalation"]  # type: ignore[attr-defined]
    assert record["outcome"] == "message_taken"
    assert record["reason"] == "caller asked for a person" and record["trigger"] == "request"
    assert record["message"] == "please call me back"


def test_each_carrier_needs_its_own_keys_for_a_transfer_path() -> None:
    """Issue 11 point 3: with TRANSFER_TO and every Twilio key set, Telnyx, Vonage, WebRTC and
    SIP-without-a-dialog calls get no transfer (the tool answers "unavailable" and the bot
    takes a message); a Twilio call with the same settings gets one, and Telnyx / Vonage get
    one once their own keys are set too."""
    import importlib.util
    from types import SimpleNamespace

    spec = importlib.util.spec_from_file_location("support_agent_for_carrier_tests", BOT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    settings = VoxpipeSettings(  # type: ignore[call-arg]
        _env_file=None,
        transfer_to="+15550001111",
        twilio_account_sid="AC" + "0" * 32,
        twilio_auth_token="t",
        public_url="https://voice.example.com",
    )

    def path_for(carrier: str) -> object:
        call = SimpleNamespace(
            carrier=carrier,
            custom_parameters={},
            settings=settings,
            call_id="C1",
            called="+15550009999",
            control=None,  # no SIP dialog to REFER in (a SIP call has one: test_sip_transfer)
            stream_url=(lambda: "wss://voice.example.com/x/stream/t")
            if carrier in ("telnyx", "vonage")
            else None,
        )
        stores = SimpleNamespace(sessions=None, transcripts=None)
        return module._transfer_for(call, None, stores, "en-US", {"by": "tool"})

    for carrier in ("telnyx", "vonage", "webrtc", "sip"):
        assert path_for(carrier) is None, carrier
    assert type(path_for("twilio")).__name__ == "TwilioHandoff"
    import base64

    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.asymmetric.rsa import generate_private_key
    from cryptography.hazmat.primitives.serialization import (
        Encoding,
        NoEncryption,
        PrivateFormat,
        PublicFormat,
    )

    raw = Ed25519PrivateKey.generate().public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    pem = (
        generate_private_key(public_exponent=65537, key_size=2048)
        .private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
        .decode()
    )
    settings = VoxpipeSettings(  # type: ignore[call-arg]
        **{
            **settings.model_dump(),
            "telnyx_api_key": "KEY123",
            "telnyx_connection_id": "conn-1",
            "telnyx_public_key": base64.b64encode(raw).decode(),
            "vonage_application_id": "app-1",
            "vonage_private_key": pem,
            "vonage_signature_secret": "a-vonage-signature-secret-32-chars",
        }
    )
    assert type(path_for("telnyx")).__name__ == "TelnyxHandoff"
    assert type(path_for("vonage")).__name__ == "VonageHandoff"
    assert path_for("webrtc") is None
