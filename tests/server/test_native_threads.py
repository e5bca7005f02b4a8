"""A server process limits numpy's BLAS to one thread (its idle pool spun on a core)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

_PROBE = """
import json, numpy
from threadpoolctl import threadpool_info
from voxpipe.server.run import limit_native_threads
before = [p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"]
limit_native_threads()
after = [p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"]
print(json.dumps({"before": before, "after": after}))
"""


def test_limit_native_threads_leaves_blas_one_thread() -> None:
    # A fresh interpreter whose BLAS starts with two threads, as on a 2-core machine.
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "2", "OMP_NUM_THREADS": "2"}
    done = subprocess.run(
        [sys.executable, "-c", _PROBE], capture_output=True, text=True, env=env, timeout=60
    )
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout)
    assert seen["before"] and max(seen["before"]) == 2
    assert seen["after"] == [1] * len(seen["after"])
