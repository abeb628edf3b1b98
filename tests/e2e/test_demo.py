"""`shiftkit demo --quick` end to end. Adaptation claims are tested on test data seeds through
the efficacy harness (tests/adapt/test_efficacy_claims.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from shiftkit.adapt.cli.run import demo_config

ROOT = Path(__file__).parents[2]


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "shiftkit.adapt.cli", "demo", "--quick", "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=600, env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "source_only" in proc.stdout and "dann" in proc.stdout  # the terminal summary table
    return out / "demo-quick"


def test_quick_demo_writes_report_and_metrics(quick_run: Path) -> None:
    metrics = json.loads((quick_run / "metrics.json").read_text())
    assert metrics["schema_version"]
    assert set(metrics["methods"]) == {"source_only", "dann"}
    for name, result in metrics["methods"].items():
        for split in ("source", "target"):
            assert 0.0 <= result[split]["accuracy"] <= 1.0, name
            assert 0.0 <= result[split]["auroc"] <= 1.0, name
        assert result["gap"]["mmd2"] == pytest.approx(result["gap"]["mmd2"])  # finite
        assert 0.0 <= result["gap"]["mmd_p_value"] <= 1.0
    # Early stopping on source-validation AUROC may end a method before its last epoch.
    assert 1 <= len(metrics["histories"]["dann"]) <= demo_config(quick=True).train.epochs
    for name in ("source_only", "dann"):  # the early-stopping criterion is recorded every epoch
        assert all(0.0 <= h["val_auroc"] <= 1.0 for h in metrics["histories"][name])
    assert metrics["run"]["target_labels_used_for"].startswith("evaluation only")
    html = (quick_run / "report.html").read_text()
    assert html.count("data:image/png;base64,") >= 3  # learning curves, before/after, embedding
    assert "Learning curves" in html


def test_quick_demo_goes_through_the_manifest_path(quick_run: Path) -> None:
    manifest = pd.read_csv(quick_run / "data" / "manifest.csv")
    assert set(manifest["domain"]) == {"city", "rural"}
    assert not manifest["image"].str.startswith("/").any()  # relative to the manifest folder
    assert all((quick_run / "data" / p).is_file() for p in manifest["image"].head(20))


def test_quick_demo_leaves_models_that_load_and_reproduce_the_run(quick_run: Path) -> None:
    """`load(run/models/<name>)` (the clinical path) scores the rural test images exactly as the
    run did: same accuracy, AUROC and ECE as metrics.json, from the PNG files on disk."""
    from shiftkit.adapt import load
    from shiftkit.datasets import load_manifest
    from shiftkit.evaluation.metrics import classification_metrics

    metrics = json.loads((quick_run / "metrics.json").read_text())
    frame = load_manifest(quick_run / "data" / "manifest.csv")
    test = frame[(frame["domain"] == "rural") & (frame["split"] == "test")]
    for name in ("source_only", "dann"):
        predictor = load(quick_run / "models" / name)
        assert predictor.sidecar["training_data"]["registry_method"] == name
        pred = predictor.predict(list(test["image"]))
        assert np.isfinite(pred.shift_score).all()
        got = classification_metrics(test["label"].to_numpy(), pred.proba)
        want = metrics["methods"][name]["target"]
        for key in ("accuracy", "auroc", "ece"):
            assert got[key] == pytest.approx(want[key], abs=1e-6), (name, key)
