"""SIGKILL `shiftkit run` 20 times, at least 3 times inside each of the PNG export, a training
epoch, a checkpoint write, evaluation and the report write; nothing is corrupt and resume is exact.

Runs scripts/crash_resume.py at the issue's tiny size (tiny backbone, 32 px, 60 images per
domain, 3 epochs, source_only + DANN, 50 permutations). Launches fork from a pre-imported
server (same typer entry point as the console script, minus start-up; `--mode exec` in the
script uses a fresh `shiftkit` process per launch) and two episodes run at once, to fit CI.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).parents[2] / "scripts" / "crash_resume.py"


@pytest.mark.slow
def test_twenty_sigkills_leave_no_corrupt_file_and_resume_exactly(tmp_path: Path) -> None:
    out = tmp_path / "crash.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--kills", "20", "--kills-per-episode", "5", "--mode", "fork", "--parallel", "2",
         "--seed", "1",
         "--work", str(tmp_path / "work"), "--json", str(out)],
        capture_output=True, text=True, timeout=1200, env=env,
    )
    tail = proc.stdout[-4000:] + proc.stderr[-3000:]
    assert out.exists(), tail
    res = json.loads(out.read_text())
    assert res["kills"] >= 20, tail
    # Every kill was aimed and landed where it was aimed (the phase is read back after death).
    assert res["aimed"] and res["every_phase_hit"], res["phases"]
    assert all(res["phases"][p] >= 3 for p in ("export", "epoch", "checkpoint", "evaluation", "report")), res["phases"]
    assert res["corrupt_files"] == [], res["corrupt_files"]
    assert res["metrics_mismatches"] == [], res["metrics_mismatches"]
    assert res["failed_resumes"] == [], res["failed_resumes"]
    assert res["completed_runs"] == res["episodes"] >= 1
    assert res["files_checked"] > 20 * 10  # the checks looked at real trees, not empty folders
    assert res["ok"] and proc.returncode == 0, tail
