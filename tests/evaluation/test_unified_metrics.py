"""The one AUROC, mIoU and ECE in `shiftkit.evaluation.metrics` equal scikit-learn's (or a
direct reference computation) on random inputs with ties, weights and ignored pixels, and the
places that used to compute their own copy now give the same numbers."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, confusion_matrix, jaccard_score, roc_auc_score

from shiftkit.evaluation import metrics, statistics
from shiftkit.evaluation.selection import candidate_outputs_from_predictions


@pytest.mark.parametrize("seed", range(5))
def test_binary_auroc_equals_sklearn_with_ties(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(5, 300))
    y = rng.integers(0, 2, n)
    y[:2] = [0, 1]
    s = np.round(rng.random(n), 1)  # many ties
    assert metrics.binary_auroc(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    assert metrics.auroc_or_nan(y, s)[0] == pytest.approx(roc_auc_score(y, s), abs=1e-12)


def test_weighted_auroc_equals_sklearn_sample_weight() -> None:
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 200)
    s = np.round(rng.random(200), 2)
    w = rng.integers(0, 4, (6, 200)).astype(float)  # bootstrap multiplicities
    got = metrics.auroc_from_weights(s, w * (y == 1), w * (y == 0))
    want = [roc_auc_score(y, s, sample_weight=wi) for wi in w]
    np.testing.assert_allclose(got, want, atol=1e-12)


def test_multiclass_auroc_equals_sklearn_ovr_macro() -> None:
    rng = np.random.default_rng(1)
    p = rng.dirichlet(np.ones(4), 150)
    p = np.round(p, 2)
    p /= p.sum(1, keepdims=True)
    y = rng.integers(0, 4, 150)
    got, reason = metrics.auroc(y, p)
    assert reason is None
    assert got == pytest.approx(roc_auc_score(y, p, multi_class="ovr", average="macro"), abs=1e-12)


def test_auroc_undefined_is_nan() -> None:
    assert np.isnan(metrics.binary_auroc([1, 1, 1], [0.1, 0.2, 0.3]))
    assert metrics.auroc_or_nan(np.array([0, 0]), np.array([0.1, 0.2]))[1]


def test_miou_equals_sklearn_jaccard_with_ignored_pixels() -> None:
    rng = np.random.default_rng(0)
    k = 5
    t = rng.integers(0, k, (3, 16, 16))
    p = rng.integers(0, k, (3, 16, 16))
    t[:, :2] = -1  # ignored pixels
    t[t == 4] = 0  # class 4 absent from truth, present in prediction
    keep = t != -1
    want = jaccard_score(t[keep], p[keep], average="macro", labels=[c for c in range(k)
                                                                      if (t[keep] == c).any() or (p[keep] == c).any()])
    seg = metrics.segmentation_metrics(t, p, k, ignore_index=-1)["miou"]
    counts = metrics.segmentation_counts(t, p, k, ignore_index=-1)
    cm = confusion_matrix(t[keep], p[keep], labels=list(range(k)))
    assert seg == pytest.approx(want, abs=1e-12)
    assert metrics.miou_from_counts(*counts.sum(0)) == pytest.approx(want, abs=1e-12)
    assert metrics.miou_from_confusion(cm) == pytest.approx(want, abs=1e-12)
    assert statistics.metric_from_stats({"counts": counts}) == pytest.approx(want, abs=1e-12)


def _reference_ece(y: np.ndarray, p: np.ndarray, n_bins: int = 15) -> float:
    conf, pred = p.max(1), p.argmax(1)
    total = 0.0
    for b in range(n_bins):
        lo, hi = b / n_bins, (b + 1) / n_bins
        m = (conf > lo) & (conf <= hi) if b else (conf >= 0) & (conf <= hi)
        if m.any():
            total += m.sum() / len(y) * abs((pred[m] == y[m]).mean() - conf[m].mean())
    return total


def test_ece_equals_reference_and_weighted_ece_equals_repeated_rows() -> None:
    rng = np.random.default_rng(2)
    p = rng.dirichlet(np.ones(3), 400)
    y = rng.integers(0, 3, 400)
    assert metrics.expected_calibration_error(y, p) == pytest.approx(_reference_ece(y, p), abs=1e-12)
    conf, correct = metrics.confidence_correct(y, p)
    w = rng.integers(0, 3, (2, 400))
    got = metrics.ece_from_confidence(conf, correct, 15, weights=w)
    for wi, g in zip(w, got, strict=True):
        idx = np.repeat(np.arange(400), wi)
        assert g == pytest.approx(_reference_ece(y[idx], p[idx]), abs=1e-12)


def test_selection_outputs_skip_ignored_pixels() -> None:
    rng = np.random.default_rng(4)
    k, n = 3, 4
    y = rng.integers(0, k, (n, 8, 8))
    p = rng.dirichlet(np.ones(k), (n, 8, 8)).transpose(0, 3, 1, 2)
    y_ign = y.copy()
    y_ign[:, :, :4] = -1
    f = rng.normal(size=(n, 5))
    out = candidate_outputs_from_predictions(p, f, y_ign, f, p, f, "segmentation")
    # The loss and mIoU of the labelled half only.
    half_p, half_y = p[:, :, :, 4:], y[:, :, 4:]
    want_loss = -np.log(np.take_along_axis(half_p, half_y[:, None], 1)[:, 0]).reshape(n, -1).mean(1)
    np.testing.assert_allclose(out.source_val_loss, want_loss, rtol=1e-5)
    keep = y_ign != -1
    assert out.source_val_score == pytest.approx(
        jaccard_score(y_ign[keep], p.argmax(1)[keep], average="macro"), abs=1e-12)


def test_bootstrap_se_of_accuracy_matches_the_binomial_standard_error() -> None:
    rng = np.random.default_rng(0)
    n = 400
    y = rng.integers(0, 3, n)
    pred = np.where(rng.random(n) < 0.8, y, (y + 1) % 3)
    stats = {"label": y, "pred": pred}
    p = accuracy_score(y, pred)
    assert statistics.metric_from_stats(stats) == pytest.approx(p)
    se = statistics.bootstrap_se(stats, n_boot=400)
    assert se == pytest.approx(math.sqrt(p * (1 - p) / n), rel=0.15)
    # A perfect segmentation has no spread; a one-class AUROC resample is left out, not NaN.
    counts = np.zeros((10, 3, 2), np.int64)
    counts[:, :, 0] = 50
    assert statistics.bootstrap_se({"counts": counts}) == 0.0
    assert np.isfinite(statistics.bootstrap_se({"label": np.array([0] * 9 + [1]), "score": np.linspace(0, 1, 10)}))
