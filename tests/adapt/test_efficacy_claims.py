"""Adaptation claims on TEST data seeds, asserted per seed with a margin from the benchmark's noise.

Replaces the earlier efficacy tests (three seeds whose data seed was the model seed, about 160
target test images, asserted on the mean with no margin). Here each benchmark runs through the
efficacy harness (`shiftkit.adapt.efficacy`, full sizes: 4,000 rural radiographs / 600 rural
dashcam frames per seed, so the per-seed 95 % interval is about +/- 0.02) on test data seeds,
with equal budgets (every method starts from the same early-stopped source model and gets the
same number of further epochs).

The margin is the paired bootstrap 95 % interval of (method - source-only) over the target
test images of that seed. Claims, fixed on development data seeds before these test seeds ran:

- the shift is real and the oracle bounds it: on every test seed the oracle's interval over
  source-only lies above 0;
- DANN with the shipped defaults does no harm: on no test seed does its interval lie below 0.

The gap-closed goals (>= 60 % radiograph, >= 40 % dashcam) are reported in docs/efficacy.md,
not asserted: they are not reached (see there).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from shiftkit.adapt import efficacy as E
from shiftkit.datasets.synth.seeds import TEST_DATA_SEEDS

pytestmark = pytest.mark.slow
SEEDS = TEST_DATA_SEEDS[:2]
METHODS = ["source_only", "dann", "oracle"]


@pytest.fixture(scope="module", params=["radiograph", "dashcam"])
def table(request, tmp_path_factory) -> tuple[str, dict]:
    root: Path = tmp_path_factory.mktemp(f"efficacy-{request.param}")
    E.run_grid(E.grid(METHODS, [request.param], SEEDS), root, mode="test", progress=False)
    out = E.summarise(root, methods=METHODS, benchmarks=[request.param], seeds=SEEDS)
    print("\n" + (root / "table.md").read_text())
    return request.param, out["benchmarks"][request.param]


def test_per_seed_intervals_are_narrow_enough(table) -> None:
    name, t = table
    for m, row in t["rows"].items():
        assert row["max_target_ci_halfwidth"] <= 0.025, (name, m, row["target_ci"])


def test_oracle_beats_source_only_on_every_test_seed(table) -> None:
    name, t = table
    for seed, (lo, hi) in zip(t["rows"]["oracle"]["seeds"], t["rows"]["oracle"]["diff_ci"], strict=True):
        assert lo > 0, f"{name} seed {seed}: oracle - source-only in [{lo:.3f}, {hi:.3f}]"


def test_dann_is_never_below_source_only_beyond_noise(table) -> None:
    name, t = table
    for seed, (lo, hi) in zip(t["rows"]["dann"]["seeds"], t["rows"]["dann"]["diff_ci"], strict=True):
        assert hi >= 0, f"{name} seed {seed}: DANN - source-only in [{lo:.3f}, {hi:.3f}]"
