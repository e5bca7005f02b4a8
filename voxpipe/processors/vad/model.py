"""Silero VAD (ONNX) on onnxruntime: one shared session, per-stream recurrent state.

The model takes a window of 512 samples at 16 kHz (256 at 8 kHz) with the last 64 (32)
samples of the previous window prepended as context, a recurrent state of shape
[2, batch, 128], and the sample rate; it returns the speech probability per batch row and
the next state. Audio is float32 in [-1, 1).
"""

from __future__ import annotations

import logging
import math
import threading
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

__all__ = ["SileroVADModel", "SileroVADStream", "window_samples", "SUPPORTED_SAMPLE_RATES"]

# sample rate -> (window samples, context samples), as the model was trained.
_GEOMETRY: dict[int, tuple[int, int]] = {8000: (256, 32), 16000: (512, 64)}
SUPPORTED_SAMPLE_RATES = tuple(_GEOMETRY)
STATE_SIZE = 128
_SCALE = np.float32(1.0 / 32768.0)

PCMWindow = bytes | bytearray | memoryview | np.ndarray


def window_samples(sample_rate: int) -> int:
    """Samples per VAD window at ``sample_rate`` (256 at 8 kHz, 512 at 16 kHz)."""
    return _geometry(sample_rate)[0]


def _geometry(sample_rate: int) -> tuple[int, int]:
    try:
        return _GEOMETRY[sample_rate]
    except KeyError:
        raise ValueError(
            f"Silero VAD runs at 8000 or 16000 Hz, not {sample_rate}; resample the audio first "
            "(VADAnalyzer does this for you)"
        ) from None


def _default_model_path() -> Path:
    return Path(str(resources.files("voxpipe.processors.vad") / "data" / "silero_vad.onnx"))


class SileroVADModel:
    """The Silero VAD ONNX model in one onnxruntime session, shared by every stream of a process."""

    _shared: SileroVADModel | None = None
    _shared_lock = threading.Lock()

    def __init__(self, path: str | Path | None = None) -> None:
        try:
            import onnxruntime as ort  # type: ignore[import-untyped]
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise ImportError(
                "voxpipe.processors.vad needs the 'audio' extra: pip install 'voxpipe[audio]'"
            ) from exc
        self.path = Path(path) if path is not None else _default_model_path()
        if not self.path.is_file():
            raise FileNotFoundError(
                f"Silero VAD model not found at {self.path}; reinstall voxpipe (the model ships "
                "as package data) or pass the path of silero_vad.onnx"
            )
        opts = ort.SessionOptions()
        # One thread each: many calls share a core, and batching (not threads) is how
        # throughput scales; extra threads only add contention with the event loop.
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self._session = ort.InferenceSession(
            str(self.path), sess_options=opts, providers=["CPUExecutionProvider"]
        )
        names = {i.name for i in self._session.get_inputs()}
        if names != {"input", "state", "sr"}:
            raise ValueError(
                f"{self.path} is not the 8/16 kHz Silero VAD model (inputs {sorted(names)}, "
                "expected input, state, sr)"
            )
        self._outputs = [o.name for o in self._session.get_outputs()]
        self._sr = {rate: np.array(rate, dtype=np.int64) for rate in _GEOMETRY}

    @classmethod
    def shared(cls) -> SileroVADModel:
        """The process-wide model, loaded on first use."""
        model = cls._shared
        if model is None:
            with cls._shared_lock:
                model = cls._shared
                if model is None:
                    model = cls._shared = cls()
                    logger.info("loaded Silero VAD model from %s", model.path)
        return model

    def infer(
        self, audio: np.ndarray, state: np.ndarray, sample_rate: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Run one step: ``audio`` [batch, context+window] float32, ``state`` [2, batch, 128].

        Returns (probabilities [batch, 1], next state [2, batch, 128]).
        """
        out: list[Any] = self._session.run(
            self._outputs, {"input": audio, "state": state, "sr": self._sr[sample_rate]}
        )
        return out[0], out[1]

    def stream(self, sample_rate: int = 16000) -> SileroVADStream:
        """A new stream (one call's audio) on this model."""
        return SileroVADStream(sample_rate, self)


class SileroVADStream:
    """One audio stream's VAD state: the model's recurrent state and the context samples.

    ``probability(window)`` feeds exactly one window of PCM16 and returns the speech
    probability; windows must be fed in order. Streams are independent, so one model serves
    any number of calls, alone or batched through ``BatchedVAD``.
    """

    __slots__ = (
        "sample_rate",
        "model",
        "window",
        "context",
        "_x",
        "_row",
        "_state",
        "_window_bytes",
    )

    def __init__(self, sample_rate: int = 16000, model: SileroVADModel | None = None) -> None:
        self.window, self.context = _geometry(sample_rate)
        self.sample_rate = sample_rate
        self.model = model if model is not None else SileroVADModel.shared()
        self._window_bytes = 2 * self.window
        # Preallocated model input: context in the first columns, the window after it.
        self._x = np.zeros((1, self.context + self.window), dtype=np.float32)
        # The last model input row (its tail is the next context) and the state may be views
        # into the arrays of the last, possibly batched, run; they are read before anything
        # overwrites those arrays.
        self._row: np.ndarray = np.zeros(self.context + self.window, dtype=np.float32)
        self._state: np.ndarray = np.zeros((2, 1, STATE_SIZE), dtype=np.float32)

    def reset(self) -> None:
        """Forget all audio seen so far (a new utterance source, or a restarted stream)."""
        self._row = np.zeros(self.context + self.window, dtype=np.float32)
        self._state = np.zeros((2, 1, STATE_SIZE), dtype=np.float32)

    def samples(self, window: PCMWindow) -> np.ndarray:
        """Check one window and return it as an int16 array (no copy for bytes)."""
        if isinstance(window, np.ndarray):
            if window.dtype != np.int16 or window.shape != (self.window,):
                raise ValueError(
                    f"a VAD window at {self.sample_rate} Hz is an int16 array of {self.window} "
                    f"samples, got {window.dtype} {window.shape}"
                )
            return window
        if len(window) != self._window_bytes:
            raise ValueError(
                f"a VAD window at {self.sample_rate} Hz is {self.window} samples "
                f"({self._window_bytes} bytes of PCM16), got {len(window)} bytes; "
                "use VADAnalyzer to cut audio into windows"
            )
        return np.frombuffer(window, dtype="<i2")

    def probability(self, window: PCMWindow) -> float:
        """Speech probability (0..1) of the next window of PCM16 audio."""
        samples = self.samples(window)
        x = self._x
        ctx = self.context
        x[0, :ctx] = self._row[-ctx:]
        np.multiply(samples, _SCALE, out=x[0, ctx:])
        state = self._state
        if not state.flags.c_contiguous:
            state = np.ascontiguousarray(state)
        out, self._state = self.model.infer(x, state, self.sample_rate)
        self._row = x[0]
        return float(out[0, 0])

    def last_rms(self) -> float:
        """RMS (PCM16 units) of the last window fed, from the samples the model already saw."""
        w = self._row[self.context :]
        return math.sqrt(float(np.dot(w, w)) / w.size) * 32768.0
