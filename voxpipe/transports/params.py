"""TransportParams: the audio formats, VAD and interruption settings of one call's transport."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from voxpipe.audio.convert import bytes_per_sample
from voxpipe.pipelines.task import TaskParams
from voxpipe.processors.policy.guard import InterruptionGuardParams
from voxpipe.processors.turn.params import TurnParams
from voxpipe.processors.vad.analyzer import VADParams
from voxpipe.transports.wire import AudioFormat

__all__ = ["MEDIA_STREAM_CHUNK_MS", "TransportParams"]

# Served media websockets (Twilio, Telnyx, Vonage) send the bot's audio in 60 ms messages: the
# far end buffers what it gets, and the output keeps ``output_lead_secs`` ahead either way, so
# one message, one timer wake-up and one socket write per 60 ms instead of per 20 ms. A wire
# that plays whole 20 ms frames only (Vonage) still gets them as separate messages. RTP (SIP,
# WebRTC) keeps 20 ms packets. Replays of served calls use it too, to send the same audio.
MEDIA_STREAM_CHUNK_MS = 60


@dataclass(slots=True)
class TransportParams:
    """Settings of a transport pair (input and output) for one call.

    ``audio_in``/``audio_out`` are the wire's formats (phone lines: mu-law 8 kHz both ways).
    Input audio enters the pipeline in ``audio_in`` unchanged; output audio is converted to
    ``audio_out`` and sent in ``chunk_ms`` chunks, ``output_lead_secs`` ahead of real time.

    The lead (default 0.1 s) is what the far end holds in its buffer: it absorbs event-loop
    stalls (a busy worker's batched VAD tick takes tens of ms) and network jitter without
    a gap in the bot's voice, and costs nothing at barge-in, since the flush empties that
    buffer. It bounds what a caller still hears on a wire that has no flush, and the error
    of the played position where the wire has no marks, so it stays small.

    ``bot_stop_secs``: after the bot's audio has played, how long the output waits for more
    before it reports the bot stopped, so a reply whose next sentence comes a little late is
    one utterance (none after ``TTSStoppedFrame``: the reply is known to be over).
    ``mark_timeout_secs``: how long past the expected play-out a mark echo may take before
    the output stops waiting for it (and stops using marks on this call).
    ``hangup_timeout_secs``: when the caller hangs up the call ends gracefully (the
    transcript is kept), but is cancelled if it has not ended this long after.
    """

    audio_in: AudioFormat = field(default_factory=AudioFormat)
    audio_out: AudioFormat = field(default_factory=AudioFormat)
    vad_enabled: bool = True
    vad_params: VADParams = field(default_factory=VADParams)
    # End of turn after the VAD's stop (voxpipe.processors.turn); None: the VAD's stop ends it.
    turn: TurnParams | None = None
    allow_interruptions: bool = True
    guard: InterruptionGuardParams = field(default_factory=InterruptionGuardParams)
    dtmf_interrupts: bool = True
    output_lead_secs: float = 0.1
    chunk_ms: int = 20
    bot_stop_secs: float = 0.3
    use_marks: bool = True
    mark_timeout_secs: float = 1.0
    hangup_timeout_secs: float = 3.0

    def __post_init__(self) -> None:
        for name in ("audio_in", "audio_out"):
            fmt: AudioFormat = getattr(self, name)
            bytes_per_sample(fmt.encoding)  # raises on an unknown encoding
            if fmt.channels != 1:
                raise ValueError(
                    f"TransportParams.{name} has {fmt.channels} channels: voxpipe transports carry "
                    "mono audio; mix down to one channel at the wire"
                )
            if fmt.sample_rate <= 0:
                raise ValueError(f"TransportParams.{name}.sample_rate must be positive")
        if not 5 <= self.chunk_ms <= 200:
            raise ValueError(f"TransportParams.chunk_ms must be within 5..200, got {self.chunk_ms}")
        if self.audio_out.sample_rate * self.chunk_ms % 1000:
            raise ValueError(
                f"{self.chunk_ms} ms at {self.audio_out.sample_rate} Hz is not a whole number of "
                "samples; pick a chunk_ms that divides evenly"
            )
        for name in (
            "output_lead_secs",
            "bot_stop_secs",
            "mark_timeout_secs",
            "hangup_timeout_secs",
        ):
            if getattr(self, name) < 0:
                raise ValueError(f"TransportParams.{name} must be >= 0, got {getattr(self, name)}")

    @property
    def chunk_bytes(self) -> int:
        """Bytes of one output chunk in ``audio_out``."""
        fmt = self.audio_out
        return fmt.sample_rate * self.chunk_ms // 1000 * bytes_per_sample(fmt.encoding)

    def task_params(self, metadata: dict[str, Any] | None = None, **kwargs: Any) -> TaskParams:
        """TaskParams for a call on this transport: the wire's rates, encodings in the metadata."""
        meta = dict(metadata or {})
        meta.setdefault("audio_in_encoding", self.audio_in.encoding)
        meta.setdefault("audio_out_encoding", self.audio_out.encoding)
        kwargs.setdefault("allow_interruptions", self.allow_interruptions)
        return TaskParams(
            audio_in_sample_rate=self.audio_in.sample_rate,
            audio_out_sample_rate=self.audio_out.sample_rate,
            metadata=meta,
            **kwargs,
        )
