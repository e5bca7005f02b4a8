"""Silero VAD on onnxruntime: model and streams, batched inference, and the speaking analyzer."""

from voxpipe.processors.vad.analyzer import VADAnalyzer, VADEvent, VADParams, VADState
from voxpipe.processors.vad.batched import BatchedVAD
from voxpipe.processors.vad.model import (
    SUPPORTED_SAMPLE_RATES,
    SileroVADModel,
    SileroVADStream,
    window_samples,
)

__all__ = [
    "SUPPORTED_SAMPLE_RATES",
    "BatchedVAD",
    "SileroVADModel",
    "SileroVADStream",
    "VADAnalyzer",
    "VADEvent",
    "VADParams",
    "VADState",
    "window_samples",
]
