"""Every method the run config accepts can actually be built and run by the pipeline."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from shiftkit.adapt.cli.run import demo_config
from shiftkit.adapt.job.pipeline import run


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


def test_dann_adapts_a_copy_of_the_source_model_and_never_changes_it(tmp_path: Path) -> None:
    """dann.start=source_only: DANN starts from the fitted source-only weights (a copy, at
    lr * dann.lr_mult); asked for alone, dann still gets its starting point, unscored."""
    import numpy as np
    import torch

    from shiftkit.adapt.job.pipeline import build_method
    from shiftkit.adapt.models.backbones import build_classifier
    from shiftkit.adapt.training.data import ArrayDataset

    config = demo_config(True, out_dir=tmp_path)
    source = SimpleNamespace(model_=build_classifier("tiny", 1, 2))
    before = {k: v.clone() for k, v in source.model_.state_dict().items()}
    asked: list[str] = []
    method = build_method("dann", config, 2, tmp_path, 1, fit_method=lambda name: asked.append(name) or source)
    assert asked == ["source_only"] and method.model is source.model_  # stored as given
    assert method.lr == config.train.lr * config.dann.lr_mult
    assert method.adversary == "confusion"
    x = np.random.default_rng(0).random((8, 1, 32, 32)).astype("f4")
    # no val set here, so no early stopping (the demo config early-stops on source validation)
    method.set_params(epochs=1, batch_size=4, progress=False, checkpoint_dir=None, early_stopping=None)
    method.fit(ArrayDataset(x, [0, 1] * 4), ArrayDataset(x + 0.1))
    assert method.model_ is not source.model_
    for k, v in source.model_.state_dict().items():  # the source model never moves
        assert torch.equal(v, before[k]), k
    with pytest.raises(ValueError, match="source_only"):
        build_method("dann", config, 2, tmp_path, 1)
    config.dann.start = "scratch"
    assert build_method("dann", config, 2, tmp_path, 1).model == config.model.backbone

    config.dann.start = "source_only"
    config.data.n_per_domain = 40
    config.data.image_size = 32
    config.train.epochs = 1
    config.evaluation.n_permutations = 50
    config.progress = False
    config.methods = ["dann"]
    metrics = run(config).metrics
    assert set(metrics["methods"]) == {"dann"}
    assert len(metrics["histories"]["dann"]) == 1


def test_dashcam_segmentation_dann_runs_through_the_pipeline(tmp_path: Path) -> None:
    """Segmentation through the whole job: SegDANN from the source model, output space only
    (the pipeline's default), mIoU reported for source and target."""
    from shiftkit.adapt.job.config import RunConfig

    config = RunConfig.model_validate({
        "name": "dash", "out_dir": tmp_path, "progress": False,
        "data": {"benchmark": "dashcam", "source_domain": "urban_day", "target_domain": "rural_day",
                 "n_per_domain": 30, "image_size": 32},
        "model": {"backbone": "tiny-unet"},
        "train": {"epochs": 1, "batch_size": 8},
        "evaluation": {"n_permutations": 50},
    })
    metrics = run(config).metrics
    assert metrics["run"]["task"] == "segmentation"
    assert set(metrics["methods"]) >= {"source_only", "dann"}
    hist = metrics["histories"]["dann"][-1]
    assert "out_disc_acc" in hist and "domain_loss" in hist
    for name in ("source_only", "dann"):
        assert 0.0 <= metrics["methods"][name]["target"]["miou"] <= 1.0
