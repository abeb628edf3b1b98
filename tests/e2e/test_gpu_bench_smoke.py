"""`benchmarks/gpu_bench.py --device cpu --tiny` runs shiftkit's own DANN pieces end to end.

The GPU figures themselves need a GPU; this only proves the script works and measures
what it claims (shiftkit's DANN / SegDANN through the trainer, a plain step, the loader).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("gpu_bench")
    env = dict(os.environ, OMP_NUM_THREADS="1", NO_ALBUMENTATIONS_UPDATE="1", MPLBACKEND="Agg")
    proc = subprocess.run(
        [sys.executable, "benchmarks/gpu_bench.py", "--device", "cpu", "--tiny", "--out-dir", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=300, env=env,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return json.loads((out / "gpu_tiny.json").read_text())


def _reported(x: object) -> bool:
    """A figure the benchmark reported: a number (NaN allowed: a throughput taken as the
    difference of two timed fits is NaN when the longer fit happens to finish first under
    load) or None (not measured). Never a condition on the timing itself."""
    return x is None or (isinstance(x, (int, float)) and not isinstance(x, bool))


def test_rows_follow_the_schema_and_goal(tiny_run: dict) -> None:
    rows = tiny_run["rows"]
    dann_rows = [r for r in rows if "DANN trainer vs plain step" in r["task"]]
    assert len(dann_rows) == 2  # one classifier, one segmenter
    for r in dann_rows:
        # Each figure is reported (a number, or None when a timing could not be taken); its
        # value depends on the machine's load and is the benchmark's business, not the test's.
        assert r["unit"] == "img/s"
        assert _reported(r["shiftkit"]) and _reported(r["baseline"]) and _reported(r["ratio"])
        if r["ratio"] is None:
            assert r["met"] is None  # not measured is not failed
        else:
            assert isinstance(r["met"], bool)
    loader_rows = [r for r in rows if "loader" in r["task"]]
    assert len(loader_rows) == 2 and all(_reported(r["shiftkit"]) for r in loader_rows)


def test_it_measures_shiftkits_dann(tiny_run: dict) -> None:
    backbones = tiny_run["extra"]["backbones"]
    assert [b["method_class"] for b in backbones] == [
        "shiftkit.adapt.methods.dann.DANN", "shiftkit.adapt.methods.dann_seg.SegDANN"]
    for b in backbones:
        hist = b["dann_history_last"]
        # The trainer really ran the adversarial step: a finite domain loss and a
        # discriminator accuracy that is a fraction.
        assert math.isfinite(hist["domain_loss"]) and 0.0 <= hist["disc_acc"] <= 1.0
        for key in ("plain_img_s", "dann_step_img_s", "dann_trainer_img_s", "source_only_trainer_img_s"):
            assert key in b and _reported(b[key]), key
