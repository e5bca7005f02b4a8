"""Batched Silero VAD: the windows many calls produce in one event-loop tick, in one inference."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

import numpy as np

from voxpipe.processors.vad.model import _SCALE, PCMWindow, SileroVADModel, SileroVADStream

logger = logging.getLogger(__name__)

__all__ = ["SERVED_GATHER_S", "BatchedVAD"]

# What a server's shared batcher holds a batch open for: a VAD event (and a barge-in) comes at
# most this much later, and at 20-100 calls a batch carries 3-4x more windows than per tick.
SERVED_GATHER_S = 0.01


class BatchedVAD:
    """Runs windows from many streams as one batched inference, each stream's state kept apart.

    ``await probability(stream, window)`` queues a window; every window queued during the
    same event-loop tick runs in one inference on the next tick (one batch per sample rate,
    at most ``max_batch`` rows). Results equal running each stream alone. Use one instance per
    event loop; inference runs inline on the loop, which is what a one-core worker wants.

    ``gather_s`` > 0 holds the first window of a batch that long, so the windows other calls
    produce meanwhile join it: calls' audio arrives at different moments, and a tick's batch
    is then mostly one window (a Silero window alone costs ~3x its share of a batch of 16).
    """

    def __init__(
        self, model: SileroVADModel | None = None, max_batch: int = 256, gather_s: float = 0.0
    ) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {max_batch}")
        if gather_s < 0:
            raise ValueError(f"gather_s must be >= 0, got {gather_s}")
        self.model = model if model is not None else SileroVADModel.shared()
        self.max_batch = max_batch
        self.gather_s = gather_s
        self._pending: list[tuple[SileroVADStream, PCMWindow, asyncio.Future[float]]] = []
        self._scheduled = False
        # Counters for metrics and tests: inferences run and windows they carried.
        self.batches = 0
        self.windows = 0

    def stream(self, sample_rate: int = 16000) -> SileroVADStream:
        """A new stream on this batcher's model."""
        return SileroVADStream(sample_rate, self.model)

    async def probability(self, stream: SileroVADStream, window: PCMWindow) -> float:
        """Speech probability of ``stream``'s next window, computed in the current tick's batch."""
        stream.samples(window)  # fail here, in the caller, on a malformed window
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[float] = loop.create_future()
        self._pending.append((stream, window, fut))
        if not self._scheduled:
            self._scheduled = True
            if self.gather_s > 0:
                loop.call_later(self.gather_s, self._flush)
            else:
                loop.call_soon(self._flush)
        return await fut

    def _flush(self) -> None:
        self._scheduled = False
        pending, self._pending = self._pending, []
        while pending:
            # A stream's windows must run in order, one per inference: a second window of the
            # same stream waits for the next round.
            seen: set[int] = set()
            groups: dict[int, list[tuple[SileroVADStream, PCMWindow, asyncio.Future[float]]]] = {}
            later = []
            for item in pending:
                stream, _, fut = item
                if fut.done():  # cancelled by its caller: the stream does not advance
                    continue
                key = id(stream)
                if key in seen:
                    later.append(item)
                    continue
                seen.add(key)
                groups.setdefault(stream.sample_rate, []).append(item)
            for items in groups.values():
                for i in range(0, len(items), self.max_batch):
                    self._run_items(items[i : i + self.max_batch])
            pending = later

    def _run_items(
        self, items: list[tuple[SileroVADStream, PCMWindow, asyncio.Future[float]]]
    ) -> None:
        try:
            probs = self._infer([s for s, _, _ in items], [w for _, w, _ in items])
        except Exception as exc:  # every waiter learns why, none hangs
            logger.exception("batched VAD inference failed for %d windows", len(items))
            for _, _, fut in items:
                if not fut.done():
                    fut.set_exception(exc)
            return
        for (_, _, fut), p in zip(items, probs, strict=True):
            if not fut.done():
                fut.set_result(p)

    def run_batch(
        self, streams: Sequence[SileroVADStream], windows: Sequence[PCMWindow]
    ) -> list[float]:
        """Synchronously run one window per stream; streams must be distinct.

        Streams of different sample rates run as separate inferences; results come back in
        the order given.
        """
        if len(streams) != len(windows):
            raise ValueError(f"{len(streams)} streams but {len(windows)} windows")
        if len({id(s) for s in streams}) != len(streams):
            raise ValueError("run_batch got the same stream twice; feed its windows in order")
        rates = {s.sample_rate for s in streams}
        if len(rates) <= 1 and len(streams) <= self.max_batch:
            return self._infer(streams, windows) if streams else []
        result = [0.0] * len(streams)
        for rate in rates:
            idx = [i for i, s in enumerate(streams) if s.sample_rate == rate]
            for j in range(0, len(idx), self.max_batch):
                part = idx[j : j + self.max_batch]
                probs = self._infer([streams[i] for i in part], [windows[i] for i in part])
                for i, p in zip(part, probs, strict=True):
                    result[i] = p
        return result

    def _infer(
        self, streams: Sequence[SileroVADStream], windows: Sequence[PCMWindow]
    ) -> list[float]:
        # Same sample rate and distinct streams (checked by callers).
        first = streams[0]
        n, ctx, win = len(streams), first.context, first.window
        if any(isinstance(w, np.ndarray) for w in windows):
            samples = np.stack([s.samples(w) for s, w in zip(streams, windows, strict=True)])
        else:
            raw = b"".join(windows)  # type: ignore[arg-type]  # no arrays on this path
            if len(raw) != n * win * 2:
                for s, w in zip(streams, windows, strict=True):
                    s.samples(w)  # raises with the offending window's size
            samples = np.frombuffer(raw, dtype="<i2").reshape(n, win)
        # A fresh input array per batch: each stream keeps a view of its row (next context).
        x = np.empty((n, ctx + win), dtype=np.float32)
        np.stack([s._row[-ctx:] for s in streams], out=x[:, :ctx])
        np.multiply(samples, _SCALE, out=x[:, ctx:])
        state = np.concatenate([s._state for s in streams], axis=1)
        out, new_state = self.model.infer(x, state, first.sample_rate)
        for i, s in enumerate(streams):
            s._state = new_state[:, i : i + 1]
            s._row = x[i]
        self.batches += 1
        self.windows += n
        probs: list[float] = out[:, 0].tolist()
        return probs
