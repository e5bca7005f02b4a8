"""Smart Turn v3.2 (ONNX) on onnxruntime: is the caller's utterance complete, batched over calls.

The model (BSD-2, Daily; shipped as package data with its licence) reads the last 8 s of a
caller's speech as log-mel features and gives the probability that the turn is complete. Its
input is batched (``(n, 80, 800)``), so the decisions many calls of a worker ask for at the same
moment run as one inference: ``BatchedSmartTurn`` gathers the requests made within one event-
loop tick and runs them together in a worker thread (an inference is tens of milliseconds; on
the loop it would delay every call's audio pacing).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from voxpipe.processors.turn.features import log_mel_batch

__all__ = ["BatchedSmartTurn", "SmartTurnModel", "smart_turn_model_path"]

logger = logging.getLogger(__name__)


def smart_turn_model_path() -> Path:
    """Where the shipped model file is."""
    return Path(
        str(resources.files("voxpipe.processors.turn") / "data" / "smart-turn-v3.2-cpu.onnx")
    )


class SmartTurnModel:
    """One onnxruntime session of the model, shared by every call of a process."""

    _shared: SmartTurnModel | None = None
    _lock = threading.Lock()
    _preloading: threading.Thread | None = None

    def __init__(self, path: str | Path | None = None, *, threads: int = 1) -> None:
        try:
            import onnxruntime as ort  # type: ignore[import-untyped]
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise ImportError("Smart Turn needs onnxruntime: pip install 'voxpipe[audio]'") from exc
        opts = ort.SessionOptions()
        # Batching, not threads, is how throughput scales; one thread leaves the other cores
        # to the workers' event loops.
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        self.path = Path(path) if path is not None else smart_turn_model_path()
        self._session: Any = ort.InferenceSession(
            str(self.path), sess_options=opts, providers=["CPUExecutionProvider"]
        )
        self._input = self._session.get_inputs()[0].name

    @classmethod
    def shared(cls) -> SmartTurnModel:
        """The process's model (loaded on first use)."""
        with cls._lock:
            if cls._shared is None:
                cls._shared = cls()
            return cls._shared

    @classmethod
    def preload(cls) -> None:
        """Start loading the process's model in a background thread, if nobody has yet.

        Otherwise the first decision of a process pays the load (onnxruntime's import and the
        session, about 130 ms here) on a caller's turn. A failed load is logged and tried again
        at the first decision, which then reports it as before.
        """
        with cls._lock:
            if cls._shared is not None or cls._preloading is not None:
                return
            # Not a daemon: interpreter exit waits for it rather than tearing a session down
            # half built.
            cls._preloading = threading.Thread(
                target=cls._preload, name="smart-turn-preload", daemon=False
            )
            cls._preloading.start()

    @classmethod
    def _preload(cls) -> None:
        try:
            cls.shared()
        except Exception as exc:
            logger.debug("Smart Turn preload failed (retried at the first decision): %r", exc)

    def complete_probability(self, clips: list[np.ndarray]) -> list[float]:
        """For each clip (float32, 16 kHz, the utterance so far), P(the turn is complete)."""
        if not clips:
            return []
        features = log_mel_batch(clips)
        out = self._session.run(None, {self._input: features})[0]
        # The exported graph ends in a sigmoid: its "logits" output is already a probability.
        return [float(p) for p in np.asarray(out).reshape(-1)]


class BatchedSmartTurn:
    """Gathers the decisions asked for in one event-loop tick into inferences of up to
    ``max_batch`` clips, run one after another in the worker's own inference thread.

    ``max_batch`` is 1 by default: measured on this project's 2-core machine (``voxpipe bench
    turn``), a batch of 4 costs 35 ms per decision against 31 ms one at a time, 16 cost 56 ms
    (the encoder is compute-bound on a CPU; batching saves nothing and delays the first
    answer). The thread keeps the 30 ms inference off the event loop, so other calls' audio
    keeps its pace. Use one per event loop (a worker); ``batches``/``decisions`` count runs.
    """

    def __init__(self, model: SmartTurnModel | None = None, max_batch: int = 1) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {max_batch}")
        self._model = model
        self.max_batch = max_batch
        self._pending: list[tuple[np.ndarray, asyncio.Future[float]]] = []
        self._scheduled = False
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="smart-turn")
        self._running: set[asyncio.Task[None]] = set()  # the loop only keeps weak references
        self.batches = 0
        self.decisions = 0
        self._waiting = 0  # decisions asked for and not answered yet
        # Recent seconds of inference per batch (a moving average), for the backlog estimate;
        # starts at what one decision costs on an idle core.
        self._cost_s = 0.035

    @property
    def model(self) -> SmartTurnModel:
        if self._model is None:
            self._model = SmartTurnModel.shared()
        return self._model

    def complete_now(self, clip: np.ndarray) -> float:
        """P(complete) for one utterance, run inline (a virtual clock's deterministic path)."""
        p = self.model.complete_probability([clip])[0]
        self.batches += 1
        self.decisions += 1
        return p

    def backlog_s(self) -> float:
        """How long a decision asked for now would wait for the inference thread (estimate)."""
        return self._waiting * self._cost_s / self.max_batch

    async def complete_probability(self, clip: np.ndarray) -> float:
        """P(complete) for one call's utterance, run with the other calls' of this tick."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[float] = loop.create_future()
        self._pending.append((clip, fut))
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._flush)
        self._waiting += 1
        try:
            return await fut
        finally:
            self._waiting -= 1

    def _flush(self) -> None:
        self._scheduled = False
        pending, self._pending = self._pending, []
        pending = [(c, f) for c, f in pending if not f.done()]
        for i in range(0, len(pending), self.max_batch):
            part = pending[i : i + self.max_batch]
            task = asyncio.get_running_loop().create_task(self._run(part), name="smart-turn-batch")
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    def _infer(self, clips: list[np.ndarray]) -> list[float]:
        started = time.perf_counter()
        probs = self.model.complete_probability(clips)
        # Wall time in the thread: under load it grows with the CPU the loop takes from it.
        elapsed = min(time.perf_counter() - started, 0.25)  # not a model load's half second
        self._cost_s += 0.2 * (elapsed - self._cost_s)
        return probs

    async def _run(self, part: list[tuple[np.ndarray, asyncio.Future[float]]]) -> None:
        try:
            loop = asyncio.get_running_loop()
            clips = [c for c, _ in part]
            # In the inference thread, the model's first load too (half a second of ONNX
            # session set-up would stall every call's audio on the loop).
            probs = await loop.run_in_executor(self._executor, self._infer, clips)
        except Exception as exc:  # every waiter learns why, none hangs
            logger.exception("Smart Turn inference failed for %d decisions", len(part))
            for _, fut in part:
                if not fut.done():
                    fut.set_exception(exc)
            return
        self.batches += 1
        self.decisions += len(part)
        for (_, fut), p in zip(part, probs, strict=True):
            if not fut.done():
                fut.set_result(p)
