"""How many workers `voxpipe serve` starts by default: one per core it may use, capped by a
container's CPU limit (cgroup v2 cpu.max)."""

from __future__ import annotations

import os
from pathlib import Path

from voxpipe.server.workers import default_worker_count


def test_a_cpu_limit_caps_the_default(tmp_path: Path) -> None:
    cores = len(os.sched_getaffinity(0))
    cpu_max = tmp_path / "cpu.max"
    cpu_max.write_text("max 100000\n")
    assert default_worker_count(cpu_max) == cores
    cpu_max.write_text("150000 100000\n")  # 1.5 CPUs: two workers, capped by the cores
    assert default_worker_count(cpu_max) == min(cores, 2)
    cpu_max.write_text("50000 100000\n")
    assert default_worker_count(cpu_max) == 1
    assert default_worker_count(tmp_path / "absent") == cores
