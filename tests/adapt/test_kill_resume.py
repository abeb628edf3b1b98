"""A run killed with SIGKILL mid-training and resumed ends exactly like an uninterrupted run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

WORKER = Path(__file__).with_name("resume_worker.py")


def _cmd(tmp: Path, name: str) -> list[str]:
    return [sys.executable, str(WORKER), str(tmp / f"ck_{name}"), str(tmp / f"{name}.json"), str(tmp / f"{name}.progress")]


def _env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1"}


@pytest.mark.slow
def test_sigkill_then_resume_matches_uninterrupted_run(tmp_path: Path) -> None:
    ref = subprocess.Popen(_cmd(tmp_path, "ref"), env=_env())
    victim = subprocess.Popen(_cmd(tmp_path, "run"), env=_env())
    progress = tmp_path / "run.progress"
    deadline = time.time() + 240
    # Kill once epoch 2 has finished, i.e. somewhere inside epoch 3.
    while time.time() < deadline:
        if progress.exists() and "2" in progress.read_text().split():
            break
        assert victim.poll() is None, "worker exited before it could be killed"
        time.sleep(0.02)
    else:
        pytest.fail("worker never finished epoch 2")
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait(30)
    assert victim.returncode == -signal.SIGKILL
    assert not (tmp_path / "run.json").exists()
    # Resume: the same command again picks up ck_run/last.pt.
    assert subprocess.run(_cmd(tmp_path, "run"), env=_env(), timeout=300).returncode == 0
    assert ref.wait(300) == 0
    a = json.loads((tmp_path / "ref.json").read_text())
    b = json.loads((tmp_path / "run.json").read_text())
    assert a["resumed_from"] == 0 and b["resumed_from"] >= 1  # 1 if killed before epoch 2 was saved
    assert a["history"] == b["history"]  # every metric of every epoch, bit for bit
    assert a["params"] == b["params"]
