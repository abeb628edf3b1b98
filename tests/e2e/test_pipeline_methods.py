"""Every method the run config accepts can actually be built and run by the pipeline."""

from __future__ import annotations

from pathlib import Path

from shiftkit.adapt.cli_run import demo_config
from shiftkit.adapt.pipeline import run


def test_importance_weighted_runs_through_the_pipeline_with_skip_bad(tmp_path: Path) -> None:
    config = demo_config(True, out_dir=tmp_path)
    config.data.n_per_domain = 40
    config.data.image_size = 32
    config.data.skip_bad = True
    config.train.epochs = 1
    config.evaluation.n_permutations = 50
    config.progress = False
    config.methods = ["source_only", "importance_weighted"]
    metrics = run(config).metrics
    assert set(metrics["methods"]) == {"source_only", "importance_weighted"}
    assert 0.0 <= metrics["methods"]["importance_weighted"]["target"]["auroc"] <= 1.0
    assert len(metrics["histories"]["importance_weighted"]) == 1
