"""Transferability scores equal their definitions (LogME: a direct evidence maximisation;
LEEP / NCE: hand-computed tiny examples; H-score: scikit-learn's Ledoit-Wolf; GBC: the closed
form) and rank what they should."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.optimize import minimize

from shiftkit.datasets.errors import DataError
from shiftkit.evaluation.transferability import (
    gbc,
    h_score,
    leep,
    logme,
    logme_details,
    nce,
    rank_agreement,
    score_all,
)


def _direct_log_evidence(f: np.ndarray, y: np.ndarray) -> float:
    """max over (alpha, beta) of the closed-form log evidence (Bishop eq. 3.86) / N, by
    Nelder-Mead on (log alpha, log beta) from three starts, with A, m, log|A| computed
    directly (solve + slogdet), no eigendecomposition."""
    n, d = f.shape
    gram, fty = f.T @ f, f.T @ y

    def neg(p: np.ndarray) -> float:
        a, b = np.exp(p)
        amat = a * np.eye(d) + b * gram
        m = b * np.linalg.solve(amat, fty)
        r = y - f @ m
        ev = (d / 2 * np.log(a) + n / 2 * np.log(b) - n / 2 * np.log(2 * np.pi) - b / 2 * r @ r - a / 2 * m @ m
              - 0.5 * np.linalg.slogdet(amat)[1])
        return -ev / n

    runs = [minimize(neg, x0, method="Nelder-Mead", options={"xatol": 1e-11, "fatol": 1e-14, "maxiter": 20000})
            for x0 in ([0.0, 0.0], [3.0, -1.0], [-2.0, 2.0])]
    return -min(r.fun for r in runs)


@pytest.mark.parametrize(("n", "d", "c"), [(80, 10, 3), (25, 40, 2), (300, 6, 4)])
def test_logme_equals_direct_evidence_maximisation(n: int, d: int, c: int) -> None:
    rng = np.random.default_rng(n + d)
    y = rng.integers(0, c, n)
    f = rng.standard_normal((n, d)) + 0.8 * np.eye(c, d)[y]  # some class signal
    res = logme_details(f, y)
    direct = np.array([_direct_log_evidence(f, (y == k).astype(float)) for k in range(c)])
    assert res.converged
    np.testing.assert_allclose(res.evidence, direct, atol=1e-6, rtol=0)
    assert abs(res.score - direct.mean()) < 1e-6
    # The fixed point is a maximum: nudging (alpha, beta) lowers the evidence.
    assert res.alpha.min() > 0 and res.beta.min() > 0


def test_logme_float32_close_and_prefers_informative_features() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 400)
    good = rng.standard_normal((400, 32)) + 2.0 * np.eye(3, 32)[y]
    noise = rng.standard_normal((400, 32))
    assert logme(good, y) > logme(noise, y) + 0.05
    assert abs(logme(good, y, dtype="float32") - logme(good, y)) < 1e-4


def test_leep_equals_hand_computation() -> None:
    theta = np.array([[0.9, 0.1], [0.6, 0.4], [0.2, 0.8], [0.3, 0.7]])
    y = np.array([0, 0, 1, 1])
    # joint P(y, z) = 1/4 sum theta over rows of class y
    joint = np.array([[1.5, 0.5], [0.5, 1.5]]) / 4
    cond = joint / joint.sum(0)  # P(y | z) = [[0.75, 0.25], [0.25, 0.75]]
    eep = [theta[i] @ cond[y[i]] for i in range(4)]
    expected = np.mean(np.log(eep))
    assert leep(theta, y) == pytest.approx(expected, abs=1e-12)
    assert leep(theta[:, 1], y) == pytest.approx(expected, abs=1e-12)  # (N,) = P(class 1)
    # by hand: eep = [0.7, 0.55, 0.65, 0.6]
    assert expected == pytest.approx(np.mean(np.log([0.7, 0.55, 0.65, 0.6])), abs=1e-12)


def test_nce_equals_hand_computation() -> None:
    z = np.array([0, 0, 0, 1, 1, 2])
    y = np.array([0, 0, 1, 1, 1, 0])
    # P(y,z): z=0 -> (2/6, 1/6); z=1 -> (0, 2/6); z=2 -> (1/6, 0)
    expected = (2 / 6) * math.log(2 / 3) + (1 / 6) * math.log(1 / 3) + 0.0 + 0.0
    assert nce(z, y) == pytest.approx(expected, abs=1e-12)
    proba = np.eye(3)[z] * 0.8 + 0.2 / 3
    assert nce(proba, y) == pytest.approx(expected, abs=1e-12)
    assert nce(y, y) == pytest.approx(0.0, abs=1e-12)  # the prediction determines the label


def test_h_score_matches_sklearn_ledoit_wolf_definition() -> None:
    from sklearn.covariance import LedoitWolf

    rng = np.random.default_rng(1)
    y = rng.integers(0, 3, 30)
    f = rng.standard_normal((30, 50)) + np.eye(3, 50)[y]  # N < D: the plain covariance is singular
    lw = LedoitWolf().fit(f)
    g = np.stack([f[y == k].mean(0) for k in range(3)])[y]
    cov_g = np.cov(g, rowvar=False, bias=True)
    expected = np.trace(np.linalg.inv(lw.covariance_) @ ((1 - lw.shrinkage_) * cov_g))
    assert h_score(f, y) == pytest.approx(expected, rel=1e-9)
    assert np.isfinite(h_score(f, y, shrinkage=False))


def test_gbc_closed_form_two_spherical_gaussians() -> None:
    # Two classes, one feature, no PCA: D_B = (mu diff)^2 / (8 s) + 0 (equal variances)
    f = np.array([[0.0], [2.0], [4.0], [6.0]])
    y = np.array([0, 0, 1, 1])
    var = 1.0  # population variance of {0, 2} and {4, 6}
    db = (1.0 - 5.0) ** 2 / var / 8
    assert gbc(f, y, n_components=None) == pytest.approx(-2 * math.exp(-db), abs=1e-12)
    rng = np.random.default_rng(2)
    yy = rng.integers(0, 2, 200)
    sep = rng.standard_normal((200, 16)) + 3.0 * yy[:, None]
    mixed = rng.standard_normal((200, 16)) + 0.2 * yy[:, None]
    assert gbc(sep, yy) > gbc(mixed, yy)


def test_score_all_and_rank_agreement() -> None:
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 60)
    f = rng.standard_normal((60, 8)) + y[:, None]
    p = np.clip(np.stack([1 - y * 0.7, y * 0.7], 1) + 0.15, 0, None)
    p /= p.sum(1, keepdims=True)
    out = score_all(f, y, p)
    assert set(out) == {"logme", "leep", "nce", "h_score", "gbc"} and all(np.isfinite(list(out.values())))
    assert math.isnan(score_all(f, y)["leep"])
    agree = rank_agreement({"same": [1, 2, 3, 4], "reversed": [4, 3, 2, 1], "flat": [1, 1, 1, 1]}, [0.5, 0.6, 0.7, 0.8])
    assert agree["same"] == pytest.approx(1.0) and agree["reversed"] == pytest.approx(-1.0)
    assert math.isnan(agree["flat"])


def test_bad_input_names_the_argument() -> None:
    f = np.zeros((4, 2))
    with pytest.raises(DataError, match="single class"):
        logme(f + np.arange(8).reshape(4, 2), [1, 1, 1, 1])
    with pytest.raises(DataError, match="3 labels for 4 rows"):
        h_score(f, [0, 1, 0])
    with pytest.raises(DataError, match="source_proba"):
        leep(np.array([[0.5, 0.9], [0.1, 0.2]]), [0, 1])
    with pytest.raises(DataError, match="negative labels"):
        logme(np.eye(4), [0, 1, -1, 1])
