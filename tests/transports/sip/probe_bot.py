"""A test bot: the echo bot behind a consent gate, recording what each call saw."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from voxpipe.call import Call
from voxpipe.frames import DTMFFrame, Frame, FrameDirection, RetentionConsentFrame
from voxpipe.pipelines import Pipeline
from voxpipe.processors.base import FrameProcessor
from voxpipe.processors.policy.consent import ConsentGate
from voxpipe.state.consent import MemoryConsentStore

_spec = importlib.util.spec_from_file_location(
    "sip_probe_echo", Path(__file__).resolve().parents[3] / "bots" / "echo.py"
)
assert _spec is not None and _spec.loader is not None
_echo = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_echo)

SEEN: list[dict[str, Any]] = []


class Probe(FrameProcessor):
    """Records digits and consent decisions passing by."""

    def __init__(self, rec: dict[str, Any]) -> None:
        super().__init__()
        self.rec = rec

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        if isinstance(frame, DTMFFrame):
            self.rec["dtmf"].append(frame.digit)
        elif isinstance(frame, RetentionConsentFrame):
            self.rec["consent"].append((frame.granted, frame.source))
        await self.push_frame(frame, direction)


async def bot(call: Call) -> Pipeline:
    rec: dict[str, Any] = {"call": call, "dtmf": [], "consent": []}
    SEEN.append(rec)
    gate = ConsentGate(MemoryConsentStore(), caller=call.caller, call_id=call.call_id)
    return Pipeline(
        [
            call.transport.input(),
            Probe(rec),
            gate,
            Probe(rec),
            _echo.Echo(),
            call.transport.output(),
        ]
    )
