"""`shiftkit demo --quick` end to end, and the demo's claim that adaptation is real."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from shiftkit.adapt.cli_run import demo_config
from shiftkit.adapt.pipeline import run

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
    assert len(metrics["histories"]["dann"]) == demo_config(quick=True).train.epochs
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


@pytest.mark.slow
def test_dann_beats_source_only_over_three_seeds(tmp_path: Path) -> None:
    """The demo's claim, with target-style augmentation and a target oracle beside it
    (issues #2, #4 and #6).

    The quick demo's models on 800 images per hospital (the quick demo has 400, whose rural
    test split of 80 images gives AUROC a standard error near 0.06 - larger than the effect).
    DANN adapts a copy of the source-only model (the pipeline's default, ``dann.start``) with
    the confusion adversary; the oracle trains on labelled rural images and bounds what
    adaptation could win. Target labels score the finished models and nothing else.
    Design fixed on development seeds 10-12 (source-only -> DANN rural AUROC 0.587 -> 0.652,
    0.508 -> 0.660, 0.524 -> 0.557, 400 test images each). Augmentation: on seeds 10-11 with
    800 images, AUROC 0.567 -> 0.569 and 0.527 -> 0.570, MMD^2 0.476 -> 0.268 and 0.918 -> 0.519.
    (Augmentation was tested on the 400-image quick demo before; after the generator's
    random draws changed, seeds 0-2 there gave a higher MMD^2 for augmentation (0.94 vs 0.71)
    with a higher AUROC: the 80-image test split is too small, so it moved here.)
    """
    rows = []
    for seed in (0, 1, 2):
        config = demo_config(quick=True, out_dir=tmp_path, seed=seed)
        config.name = f"seed{seed}"
        config.progress = False
        config.data.n_per_domain = 800
        config.methods = ["source_only", "dann", "augment", "target_oracle"]
        methods = run(config).metrics["methods"]
        row = {"seed": seed}
        for name in config.methods:
            row[f"auroc_{name}"] = methods[name]["target"]["auroc"]
            row[f"mmd_{name}"] = methods[name]["gap"]["mmd2"]
        rows.append(row)
    table = pd.DataFrame(rows)
    so, dann, aug, oracle = (table[f"auroc_{k}"].mean() for k in ("source_only", "dann", "augment", "target_oracle"))
    print("\n" + table.to_string(index=False))
    print(f"mean rural AUROC: source-only {so:.3f}, DANN {dann:.3f}, augment {aug:.3f}, oracle {oracle:.3f}; "
          f"gap to the oracle closed: DANN {(dann - so) / (oracle - so):.2f}, augment {(aug - so) / (oracle - so):.2f}")
    assert np.isfinite(table.to_numpy()).all()
    assert dann > so, table
    assert table["mmd_dann"].mean() < table["mmd_source_only"].mean(), table
    assert aug > so, table
    assert table["mmd_augment"].mean() < table["mmd_source_only"].mean(), table
    assert oracle > so, table  # the shift costs something an oracle wins back
