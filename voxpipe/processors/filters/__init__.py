"""Filters: processors that drop frames which should not reach the rest of the pipeline."""

from voxpipe.processors.filters.silence_artifact import SilenceArtifactFilter

__all__ = ["SilenceArtifactFilter"]
