"""voxpipe: a fast frame-processing engine for real-time voice AI agents."""

__version__ = "0.1.0"
