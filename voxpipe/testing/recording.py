"""Frame-stream recordings: write every frame entering a call with its time, read them back.

File format ``voxpipe-frames`` version 1: UTF-8 JSON lines. The first line is a header
``{"format": "voxpipe-frames", "version": 1, "call_id": ..., "started_at": <unix s>,
"metadata": {...}}``; each following line is one frame
``{"t": <seconds since the call started>, "dir": "down"|"up", "type": <frame class>,
"ts": <frame timestamp>, "fields": {...}}``. Bytes are ``{"$b64": "..."}``, nested
dataclasses (e.g. words) ``{"$type": "Word", ...fields}``.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from voxpipe.frames import Frame, FrameDirection, Word, frame_types
from voxpipe.pipelines.clock import Clock
from voxpipe.pipelines.observer import Observer

FORMAT = "voxpipe-frames"
VERSION = 1
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


class FrameRecorder(Observer):
    """Observer that writes every frame entering the call, with its time, to a recording file."""

    def __init__(
        self,
        path: str | Path,
        *,
        clock: Clock | None = None,
        call_id: str = "",
        metadata: dict[str, Any] | None = None,
    ) -> None:
        self.path = Path(path)
        self._clock = clock or Clock()
        self._t0: float | None = None
        self._fh: IO[str] | None = self.path.open("w", encoding="utf-8")
        header = {
            "format": FORMAT,
            "version": VERSION,
            "call_id": call_id,
            "started_at": time.time(),
            "metadata": _encode(metadata or {}),
        }
        self._fh.write(json.dumps(header) + "\n")
        self.count = 0

    def on_input(self, frame: Frame, direction: FrameDirection) -> None:
        if self._fh is None:
            return
        now = self._clock.now()
        if self._t0 is None:
            self._t0 = now
        self._fh.write(json.dumps(frame_to_record(frame, now - self._t0, direction)) + "\n")
        self.count += 1

    def on_finish(self) -> None:
        self.close()

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


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

    @property
    def duration(self) -> float:
        return self.frames[-1].t if self.frames else 0.0


def iter_recording(path: str | Path) -> Iterator[RecordedFrame | dict[str, Any]]:
    """Yield the header dict, then each recorded frame."""
    types = frame_types()
    with Path(path).open(encoding="utf-8") as fh:
        first = fh.readline()
        try:
            header = json.loads(first)
        except json.JSONDecodeError as exc:
            raise RecordingError(f"{path}: not a voxpipe recording (bad header: {exc})") from exc
        if not isinstance(header, dict) or header.get("format") != FORMAT:
            raise RecordingError(f"{path}: not a voxpipe recording (no {FORMAT!r} header)")
        if header.get("version") != VERSION:
            raise RecordingError(
                f"{path}: recording version {header.get('version')} is not supported "
                f"(this voxpipe reads version {VERSION})"
            )
        yield header
        for lineno, line in enumerate(fh, start=2):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as exc:
                raise RecordingError(f"{path}:{lineno}: bad JSON: {exc}") from exc
            direction = (
                FrameDirection.UPSTREAM if rec.get("dir") == "up" else FrameDirection.DOWNSTREAM
            )
            yield RecordedFrame(float(rec["t"]), direction, record_to_frame(rec, types))


def read_recording(path: str | Path) -> Recording:
    """Read a whole recording into memory."""
    it = iter_recording(path)
    header = next(it)
    assert isinstance(header, dict)
    rec = Recording(header)
    for item in it:
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
