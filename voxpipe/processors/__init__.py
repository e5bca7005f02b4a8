"""Frame processors: the base class and every processor."""
