"""Benchmarks behind `voxpipe bench ...`."""
