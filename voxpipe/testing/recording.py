"""Frame-stream recordings: write every frame entering a call with its time, read them back.

File format ``voxpipe-frames`` version 2 (version 1, the same without the sealing, is still
read): UTF-8 JSON lines. The first line is a header ``{"format": "voxpipe-frames", "version":
2, "call_id": ..., "started_at": <unix s>, "encrypted": false, "metadata": {...}}``; each
following line is one frame ``{"t": <seconds since the call started>, "dir": "down"|"up",
"type": <frame class>, "ts": <frame timestamp>, "fields": {...}}``. Bytes are
``{"$b64": "..."}``, nested dataclasses (e.g. words) ``{"$type": "Word", ...fields}``.
Service lines ``{"t": ..., "type": "$service", "service": "stt"|"llm"|"tts", "slot": n, "op":
..., "data": {...}}`` keep what each provider returned (``service_tape``), so a replay can do
without the providers.

Encrypted at rest (``"encrypted": true``, with the transcript key, ``TRANSCRIPT_KEY``): the
header carries ``key_id`` and ``sealed_metadata`` instead of ``metadata``, and each frame line
is ``{"sealed": "<base64>"}``: the frame record sealed with AES-256-GCM, bound to the call id
and its position in the file, so lines cannot be moved between files or reordered unnoticed.

A recording keeps the rules of the transcript (see ``FrameRecorder``): nothing of a caller who
has not consented where consent is asked, silence instead of their audio and no key presses
during a payment pause.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from voxpipe.frames import (
    Frame,
    FrameDirection,
    Word,
    frame_types,
)
from voxpipe.pipelines.clock import Clock

if TYPE_CHECKING:
    from voxpipe.state.crypto import TranscriptCipher

logger = logging.getLogger(__name__)

FORMAT = "voxpipe-frames"
VERSION = 3
_READABLE_VERSIONS = (1, 2, 3)
_SKIP_FIELDS = {"id", "timestamp", "exception"}
_NESTED: dict[str, type[Any]] = {"Word": Word}


class RecordingError(ValueError):
    """A recording file that cannot be read."""


def _encode(value: Any) -> Any:
    if isinstance(value, bytes | bytearray | memoryview):
        return {"$b64": base64.b64encode(bytes(value)).decode("ascii")}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        out = {"$type": type(value).__name__}
        for f in dataclasses.fields(value):
            out[f.name] = _encode(getattr(value, f.name))
        return out
    if isinstance(value, dict):
        return {str(k): _encode(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_encode(v) for v in value]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return repr(value)


def _decode(value: Any) -> Any:
    if isinstance(value, dict):
        if "$b64" in value and len(value) == 1:
            return base64.b64decode(value["$b64"])
        if "$type" in value:
            cls = _NESTED.get(value["$type"])
            if cls is None:
                raise RecordingError(f"unknown nested type {value['$type']!r}")
            return cls(**{k: _decode(v) for k, v in value.items() if k != "$type"})
        return {k: _decode(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_decode(v) for v in value]
    return value


def frame_to_record(frame: Frame, t: float, direction: FrameDirection) -> dict[str, Any]:
    """One frame as a JSON-able record."""
    fields = {
        f.name: _encode(getattr(frame, f.name))
        for f in dataclasses.fields(frame)
        if f.name not in _SKIP_FIELDS
    }
    return {
        "t": t,
        "dir": "down" if direction is FrameDirection.DOWNSTREAM else "up",
        "type": type(frame).__name__,
        "ts": frame.timestamp,
        "fields": fields,
    }


def record_to_frame(rec: dict[str, Any], types: dict[str, type[Frame]] | None = None) -> Frame:
    """Rebuild a frame from its record (a fresh id, the recorded timestamp)."""
    types = types or frame_types()
    cls = types.get(rec.get("type", ""))
    if cls is None:
        raise RecordingError(f"unknown frame type {rec.get('type')!r} in recording")
    kwargs = {k: _decode(v) for k, v in rec.get("fields", {}).items()}
    init_names = {f.name for f in dataclasses.fields(cls) if f.init}
    frame = cls(**{k: v for k, v in kwargs.items() if k in init_names})
    frame.timestamp = float(rec.get("ts", 0.0))
    return frame


def aad(call_id: str, index: int | str) -> str:
    """What a sealed line is bound to: its call and its position in the file."""
    return f"{call_id}#{index}"


SERVICE = "$service"  # the "type" of a service line


@dataclass(slots=True)
class ServiceRecord:
    """A service line: ``t`` seconds into the call, the service's kind and slot, what it did."""

    t: float
    service: str  # stt | llm | tts
    slot: int  # which service of that kind, in pipeline order
    op: str
    data: dict[str, Any] = field(default_factory=dict)


def record_line(rec: dict[str, Any]) -> ServiceRecord:
    """A service line of a recording file as a ``ServiceRecord``."""
    return ServiceRecord(
        float(rec["t"]),
        str(rec["service"]),
        int(rec["slot"]),
        str(rec["op"]),
        dict(rec.get("data") or {}),
    )


@dataclass(slots=True)
class RecordedFrame:
    """A frame read back from a recording, with its time since the call started."""

    t: float
    direction: FrameDirection
    frame: Frame


@dataclass(slots=True)
class Recording:
    """A whole recording: its header and its frames in order."""

    header: dict[str, Any]
    frames: list[RecordedFrame] = field(default_factory=list)
    # What the providers returned (version 3), for ``voxpipe replay --offline``.
    services: list[ServiceRecord] = field(default_factory=list)

    @property
    def duration(self) -> float:
        return self.frames[-1].t if self.frames else 0.0


def _unseal(
    cipher: TranscriptCipher | None, sealed_b64: str, aad: str, key_id: Any, path: str | Path
) -> bytes:
    from voxpipe.state.errors import TranscriptKeyError

    if cipher is None:
        raise RecordingError(
            f"{path}: the recording is encrypted (key id {key_id}): set TRANSCRIPT_KEY to the "
            "transcript key it was recorded with"
        )
    try:
        return cipher.open(base64.b64decode(sealed_b64), aad)
    except (TranscriptKeyError, ValueError) as exc:
        raise RecordingError(
            f"{path}: cannot decrypt the recording with this TRANSCRIPT_KEY (key id "
            f"{cipher.key_id}, recorded with {key_id}): {exc}"
        ) from exc


def iter_recording(
    path: str | Path, *, cipher: TranscriptCipher | None = None
) -> Iterator[RecordedFrame | ServiceRecord | dict[str, Any]]:
    """Yield the header dict (metadata decrypted), then each recorded frame or service line.

    An encrypted recording needs ``cipher`` (the transcript key it was recorded with).
    """
    types = frame_types()
    with Path(path).open(encoding="utf-8") as fh:
        first = fh.readline()
        try:
            header = json.loads(first)
        except json.JSONDecodeError as exc:
            raise RecordingError(f"{path}: not a voxpipe recording (bad header: {exc})") from exc
        if not isinstance(header, dict) or header.get("format") != FORMAT:
            raise RecordingError(f"{path}: not a voxpipe recording (no {FORMAT!r} header)")
        if header.get("version") not in _READABLE_VERSIONS:
            raise RecordingError(
                f"{path}: recording version {header.get('version')} is not supported "
                f"(this voxpipe reads versions {', '.join(map(str, _READABLE_VERSIONS))})"
            )
        encrypted = bool(header.get("encrypted"))
        call_id = str(header.get("call_id") or "")
        key_id = header.get("key_id")
        if encrypted:
            plain = _unseal(
                cipher,
                str(header.get("sealed_metadata", "")),
                aad(call_id, "header"),
                key_id,
                path,
            )
            header = {k: v for k, v in header.items() if k != "sealed_metadata"}
            header["metadata"] = json.loads(plain)
        yield header
        index = 0
        for lineno, line in enumerate(fh, start=2):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
                if encrypted:
                    if not isinstance(rec, dict) or "sealed" not in rec:
                        raise RecordingError(f"{path}:{lineno}: a clear line in an encrypted file")
                    rec = json.loads(
                        _unseal(cipher, rec["sealed"], aad(call_id, index), key_id, path)
                    )
            except json.JSONDecodeError as exc:
                raise RecordingError(f"{path}:{lineno}: bad JSON: {exc}") from exc
            index += 1
            if rec.get("type") == SERVICE:
                yield record_line(rec)
                continue
            direction = (
                FrameDirection.UPSTREAM if rec.get("dir") == "up" else FrameDirection.DOWNSTREAM
            )
            yield RecordedFrame(float(rec["t"]), direction, record_to_frame(rec, types))


def read_recording(path: str | Path, *, cipher: TranscriptCipher | None = None) -> Recording:
    """Read a whole recording into memory (an encrypted one with its ``cipher``)."""
    it = iter_recording(path, cipher=cipher)
    header = next(it)
    assert isinstance(header, dict)
    rec = Recording(header)
    for item in it:
        if isinstance(item, ServiceRecord):
            rec.services.append(item)
        else:
            assert isinstance(item, RecordedFrame)
            rec.frames.append(item)
    return rec


async def replay_frames(recording: Recording, task: Any, *, clock: Clock | None = None) -> None:
    """Feed a recording's frames into a running task at their recorded times (on the task's clock)."""
    clock = clock or task.clock
    t0 = clock.now()
    for item in recording.frames:
        await clock.sleep_until(t0 + item.t)
        if item.direction is FrameDirection.DOWNSTREAM:
            await task.inject(item.frame)
        else:
            await task.queue_frame(item.frame, FrameDirection.UPSTREAM)


# The writer lives in its own module; imported last, as it builds on the format above.
from voxpipe.testing.frame_recorder import (  # noqa: E402
    FrameRecorder,
    pipeline_requires_consent,
)

__all__ = [
    "FORMAT",
    "VERSION",
    "FrameRecorder",
    "RecordedFrame",
    "Recording",
    "RecordingError",
    "SERVICE",
    "ServiceRecord",
    "frame_to_record",
    "iter_recording",
    "pipeline_requires_consent",
    "read_recording",
    "record_to_frame",
    "replay_frames",
]
