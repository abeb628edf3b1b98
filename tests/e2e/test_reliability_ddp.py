"""A rank that dies makes the whole torchrun job exit non-zero promptly, not hang.

Two CPU (gloo) processes under torchrun; rank 1 calls os._exit(1) in the middle of an epoch,
while rank 0 is about to wait for it in an all-reduce. torchrun's elastic agent sees the dead
worker, sends the survivors SIGTERM and exits non-zero. (Outside torchrun, a survivor would
wait for gloo's default 30-minute collective timeout; see docs/reliability.md.)
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

WORKER = Path(__file__).with_name("reliability_ddp_worker.py")


@pytest.mark.slow
def test_dead_rank_ends_the_job_within_a_minute(tmp_path: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "--monitor-interval", "0.5", str(WORKER), "40"]
    started = time.monotonic()
    try:
        proc = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired as exc:  # the failure this test exists for
        raise AssertionError(f"torchrun still running after 120 s: a dead rank hung the job\n{exc.stdout}") from None
    took = time.monotonic() - started
    out = proc.stdout + proc.stderr
    assert "rank 1: dying now" in out, out[-3000:]
    assert proc.returncode != 0, out[-3000:]
    assert "training finished" not in out
    assert "exitcode" in out or "ChildFailedError" in out or "failed" in out.lower(), out[-3000:]
    print(f"torchrun exited {proc.returncode} after {took:.1f} s")  # figure for docs/reliability.md
