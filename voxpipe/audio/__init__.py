"""Audio building blocks: mu-law codec, streaming resampling, chunking, WAV I/O, volume."""

from voxpipe.audio.chunker import Chunker, frame_bytes
from voxpipe.audio.mulaw import MULAW_SILENCE, mulaw_to_pcm16, pcm16_to_mulaw
from voxpipe.audio.resample import StreamingResampler, resample_pcm16
from voxpipe.audio.volume import dbfs, dbfs_to_volume, rms, volume
from voxpipe.audio.wav import WavAudio, read_wav, wav_bytes, write_wav

__all__ = [
    "MULAW_SILENCE",
    "Chunker",
    "StreamingResampler",
    "WavAudio",
    "dbfs",
    "dbfs_to_volume",
    "frame_bytes",
    "mulaw_to_pcm16",
    "pcm16_to_mulaw",
    "read_wav",
    "resample_pcm16",
    "rms",
    "volume",
    "wav_bytes",
    "write_wav",
]
