"""The default source recipe: what the run config builds for `source_only`, and the schedule.

The numbers behind the defaults (demo recipe on radiograph development data seeds) are in
`shiftkit.adapt.job.config.DEFAULT_PROVENANCE`; these tests pin that the defaults reach the model.
"""

from __future__ import annotations

import math

from shiftkit.adapt.augment.adapter import TargetStyle
from shiftkit.adapt.job.config import RunConfig
from shiftkit.adapt.job.pipeline import build_method
from shiftkit.adapt.training.schedules import lr_schedule_factor


def test_cosine_schedule_and_warmup():
    assert lr_schedule_factor(0.0, "constant") == 1.0 == lr_schedule_factor(0.7, "constant")
    assert lr_schedule_factor(0.0, "cosine") == 1.0
    assert math.isclose(lr_schedule_factor(0.5, "cosine"), 0.5)
    assert lr_schedule_factor(1.0, "cosine") < 1e-12
    xs = [lr_schedule_factor(p / 100, "cosine") for p in range(101)]
    assert all(a >= b for a, b in zip(xs[:-1], xs[1:], strict=True))  # monotone decay
    assert lr_schedule_factor(0.05, "cosine", warmup=0.1) < 0.6  # still warming up
    assert math.isclose(lr_schedule_factor(0.1, "cosine", warmup=0.1), 1.0)


def test_run_config_source_only_gets_the_recipe(tmp_path):
    config = RunConfig(name="r", out_dir=tmp_path, methods=["source_only", "dann"])
    config.train.early_stopping_patience = 3
    so = build_method("source_only", config, 2, tmp_path, in_channels=1)
    assert so.lr_decay == "cosine" and so.early_stopping == "val_loss" and so.calibrate is True
    assert isinstance(so.source_adapter, TargetStyle) and so.source_adapter.preset == "photometric"
    assert so.source_adapter.restyle is None  # ERM + augmentation: no target image is read
    config.train.source_augment = "none"
    config.train.calibrate = False
    config.train.early_stopping_metric = "val_score"
    plain = build_method("source_only", config, 2, tmp_path, in_channels=1)
    assert plain.source_adapter is None and plain.calibrate is False and plain.early_stopping == "val_auroc"
    # other methods take the schedule, never the source-only augmentation or calibration
    config.section("augment").start = "scratch"  # its recipe adapts the fitted source model by default
    augment = build_method("augment", config, 2, tmp_path, in_channels=1)
    assert augment.calibrate is False
