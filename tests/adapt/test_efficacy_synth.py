"""Adaptation efficacy on the dashcam benchmark, urban_day -> rural_day (slow; prints per-seed numbers).

Issue #4: segmentation DANN's target mIoU above source-only on average over 3 seeds.
Issue #6: target-style augmentation lowers the feature gap and raises the target mIoU.
A target oracle (trained on labelled rural images) is trained too, and the fraction of the
source-only-to-oracle gap each method closes is printed. Target labels score the finished
models and nothing else.

The radiograph claims (DANN and augmentation) are tested through the demo pipeline:
tests/e2e/test_demo.py::test_dann_beats_source_only_over_three_seeds.

Settings were fixed on development seed 10 (source-only rural mIoU 0.246; SegDANN from the
source model, output space, confusion, lambda 0.01: 0.280; augmentation: 0.285; source-only
trained twice as long: 0.171, so the gains are not extra epochs). Seeds 0-2 were run once.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest

from shiftkit.adapt.augment import TargetStyleSourceOnly
from shiftkit.adapt.data import CachedDataset
from shiftkit.adapt.methods.dann_seg import SegDANN
from shiftkit.adapt.methods.source_only import SourceOnly
from shiftkit.evaluation.gap import mmd2_unbiased
from shiftkit.evaluation.metrics import segmentation_metrics

pytestmark = pytest.mark.slow
SEEDS = (0, 1, 2)
SIZE, N_TRAIN, N_TEST = (32, 64), 300, 150
TRAIN = dict(epochs=4, batch_size=16, lr=3e-3, progress=False, num_classes=9, task="segmentation")
# ADVENT-style: output-space alignment with a small weight, adapting the source model at a
# quarter of its learning rate. The feature-level discriminator (lambda 1) cost source accuracy
# without closing the gap on the development seed.
SEGDANN = dict(feature_level=False, output_level=True, lambda_output=0.01, adversary="confusion",
               out_disc_width=32)


def _gap_closed(so: float, method: float, oracle: float) -> float:
    return (method - so) / (oracle - so) if oracle != so else float("nan")


def dashcam_rows(seeds: tuple[int, ...]) -> list[dict[str, float]]:
    from shiftkit.datasets.synth import dashcam

    src = CachedDataset(dashcam.SynthDataset("urban_day", N_TRAIN, split="train", size=SIZE))
    tgt = CachedDataset(dashcam.SynthDataset("rural_day", N_TRAIN, split="train", size=SIZE))
    src_test = CachedDataset(dashcam.SynthDataset("urban_day", N_TEST, split="test", size=SIZE))
    test = CachedDataset(dashcam.SynthDataset("rural_day", N_TEST, split="test", size=SIZE))
    y = np.stack([it["mask"].numpy() for it in test.items])
    rows = []
    for seed in seeds:
        so = SourceOnly("tiny-unet", seed=seed, **TRAIN).fit(src)
        adapt_kw = dict(TRAIN, lr=TRAIN["lr"] / 4)
        models = {
            "source_only": so,
            "segdann": SegDANN(copy.deepcopy(so.model_), seed=seed, **adapt_kw, **SEGDANN).fit(src, tgt),
            "augment": TargetStyleSourceOnly("tiny-unet", seed=seed, **TRAIN).fit(src, tgt),
            "oracle": SourceOnly("tiny-unet", seed=seed, **TRAIN).fit(tgt),
        }
        row: dict[str, float] = {"seed": seed}
        for name, m in models.items():
            row[f"miou_{name}"] = segmentation_metrics(y, m.predict(test), 9, ignore_index=-1)["miou"]
            row[f"mmd_{name}"] = mmd2_unbiased(m.features(src_test), m.features(test))
        rows.append(row)
        print(f"\ndashcam seed {seed}: " + ", ".join(f"{k} {v:.3f}" for k, v in row.items() if k != "seed")
              + f"; gap closed: SegDANN {_gap_closed(row['miou_source_only'], row['miou_segdann'], row['miou_oracle']):.2f}"
              f", augment {_gap_closed(row['miou_source_only'], row['miou_augment'], row['miou_oracle']):.2f}",
              flush=True)
    return rows


@pytest.fixture(scope="module")
def rows() -> list[dict[str, float]]:
    return dashcam_rows(SEEDS)


def _mean(rows: list[dict[str, float]], key: str) -> float:
    return float(np.mean([r[key] for r in rows]))


def test_dashcam_segdann_beats_source_only_on_rural_miou(rows) -> None:
    so, sd, oracle = (_mean(rows, f"miou_{k}") for k in ("source_only", "segdann", "oracle"))
    print(f"dashcam mean mIoU: source-only {so:.3f} SegDANN {sd:.3f} oracle {oracle:.3f} "
          f"gap closed {_gap_closed(so, sd, oracle):.2f}")
    assert oracle > so  # the shift costs something an oracle wins back
    assert sd > so


def test_dashcam_augmentation_shrinks_the_gap_and_raises_rural_miou(rows) -> None:
    so, aug = _mean(rows, "miou_source_only"), _mean(rows, "miou_augment")
    print(f"dashcam mean: source-only mIoU {so:.3f} MMD^2 {_mean(rows, 'mmd_source_only'):.3f}; augment mIoU "
          f"{aug:.3f} MMD^2 {_mean(rows, 'mmd_augment'):.3f}")
    assert aug > so
    assert _mean(rows, "mmd_augment") < _mean(rows, "mmd_source_only")
