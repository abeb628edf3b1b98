"""Resident memory stays flat over a 50-epoch run (scripts/memory_soak.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).parents[2] / "scripts" / "memory_soak.py"


@pytest.mark.slow
def test_rss_is_flat_over_50_epochs(tmp_path: Path) -> None:
    out = tmp_path / "memory.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(SCRIPT), "--epochs", "50", "--json", str(out)],
                          capture_output=True, text=True, timeout=900, env=env)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    res = json.loads(out.read_text())
    assert len(res["rss_mib"]) == 50
    # A leak of one 8 x 32 x 32 float batch per step (4 steps/epoch) is 0.125 MiB/epoch: 5 MiB
    # over 40 epochs. Typical epoch-to-epoch change is ~0; one-off steps (first warning,
    # allocator arenas) of a few MiB are tolerated, steady growth is not.
    assert abs(res["median_step_mib"]) < 0.02, res
    assert res["growth_over_tail_mib"] < 8.0, res
    assert res["slope_mib_per_epoch"] < 0.2, res
