"""Domain-gap measures: exactness against direct NumPy, calibration and power of the MMD test,
and the measures' blind spots (CORAL cannot see a pure mean shift; the summary must)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import torch

from shiftkit.datasets.errors import DataError
from shiftkit.evaluation import gap


def _direct_mmd2(x: np.ndarray, y: np.ndarray, sigma: float) -> float:
    """Textbook unbiased MMD^2 with explicit loops (Gretton et al. 2012, eq. 3)."""
    def k(a, b):
        return np.exp(-np.sum((a - b) ** 2) / (2 * sigma**2))

    n, m = len(x), len(y)
    kxx = sum(k(x[i], x[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    kyy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    kxy = sum(k(x[i], y[j]) for i in range(n) for j in range(m)) / (n * m)
    return kxx + kyy - 2 * kxy


def test_mmd2_equals_direct_numpy_with_given_and_median_bandwidth():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(17, 3))
    y = rng.normal(size=(13, 3)) + [0.4, 0.0, -0.2]
    assert gap.mmd2_unbiased(x, y, bandwidth=1.3) == pytest.approx(_direct_mmd2(x, y, 1.3), rel=1e-10)
    z = np.concatenate([x, y])
    d = np.sqrt(((z[:, None] - z[None]) ** 2).sum(-1))[np.triu_indices(len(z), 1)]
    sigma = float(np.median(d))
    assert gap.median_bandwidth(x, y) == pytest.approx(sigma, rel=1e-10)
    assert gap.mmd2_unbiased(x, y) == pytest.approx(_direct_mmd2(x, y, sigma), rel=1e-10)
    res = gap.mmd_test(x, y, n_permutations=50)
    assert res.mmd2 == pytest.approx(_direct_mmd2(x, y, sigma), rel=1e-10)
    assert res.bandwidth == pytest.approx(sigma)


def test_mmd_permutation_statistics_equal_recomputed_split():
    """The quadratic-form shortcut gives the same MMD^2 as recomputing on the permuted split."""
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(9, 2)), rng.normal(size=(7, 2)) + 1.0
    z = np.concatenate([x, y])
    k, n, m, bw = gap.mmd._pooled_kernel(x, y, None, torch.float64, seed=0)
    perm = rng.permutation(len(z))
    a = torch.zeros(1, len(z), dtype=torch.float64)
    a[0, perm[:n]] = 1.0
    direct = _direct_mmd2(z[perm[:n]], z[perm[n:]], bw)
    assert float(k.mmd2(a, n, m)[0]) == pytest.approx(direct, rel=1e-10)


def test_mmd_blocked_kernel_equals_single_block():
    rng = np.random.default_rng(3)
    z = torch.from_numpy(rng.normal(size=(50, 4)))
    a = (torch.rand(6, 50, generator=torch.Generator().manual_seed(0)) < 0.5).double()
    with gap.mmd._small_problem_threads(50):
        one = gap.mmd._SymKernel(z, 1.5, block=1000)
        many = gap.mmd._SymKernel(z, 1.5, block=7)
    assert len(many.blocks) > 1
    torch.testing.assert_close(one.quad(a), many.quad(a))
    torch.testing.assert_close(one.row_sums, many.row_sums)


def test_mmd_test_is_calibrated_under_no_shift():
    """200 trials without shift: rejection rate at alpha = 0.05 must lie in [0.02, 0.08]."""
    rng = np.random.default_rng(0)
    rejections = 0
    for t in range(200):
        x = rng.normal(size=(40, 5))
        y = rng.normal(size=(40, 5))
        rejections += gap.mmd_test(x, y, n_permutations=199, seed=t).p_value <= 0.05
    rate = rejections / 200
    assert 0.02 <= rate <= 0.08, rate


def test_mmd_test_detects_small_mean_shift():
    """Mean shift of 0.5 SD in 1 of 5 dimensions (a small shift), n = 200 per side:
    power over 50 trials must exceed 0.8 (0.96 measured over 100 trials)."""
    rng = np.random.default_rng(1)
    shift = np.array([0.5, 0, 0, 0, 0])
    hits = 0
    for t in range(50):
        x = rng.normal(size=(200, 5))
        y = rng.normal(size=(200, 5)) + shift
        hits += gap.mmd_test(x, y, n_permutations=199, seed=t).p_value <= 0.05
    assert hits / 50 > 0.8, hits / 50


def test_mmd_accepts_tensors_and_float32_path_matches_float64():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(1600, 6)).astype(np.float32)
    y = (rng.normal(size=(1600, 6)) + 0.1).astype(np.float32)
    r32 = gap.mmd_test(torch.from_numpy(x), torch.from_numpy(y), n_permutations=20, seed=0)  # N > 3000
    r64 = gap.mmd2_unbiased(x[:1000].astype(np.float64), y[:1000].astype(np.float64), bandwidth=r32.bandwidth)
    assert r32.n_x == 1600 and r32.n_permutations == 20
    assert r32.mmd2 == pytest.approx(gap.mmd2_unbiased(x, y), rel=1e-3, abs=1e-6)
    assert np.isfinite(r64)


def test_mmd_max_samples_subsamples_each_side():
    rng = np.random.default_rng(5)
    res = gap.mmd_test(rng.normal(size=(300, 2)), rng.normal(size=(120, 2)), n_permutations=10, max_samples=100)
    assert (res.n_x, res.n_y) == (100, 100)


def test_linear_mmd_calibrated_and_powerful():
    rng = np.random.default_rng(6)
    null_p = [gap.mmd_linear_test(rng.normal(size=(400, 3)), rng.normal(size=(400, 3)), seed=t).p_value
              for t in range(100)]
    assert 0.0 <= np.mean(np.array(null_p) <= 0.05) <= 0.12
    shifted = gap.mmd_linear_test(rng.normal(size=(4000, 3)), rng.normal(size=(4000, 3)) + 0.5)
    assert shifted.p_value < 1e-3 and shifted.mmd2 > 0


def test_coral_blind_to_mean_shift_but_summary_sees_it():
    """The peer pitfall: a covariance distance cannot see a pure mean shift. gap_summary must."""
    rng = np.random.default_rng(7)
    xs = rng.normal(size=(300, 4))
    xt = xs + np.array([1.0, 0, 0, 0])  # identical covariance, shifted mean
    assert gap.coral_distance(xs, xt) == pytest.approx(0.0, abs=1e-12)
    s = gap.gap_summary(xs, xt, n_permutations=99)
    assert s["coral"] == pytest.approx(0.0, abs=1e-12)
    assert s["mmd_p_value"] <= 0.01
    assert s["frechet"] == pytest.approx(1.0, rel=1e-9)
    assert s["mean_l2"] == pytest.approx(1.0, rel=1e-9)
    assert s["proxy_a_distance"] > 0.3


def test_frechet_matches_closed_form_and_survives_rank_deficiency():
    rng = np.random.default_rng(8)
    xs = rng.normal(size=(500, 3)) @ np.diag([1.0, 2.0, 0.5])
    xt = rng.normal(size=(400, 3)) + 0.3
    mu1, mu2 = xs.mean(0), xt.mean(0)
    c1, c2 = np.cov(xs, rowvar=False), np.cov(xt, rowvar=False)
    ref = ((mu1 - mu2) ** 2).sum() + np.trace(c1 + c2 - 2 * np.real(scipy.linalg.sqrtm(c1 @ c2)))
    assert gap.frechet_distance(xs, xt) == pytest.approx(ref, rel=1e-8)
    # n < D: singular covariances, where sqrtm of the product is unreliable.
    a, b = rng.normal(size=(10, 64)), rng.normal(size=(12, 64))
    v = gap.frechet_distance(a, b)
    assert np.isfinite(v) and v > 0
    assert gap.frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)


def test_proxy_a_distance_separates_and_does_not():
    rng = np.random.default_rng(9)
    same = gap.proxy_a_distance(rng.normal(size=(400, 5)), rng.normal(size=(400, 5)))
    far = gap.proxy_a_distance(rng.normal(size=(400, 5)), rng.normal(size=(400, 5)) + 4.0)
    assert same["proxy_a_distance"] < 0.3
    assert far["proxy_a_distance"] > 1.8
    assert far["domain_auroc"] > 0.99


def test_layer_profile_and_compare():
    rng = np.random.default_rng(10)
    same = rng.normal(size=(60, 5))
    layers = {
        "block1": (rng.normal(size=(60, 3)), rng.normal(size=(60, 3)) + 2.0),
        # The same points in another order: no gap at all (p-value far from 0 by construction).
        "block2": (same, same[::-1] + 1e-3 * rng.normal(size=(60, 5))),
    }
    prof = gap.layer_gap_profile(layers, n_permutations=49)
    assert list(prof) == ["block1", "block2"]
    assert prof["block1"]["mmd_p_value"] < 0.05 < prof["block2"]["mmd_p_value"]
    assert prof["block1"]["mmd2"] > prof["block2"]["mmd2"]
    cmp_ = gap.compare_gaps(prof["block1"], prof["block2"])
    assert cmp_["mean_l2"]["change"] < 0 and "dim" not in cmp_


def test_bad_inputs_raise_named_errors():
    rng = np.random.default_rng(11)
    with pytest.raises(DataError, match="feature column"):
        gap.mmd_test(rng.normal(size=(5, 2)), rng.normal(size=(5, 3)))
    bad = rng.normal(size=(5, 2))
    bad[3, 1] = np.nan
    with pytest.raises(DataError, match="row 3"):
        gap.frechet_distance(bad, rng.normal(size=(5, 2)))
    with pytest.raises(DataError, match="at least 2 rows"):
        gap.mmd2_unbiased(rng.normal(size=(1, 2)), rng.normal(size=(5, 2)))
    with pytest.raises(DataError, match="layers\\['l1'\\]"):
        gap.layer_gap_profile({"l1": (rng.normal(size=(5, 2)), rng.normal(size=(5, 3)))})


def test_rbf_proxy_a_distance_sees_a_shift_a_linear_classifier_cannot():
    """Same mean, different radius: a disc inside a ring. No line separates them, a kernel does."""
    rng = np.random.default_rng(0)
    angle = rng.uniform(0, 2 * np.pi, size=(2, 400))
    radius = np.stack([rng.uniform(0, 1, 400), rng.uniform(2, 3, 400)])
    pts = np.stack([radius * np.cos(angle), radius * np.sin(angle)], axis=-1)  # (2, 400, 2)
    linear = gap.proxy_a_distance(pts[0], pts[1], seed=0)
    rbf = gap.proxy_a_distance(pts[0], pts[1], seed=0, classifier="rbf")
    assert linear["proxy_a_distance"] < 0.5
    assert rbf["proxy_a_distance"] > 1.8
    with pytest.raises(DataError, match="classifier"):
        gap.proxy_a_distance(pts[0], pts[1], classifier="tree")
