"""Classification / segmentation metrics and ECE against scikit-learn and direct loops."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn import metrics as skm

from shiftkit.datasets.errors import DataError
from shiftkit.evaluation.calibration import expected_calibration_error, reliability_curve
from shiftkit.evaluation.metrics import classification_metrics, segmentation_metrics


def _binary(n=400, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    p = np.clip(0.35 * y + 0.65 * rng.random(n), 0, 1)
    return y, p


def test_binary_metrics_equal_sklearn():
    y, p = _binary()
    m = classification_metrics(y, p, threshold=0.4)
    pred = (p >= 0.4).astype(int)
    tn, fp, fn, tp = skm.confusion_matrix(y, pred).ravel()
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(y, pred))
    assert m["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(y, pred))
    assert m["auroc"] == pytest.approx(skm.roc_auc_score(y, p))
    assert m["average_precision"] == pytest.approx(skm.average_precision_score(y, p))
    assert m["nll"] == pytest.approx(skm.log_loss(y, p))
    assert m["brier"] == pytest.approx(skm.brier_score_loss(y, p))
    assert m["fpr"] == pytest.approx(fp / (fp + tn))
    assert m["fnr"] == pytest.approx(fn / (fn + tp))
    assert m["tpr"] == pytest.approx(skm.recall_score(y, pred))
    assert m["ppv"] == pytest.approx(skm.precision_score(y, pred))
    assert m["selection_rate"] == pytest.approx(pred.mean())
    assert "auroc_undefined" not in m
    assert m["reliability"]["n"] == len(y)


def test_two_column_proba_equals_one_column_and_unlabelled_rows_dropped():
    y, p = _binary(seed=1)
    a = classification_metrics(y, p, include_reliability=False)
    b = classification_metrics(y, np.c_[1 - p, p], include_reliability=False)
    assert a == b
    y2 = np.r_[y, [-1, -1]]
    c = classification_metrics(y2, np.r_[p, [0.9, 0.1]], include_reliability=False)
    assert c["n_unlabelled"] == 2 and c["auroc"] == a["auroc"]


def test_single_class_auroc_is_nan_with_reason():
    m = classification_metrics(np.ones(20, int), np.linspace(0.1, 0.9, 20))
    assert math.isnan(m["auroc"])
    assert "single class" in m["auroc_undefined"]
    assert m["accuracy"] == pytest.approx(np.mean(np.linspace(0.1, 0.9, 20) >= 0.5))


def test_multiclass_metrics_equal_sklearn_and_absent_class_reason():
    rng = np.random.default_rng(2)
    logits = rng.normal(size=(300, 4))
    y = rng.integers(0, 4, 300)
    logits[np.arange(300), y] += 1.0
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    m = classification_metrics(y, p)
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(y, p.argmax(1)))
    assert m["auroc"] == pytest.approx(skm.roc_auc_score(y, p, multi_class="ovr"))
    assert m["nll"] == pytest.approx(skm.log_loss(y, p))
    y3 = np.where(y == 3, 0, y)
    m3 = classification_metrics(y3, p)
    assert math.isnan(m3["auroc"]) and "[3]" in m3["auroc_undefined"]


def test_bad_probabilities_refused_with_clear_errors():
    y, p = _binary(seed=3)
    with pytest.raises(DataError, match="softmax"):
        classification_metrics(y, p * 4 - 2)  # logits
    with pytest.raises(DataError, match="rows but y_true has"):
        classification_metrics(y[:-1], p)
    with pytest.raises(DataError, match="only 2 classes"):
        classification_metrics(np.r_[y[:-1], 5], p)
    with pytest.raises(DataError, match="no labelled rows"):
        classification_metrics(-np.ones(len(p), int), p)


def _ece_loop(y, p, n_bins=15):
    conf = np.maximum(p, 1 - p)
    pred = (p >= 0.5).astype(int)
    total = 0.0
    for b in range(n_bins):
        lo, hi = b / n_bins, (b + 1) / n_bins
        inb = (conf > lo) & (conf <= hi) if b else (conf >= lo) & (conf <= hi)
        if inb.any():
            total += inb.sum() / len(y) * abs((pred[inb] == y[inb]).mean() - conf[inb].mean())
    return total


def test_ece_equals_direct_loop_and_is_small_when_calibrated():
    y, p = _binary(seed=4)
    assert expected_calibration_error(y, p) == pytest.approx(_ece_loop(y, p), abs=1e-12)
    rng = np.random.default_rng(5)
    q = rng.random(20000)
    yc = (rng.random(20000) < q).astype(int)  # calibrated by construction
    assert expected_calibration_error(yc, q) < 0.02
    assert expected_calibration_error(yc, np.clip(q * 0.3 + 0.7 * (q > 0.5), 0, 1)) > 0.1
    curve = reliability_curve(y, p)
    assert len(curve["bin_edges"]) == 16 and sum(curve["bin_count"]) == len(y)


def test_segmentation_metrics_equal_sklearn_jaccard():
    rng = np.random.default_rng(6)
    t = rng.integers(0, 4, size=(3, 16, 16))
    pr = np.where(rng.random((3, 16, 16)) < 0.7, t, rng.integers(0, 4, size=(3, 16, 16)))
    pr[pr == 3] = 2  # class 3 never predicted
    m = segmentation_metrics(t, pr, 5, class_names=["a", "b", "c", "d", "e"])
    ref = skm.jaccard_score(t.ravel(), pr.ravel(), labels=[0, 1, 2, 3], average=None)
    assert [m["per_class_iou"][k] for k in "abcd"] == pytest.approx(ref.tolist())
    assert m["miou"] == pytest.approx(ref.mean())  # class "e" absent everywhere: left out
    assert m["absent_classes"] == ["e"] and math.isnan(m["per_class_iou"]["e"])
    assert m["pixel_accuracy"] == pytest.approx((t == pr).mean())
    f1 = skm.f1_score(t.ravel(), pr.ravel(), labels=[0, 1, 2, 3], average=None)
    assert m["mean_dice"] == pytest.approx(f1.mean())
    # Scores (N, K, H, W) are reduced by argmax; ignore_index drops pixels.
    scores = np.eye(5)[pr].transpose(0, 3, 1, 2)
    assert segmentation_metrics(t, scores, 5)["miou"] == pytest.approx(m["miou"])
    t2 = t.copy()
    t2[0] = 255
    m2 = segmentation_metrics(t2, pr, 5, ignore_index=255)
    assert m2["n_pixels"] == 2 * 16 * 16
    with pytest.raises(DataError, match="outside 0..4"):
        segmentation_metrics(t2, pr, 5)
