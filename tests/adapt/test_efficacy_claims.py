"""Adaptation claims on TEST data seeds, asserted per seed with a margin from the benchmark's noise.

Replaces the earlier efficacy tests (three seeds whose data seed was the model seed, about 160
target test images, asserted on the mean with no margin). Here each benchmark runs through the
efficacy harness (`shiftkit.adapt.harness.efficacy`, full sizes: 4,000 rural radiographs / 600 rural
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

from shiftkit.adapt.harness import efficacy as E
from shiftkit.datasets.synth.seeds import TEST_DATA_SEEDS

pytestmark = pytest.mark.slow
# CI checks the claims on the first test data seed (the suite must stay near 15 minutes on 2
# cores); `make efficacy` runs five test seeds and benchmarks/efficacy/test/table.md records the
# same claims on all of them.
SEEDS = TEST_DATA_SEEDS[:1]
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
    wide = {m: round(r["max_target_ci_halfwidth"], 3) for m, r in t["rows"].items() if r["max_target_ci_halfwidth"] > 0.025}
    if name == "dashcam" and set(wide) == {"oracle"}:
        # Recorded failure (docs/efficacy.md): on test seed 9000 the dashcam oracle's mIoU interval
        # is +/- 0.037 (dev seeds 100-101: +/- 0.005), while source-only and DANN stay near
        # +/- 0.004. Rare classes the oracle predicts on few of the 600 frames enter or leave
        # the class average between bootstrap resamples. Not fixed by resizing the test split.
        pytest.xfail(f"dashcam oracle interval wider than +/- 0.025 on a test seed: {wide}")
    assert not wide, f"{name}: per-seed 95 % interval half-widths above 0.025: {wide}"


def test_oracle_beats_source_only_on_every_test_seed(table) -> None:
    name, t = table
    for seed, (lo, hi) in zip(t["rows"]["oracle"]["seeds"], t["rows"]["oracle"]["diff_ci"], strict=True):
        assert lo > 0, f"{name} seed {seed}: oracle - source-only in [{lo:.3f}, {hi:.3f}]"


def test_dann_is_never_below_source_only_beyond_noise(table) -> None:
    name, t = table
    for seed, (lo, hi) in zip(t["rows"]["dann"]["seeds"], t["rows"]["dann"]["diff_ci"], strict=True):
        assert hi >= 0, f"{name} seed {seed}: DANN - source-only in [{lo:.3f}, {hi:.3f}]"
