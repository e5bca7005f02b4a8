"""FrameRecorder: writes the frames entering a call to a ``voxpipe-frames`` recording, under
the transcript's rules (consent, payment pauses, the transcript key)."""

from __future__ import annotations

import base64
import json
import logging
import os
import time
from collections import deque
from collections.abc import Iterable
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from voxpipe.frames import (
    Frame,
    FrameDirection,
    PauseRecordingFrame,
    ResumeRecordingFrame,
    RetentionConsentFrame,
)
from voxpipe.pipelines.clock import Clock
from voxpipe.pipelines.observer import Observer
from voxpipe.testing.recording import FORMAT, VERSION, _decode, _encode, aad, frame_to_record

if TYPE_CHECKING:
    from voxpipe.processors.base import FrameProcessor
    from voxpipe.state.crypto import TranscriptCipher

__all__ = ["FrameRecorder", "pipeline_requires_consent"]

logger = logging.getLogger(__name__)

# Frames that change what a recording may keep, seen wherever they are pushed in the pipeline.
_RETENTION_FRAMES = (PauseRecordingFrame, ResumeRecordingFrame, RetentionConsentFrame)
# The byte of digital silence per sample byte, by wire encoding (pcm16 and others: zero).
_SILENCE_BYTE = {"mulaw": 0xFF, "alaw": 0xD5}


def pipeline_requires_consent(processors: Iterable[FrameProcessor]) -> bool:
    """True when the call's bot asks for retention consent before keeping anything: it has a
    ``ConsentGate``, or a ``TranscriptRecorder`` built to wait for consent."""
    from voxpipe.processors.aggregators.transcript import TranscriptRecorder
    from voxpipe.processors.policy.consent import ConsentGate

    return any(
        isinstance(p, ConsentGate) or (isinstance(p, TranscriptRecorder) and p.require_consent)
        for p in processors
    )


class FrameRecorder(Observer):
    """Observer that writes the frames entering a call, with their times, to a recording file,
    under the transcript's rules.

    * Consent: with ``require_consent`` the frames are held in memory (at most
      ``max_pending_bytes``; beyond that they are dropped and counted) until the caller's choice
      is seen (a ``RetentionConsentFrame`` anywhere in the pipeline); audio beyond the bound is
      dropped, other frames (key presses) are always held. Granted: the held frames
      are written (the replay needs the key press that granted it) and recording goes on.
      Refused, or never given by the end of the call: nothing is written, no file is created.
      A refusal later in the call (a withdrawal) deletes the file.
    * Payment: between ``PauseRecordingFrame`` and ``ResumeRecordingFrame`` (seen at their first
      hop, the moment the policy pauses) the caller's audio is recorded as silence of the same
      length, so the replay keeps its timing, and key presses are dropped. Frames reach the file
      ``holdback_s`` of call time late: a pause also silences the caller audio (and drops the key
      presses) of that span before it, which holds a card number read out unprompted that the
      payment guard only detected in the final transcript.
    * At rest: with a ``cipher`` (the transcript key) every frame line and the metadata are
      sealed with AES-256-GCM; the file is created readable by its owner only.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        clock: Clock | None = None,
        call_id: str = "",
        metadata: dict[str, Any] | None = None,
        cipher: TranscriptCipher | None = None,
        require_consent: bool = False,
        max_pending_bytes: int = 8 * 1024 * 1024,
        holdback_s: float = 20.0,
    ) -> None:
        self.path = Path(path)
        self.call_id = call_id
        self._clock = clock or Clock()
        self._cipher = cipher
        self._t0: float | None = None
        self._fh: IO[str] | None = None
        self._metadata = _encode(metadata or {})
        self._started_at = time.time()
        # None: consent awaited (frames held); True: recording; False: refused, nothing kept.
        self.consent: bool | None = None if require_consent else True
        self.require_consent = require_consent
        self.paused = False
        self.max_pending_bytes = max_pending_bytes
        self._pending: list[dict[str, Any]] = []
        self._pending_bytes = 0
        self.dropped_before_consent = 0
        self.holdback_s = holdback_s
        self._recent: deque[dict[str, Any]] = deque()  # allowed, not yet written (holdback)
        self.silenced = 0  # audio frames recorded as silence (payment pause)
        self.dropped_keys = 0  # key presses not recorded (payment pause)
        self.count = 0  # frame lines written
        if not require_consent:
            self._open()

    # ------------------------------------------------------------------ observer hooks

    def on_push(
        self, src: FrameProcessor, dst: FrameProcessor, frame: Frame, direction: FrameDirection
    ) -> None:
        if not isinstance(frame, _RETENTION_FRAMES):
            return
        if isinstance(frame, PauseRecordingFrame):
            if not self.paused:
                self._silence_held()
            self.paused = True
        elif isinstance(frame, ResumeRecordingFrame):
            self.paused = False
        elif frame.granted:
            self._grant()
        else:
            self.refuse()

    def on_input(self, frame: Frame, direction: FrameDirection) -> None:
        if self.consent is False:
            return
        now = self._clock.now()
        if self._t0 is None:
            self._t0 = now
        rec = frame_to_record(frame, now - self._t0, direction)
        if self.paused and not self._silence(rec):
            return
        if self.consent is None:
            self._hold(rec)
        else:
            self._keep(rec)

    def service(self, rec: dict[str, Any]) -> None:
        """A service line (``service_tape``): kept under the same consent and pause rules."""
        if self.consent is False:
            return
        now = self._clock.now()
        if self._t0 is None:
            self._t0 = now
        rec = {"t": now - self._t0, **rec}
        if self.consent is None:
            self._hold(rec)
        else:
            self._keep(rec)

    def on_finish(self) -> None:
        if self.consent is None:
            # The call ended before the caller chose: nothing of it is kept.
            self._pending.clear()
            self.consent = False
        self.close()

    # ------------------------------------------------------------------ consent

    def _grant(self) -> None:
        if self.consent is not None:
            return
        self.consent = True
        self._open()
        pending, self._pending = self._pending, []
        for rec in pending:
            self._keep(rec)

    def refuse(self) -> None:
        """The caller declined or withdrew consent: stop, and delete what was recorded."""
        if self.consent is False:
            return
        self.consent = False
        self._pending.clear()
        self._recent.clear()
        if self._fh is not None:
            self.close()
            self.path.unlink(missing_ok=True)
            logger.info("consent refused: recording %s deleted", self.path.name)

    def _hold(self, rec: dict[str, Any]) -> None:
        size = len(json.dumps(rec))
        # Only audio is dropped over the bound: the key press that decides consent must stay
        # for the replay to pass the consent gate as the call did.
        if rec["type"] == "InputAudioFrame" and self._pending_bytes + size > self.max_pending_bytes:
            self.dropped_before_consent += 1
            if self.dropped_before_consent == 1:
                logger.warning(
                    "recording %s: %d bytes held while waiting for consent; later audio "
                    "before the caller's choice is not recorded",
                    self.path.name,
                    self._pending_bytes,
                )
            return
        self._pending.append(rec)
        self._pending_bytes += size

    # ------------------------------------------------------------------ payment pauses

    def _silence(self, rec: dict[str, Any]) -> bool:
        """Make ``rec`` keep nothing of the caller (audio -> silence); False to drop it."""
        if rec["type"] == "DTMFFrame":
            self.dropped_keys += 1
            return False
        if rec["type"] == "InputAudioFrame":
            fields = rec["fields"]
            size = len(_decode(fields["audio"]))
            byte = _SILENCE_BYTE.get(str(fields.get("encoding", "pcm16")), 0)
            fields["audio"] = _encode(bytes([byte]) * size)
            self.silenced += 1
        return True

    def _silence_held(self) -> None:
        """A pause started: what is not written yet (holdback, before consent) is silenced too."""
        self._recent = deque(r for r in self._recent if self._silence(r))
        self._pending = [r for r in self._pending if self._silence(r)]

    def _keep(self, rec: dict[str, Any]) -> None:
        self._recent.append(rec)
        horizon = rec["t"] - self.holdback_s
        while self._recent and self._recent[0]["t"] < horizon:
            self._write(self._recent.popleft())

    # ------------------------------------------------------------------ the file

    def _open(self) -> None:
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        self._fh = os.fdopen(fd, "w", encoding="utf-8")
        header: dict[str, Any] = {
            "format": FORMAT,
            "version": VERSION,
            "call_id": self.call_id,
            "started_at": self._started_at,
            "encrypted": self._cipher is not None,
            "consent_required": self.require_consent,
            "dropped_before_consent": self.dropped_before_consent,
        }
        if self._cipher is None:
            header["metadata"] = self._metadata
        else:
            header["key_id"] = self._cipher.key_id
            sealed = self._cipher.seal(
                json.dumps(self._metadata).encode(), aad(self.call_id, "header")
            )
            header["sealed_metadata"] = base64.b64encode(sealed).decode("ascii")
        self._fh.write(json.dumps(header) + "\n")

    def _write(self, rec: dict[str, Any]) -> None:
        if self._fh is None:
            return
        line = json.dumps(rec)
        if self._cipher is not None:
            sealed = self._cipher.seal(line.encode(), aad(self.call_id, self.count))
            line = json.dumps({"sealed": base64.b64encode(sealed).decode("ascii")})
        self._fh.write(line + "\n")
        self.count += 1

    def close(self) -> None:
        """Write what is held back and close the file."""
        while self._recent:
            self._write(self._recent.popleft())
        if self._fh is not None:
            self._fh.close()
            self._fh = None
