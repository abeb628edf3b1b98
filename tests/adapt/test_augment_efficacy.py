"""Augmentation-based adaptation (target-style restyling of the source) against source-only.

The same harness as the demo's DANN claim (tests/e2e/test_demo.py): the quick demo job, three
seeds, target labels used only for scoring. Restyling toward the unlabeled rural images must
shrink the feature gap and raise the target AUROC on average.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from shiftkit.adapt.cli_run import demo_config
from shiftkit.adapt.pipeline import run


@pytest.mark.slow
def test_target_style_augmentation_beats_source_only_on_radiographs(tmp_path: Path) -> None:
    rows = []
    for seed in (0, 1, 2):
        config = demo_config(quick=True, out_dir=tmp_path, seed=seed)
        config.name = f"augment-seed{seed}"
        config.progress = False
        config.methods = ["source_only", "augment"]
        methods = run(config).metrics["methods"]
        rows.append({
            "seed": seed,
            "auroc_source_only": methods["source_only"]["target"]["auroc"],
            "auroc_augment": methods["augment"]["target"]["auroc"],
            "mmd_source_only": methods["source_only"]["gap"]["mmd2"],
            "mmd_augment": methods["augment"]["gap"]["mmd2"],
        })
    table = pd.DataFrame(rows)
    print("\n" + table.to_string(index=False))
    assert np.isfinite(table.to_numpy()).all()
    assert table["auroc_augment"].mean() > table["auroc_source_only"].mean(), table
    assert table["mmd_augment"].mean() < table["mmd_source_only"].mean(), table
