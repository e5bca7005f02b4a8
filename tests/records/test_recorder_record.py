"""A call run through the TranscriptRecorder leaves a record with its consent, escalation
summary and payment pauses, sealed at rest."""

from __future__ import annotations

from pathlib import Path

from records_helpers import make_settings, new_key

from voxpipe.frames import (
    PauseRecordingFrame,
    ResumeRecordingFrame,
    TranscriptionFrame,
    UserStartedSpeakingFrame,
    UserStoppedSpeakingFrame,
)
from voxpipe.pipelines.clock import Clock
from voxpipe.processors.aggregators import LLMContext, UserContextAggregator
from voxpipe.processors.aggregators.assistant import AssistantContextAggregator
from voxpipe.processors.aggregators.transcript import TranscriptRecorder
from voxpipe.records.runtime import backend_of
from voxpipe.state.shared import close_shared_stores, shared_stores
from voxpipe.testing import Sleep, run_frames


def user_turn(text: str) -> list[object]:
    return [
        UserStartedSpeakingFrame(),
        TranscriptionFrame(text),
        UserStoppedSpeakingFrame(),
        Sleep(0.01),
    ]


async def test_recorder_meta_reaches_the_sealed_record(tmp_path: Path) -> None:
    kek = new_key()
    s = make_settings(tmp_path, records_kek=kek)
    stores = await shared_stores(s)
    try:
        context = LLMContext("be brief")
        assistant = AssistantContextAggregator(context)
        recorder = TranscriptRecorder(
            assistant,
            sessions=stores.sessions,
            transcripts=stores.transcripts,
            call_id="CA1",
            meta={"caller": "+447700900123", "carrier": "twilio"},
        )
        recorder.meta["consent"] = "dtmf"
        await recorder.mark_escalated("billing", "caller wants a refund for order 5512")
        frames = [
            *user_turn("hello"),
            PauseRecordingFrame(),
            *user_turn("my card is 4111 1111 1111 1111"),
            ResumeRecordingFrame(),
            *user_turn("thanks"),
        ]
        await run_frames(
            [UserContextAggregator(context), assistant, recorder], frames, clock=Clock()
        )
        backend = backend_of(stores.transcripts)
        assert backend is not None
        record = await backend.calls.get("CA1")
        assert record is not None
        assert record["consent"] == "dtmf"
        assert record["escalation"]["reason"] == "billing"
        assert record["escalation"]["summary"] == "caller wants a refund for order 5512"
        pauses = record["payment_pauses"]
        assert len(pauses) == 1 and pauses[0]["start"] <= pauses[0]["end"]
        assert [t["text"] for t in record["turns"]] == ["hello", "thanks"]
        raw = repr(await backend.db.fetch("SELECT metadata, escalation_reason FROM transcripts"))
        assert "refund" not in raw and "billing" not in raw and "dtmf" not in raw
    finally:
        await close_shared_stores()
