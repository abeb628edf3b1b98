"""Task metrics: classification (accuracy, AUROC, ECE, ...) and segmentation (IoU, Dice).

Metrics that are undefined for the data given (AUROC with one class present, IoU of a class
absent from both masks) are NaN with a reason string beside them, never an exception: an audit
of a small site must still produce its report.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from shiftkit.datasets.errors import DataError

from ._arrays import labels_1d, probabilities, to_numpy

__all__ = [
    "auroc", "auroc_from_weights", "auroc_or_nan", "binary_auroc", "calibration_bin_sums", "classification_metrics",
    "confidence_correct", "confusion_matrix_seg", "ece_from_confidence", "expected_calibration_error", "iou_from_counts",
    "miou_from_confusion", "miou_from_counts", "segmentation_counts", "segmentation_metrics",
]


def auroc_from_weights(score: Any, pos_weight: Any, neg_weight: Any) -> Any:
    """The one AUROC: P(s+ > s-) + P(s+ == s-) / 2 over weighted (positive, negative) pairs.

    Every AUROC in shiftkit is this function (Mann-Whitney with ties counted 1/2; with 0/1
    weights it equals scikit-learn's ``roc_auc_score``). One sort, then per-tie-block weight
    sums, so B weightings (bootstrap resamples) cost one pass.

    score: ``(n,)`` scores, higher = more positive. pos_weight, neg_weight: ``(n,)`` or
    ``(B, n)`` non-negative weights of each row as a positive / a negative (0/1 labels;
    bootstrap multiplicities; soft labels ``q`` and ``1 - q``).
    Returns a float, or ``(B,)`` floats when the weights are 2-D; NaN where either class
    has zero total weight.
    """
    s = np.asarray(score, dtype=np.float64).reshape(-1)
    pw, nw = np.asarray(pos_weight, dtype=np.float64), np.asarray(neg_weight, dtype=np.float64)
    batched = pw.ndim == 2 or nw.ndim == 2
    pw2, nw2 = np.atleast_2d(pw), np.atleast_2d(nw)
    if pw2.shape[-1] != len(s) or nw2.shape[-1] != len(s):
        raise DataError(f"score has {len(s)} rows but the weights have {pw2.shape[-1]} and {nw2.shape[-1]}")
    if len(s) == 0:
        out = np.full(max(len(pw2), len(nw2)), np.nan)
        return out if batched else math.nan
    order = np.argsort(s, kind="mergesort")
    s_sorted = s[order]
    starts = np.flatnonzero(np.r_[True, s_sorted[1:] != s_sorted[:-1]])
    posb = np.add.reduceat(pw2[:, order], starts, axis=1)
    negb = np.add.reduceat(nw2[:, order], starts, axis=1)
    below = np.cumsum(negb, axis=1) - negb  # negative weight strictly below each tie block
    num = (posb * (below + 0.5 * negb)).sum(1)
    tot = posb.sum(1) * negb.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(tot > 0, num / tot, np.nan)
    return out if batched else float(out[0])


def binary_auroc(y_true: Any, score: Any) -> float:
    """AUROC of ``score`` ``(n,)`` for ``y_true == 1`` against every other row; NaN when one
    side is empty. Equals ``sklearn.metrics.roc_auc_score(y_true, score)``."""
    pos = np.asarray(y_true).reshape(-1) == 1
    return auroc_from_weights(score, pos, ~pos)


def auroc_or_nan(y: np.ndarray, score: np.ndarray) -> tuple[float, str | None]:
    """Binary AUROC of `score` for y == 1, or (NaN, reason) when it is undefined."""
    y = np.asarray(y)
    if len(y) == 0:
        return math.nan, "no samples"
    classes = np.unique(y)
    if len(classes) < 2:
        return math.nan, f"y_true holds a single class ({classes[0]}); AUROC needs both classes"
    return binary_auroc(y, score), None


def auroc(y: np.ndarray, proba: np.ndarray) -> tuple[float, str | None]:
    """AUROC of class probabilities ``proba`` ``(N, K)`` against integer labels ``y`` ``(N,)``.

    Binary: of ``proba[:, 1]``; ``K > 2``: one-vs-rest, macro-averaged (scikit-learn's
    ``multi_class="ovr", average="macro"``). Returns ``(NaN, reason)`` when undefined (a
    single class present, or a class absent for K > 2).
    """
    y = np.asarray(y)
    proba = np.asarray(proba)
    k = proba.shape[1]
    if k == 2:
        return auroc_or_nan(y, proba[:, 1])
    present = np.unique(y)
    if len(present) < k:
        return math.nan, (f"classes {sorted(set(range(k)) - set(present.tolist()))} are absent "
                          "from y_true; one-vs-rest AUROC needs every class")
    return float(np.mean([binary_auroc(y == c, proba[:, c]) for c in range(k)])), None


# ----------------------------------------------------------------------------- calibration (ECE)


def confidence_correct(y_true: Any, proba: Any) -> tuple[np.ndarray, np.ndarray]:
    """Top-label confidence ``max_k p_ik`` and correctness ``[argmax_k p_ik == y_i]`` (float),
    each ``(N,)``, of labels ``(N,)`` and probabilities ``(N,)`` P(class 1) or ``(N, K)``."""
    y = labels_1d(y_true)
    p = probabilities(proba, len(y))
    if len(y) and (y.min() < 0 or y.max() >= p.shape[1]):
        bad = int(np.argmax((y < 0) | (y >= p.shape[1])))
        raise DataError(f"y_true[{bad}] = {y[bad]} is not a class index in 0..{p.shape[1] - 1}")
    return p.max(1), (p.argmax(1) == y).astype(np.float64)


def calibration_bin_sums(confidence: Any, correct: Any, n_bins: int = 15,
                         weights: Any = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-bin (count, sum of correct, sum of confidence) over ``n_bins`` equal-width bins of
    confidence (bin b holds (b/n_bins, (b+1)/n_bins]; confidence 0 goes to bin 0).

    confidence, correct: ``(n,)``. weights: None, ``(n,)`` or ``(B, n)`` row weights.
    Returns three ``(n_bins,)`` arrays, or ``(B, n_bins)`` with 2-D weights.
    """
    conf = np.asarray(confidence, dtype=np.float64).reshape(-1)
    corr = np.asarray(correct, dtype=np.float64).reshape(-1)
    idx = np.clip(np.ceil(conf * n_bins).astype(int) - 1, 0, n_bins - 1)
    if weights is None:
        return (np.bincount(idx, minlength=n_bins).astype(float),
                np.bincount(idx, weights=corr, minlength=n_bins),
                np.bincount(idx, weights=conf, minlength=n_bins))
    w = np.asarray(weights, dtype=np.float64)
    onehot = np.zeros((len(conf), n_bins))
    onehot[np.arange(len(conf)), idx] = 1.0
    return w @ onehot, w @ (onehot * corr[:, None]), w @ (onehot * conf[:, None])


def ece_from_confidence(confidence: Any, correct: Any, n_bins: int = 15, weights: Any = None) -> Any:
    """The one ECE (Guo et al. 2017): ``sum_b |B_b| / N * |acc(B_b) - conf(B_b)|`` from top-label
    confidence and correctness ``(n,)``; with ``(B, n)`` weights, ``(B,)`` weighted ECEs
    (NaN where a weighting is all zero)."""
    count, acc_sum, conf_sum = calibration_bin_sums(confidence, correct, n_bins, weights)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.abs(acc_sum - conf_sum).sum(-1) / count.sum(-1)
    return out if np.ndim(out) else float(out)


def expected_calibration_error(y_true: Any, proba: Any, n_bins: int = 15) -> float:
    """ECE with `n_bins` equal-width bins of top-label confidence (unitless, in [0, 1])."""
    if int(n_bins) < 1:
        raise DataError(f"argument 'n_bins' must be >= 1; got {n_bins}")
    conf, correct = confidence_correct(y_true, proba)
    if len(conf) == 0:
        raise DataError("cannot compute calibration on zero samples")
    return float(ece_from_confidence(conf, correct, int(n_bins)))


def _balanced_accuracy(y: np.ndarray, pred: np.ndarray) -> float:
    """Mean recall over the classes present in y (sklearn's definition, without its warning
    when a predicted class is absent from y). NaN with fewer than two classes present."""
    present = np.unique(y)
    if len(present) < 2:
        return math.nan
    return float(np.mean([(pred[y == c] == c).mean() for c in present]))


def classification_metrics(
    y_true: Any,
    proba: Any,
    *,
    threshold: float = 0.5,
    n_bins: int = 15,
    include_reliability: bool = True,
) -> dict[str, Any]:
    """Metrics of predicted class probabilities against integer labels.

    y_true: (N,) int labels; rows with a negative label (the datasets' "no label" value -1)
    are left out and counted in "n_unlabelled". proba: (N,) P(class 1) for binary tasks or
    (N, K) probabilities (rows sum to 1; logits are refused).
    threshold: binary decision threshold on P(class 1); multi-class uses argmax.

    Returns a JSON-ready dict: n, n_unlabelled, accuracy, balanced_accuracy, auroc (binary:
    P(class 1); multi-class: one-vs-rest macro), auroc_undefined (reason, only when auroc is
    NaN), ece (15 equal-width bins, top-label), nll, brier; binary adds threshold, prevalence,
    selection_rate, tpr, tnr, fpr, fnr, ppv, average_precision; "reliability" holds the
    aggregate per-bin curve when include_reliability (no per-sample values).
    """
    from sklearn.metrics import (
        average_precision_score,
        brier_score_loss,
        log_loss,
    )

    y_all = labels_1d(y_true)
    p_all = probabilities(proba, len(y_all))
    k = p_all.shape[1]
    keep = y_all >= 0
    y, p = y_all[keep], p_all[keep]
    if len(y) == 0:
        raise DataError("y_true has no labelled rows (all labels are negative / missing)")
    if y.max() >= k:
        bad = int(np.argmax(y_all >= k))
        raise DataError(f"y_true[{bad}] = {y_all[bad]} but proba has only {k} classes")
    if k == 2:
        if not 0.0 <= threshold <= 1.0:
            raise DataError(f"argument 'threshold' must lie in [0, 1]; got {threshold}")
        pred = (p[:, 1] >= threshold).astype(np.int64)
    else:
        pred = p.argmax(1)
    out: dict[str, Any] = {
        "n": int(len(y)),
        "n_unlabelled": int((~keep).sum()),
        "accuracy": float((pred == y).mean()),
        "balanced_accuracy": _balanced_accuracy(y, pred),
    }
    auc, reason = auroc(y, p)
    out["auroc"] = auc
    if reason:
        out["auroc_undefined"] = reason
    from .calibration import reliability_curve  # calibration builds on this module

    rel = reliability_curve(y, p, n_bins)
    out["ece"] = rel["ece"]
    out["nll"] = float(log_loss(y, p, labels=list(range(k))))
    if k == 2:
        out["brier"] = float(brier_score_loss(y, p[:, 1], labels=[0, 1]))
        pos, neg = y == 1, y == 0
        tp = int((pred[pos] == 1).sum())
        fn = int(pos.sum()) - tp
        tn = int((pred[neg] == 0).sum())
        fp = int(neg.sum()) - tn
        out.update(
            threshold=float(threshold),
            prevalence=float(pos.mean()),
            selection_rate=float(pred.mean()),
            tpr=tp / (tp + fn) if tp + fn else math.nan,
            tnr=tn / (tn + fp) if tn + fp else math.nan,
            fpr=fp / (fp + tn) if fp + tn else math.nan,
            fnr=fn / (fn + tp) if fn + tp else math.nan,
            ppv=tp / (tp + fp) if tp + fp else math.nan,
            average_precision=float(average_precision_score(y, p[:, 1])) if pos.any() and neg.any() else math.nan,
        )
    else:
        onehot = np.eye(k)[y]
        out["brier"] = float(((p - onehot) ** 2).sum(1).mean())
    if include_reliability:
        out["reliability"] = rel
    return out


def confusion_matrix_seg(y_true: Any, y_pred: Any, num_classes: int, *, ignore_index: int | None = None) -> np.ndarray:
    """Pixel confusion matrix (num_classes, num_classes), rows = truth, columns = prediction.

    y_true: int labels (..., H, W); y_pred: labels of the same shape, or class scores with one
    extra class axis at position -3 ((N, K, H, W) or (K, H, W)), reduced by argmax.
    Pixels equal to ignore_index in y_true are left out.
    """
    t = to_numpy(y_true, "y_true")
    pr = to_numpy(y_pred, "y_pred")
    if pr.ndim == t.ndim + 1:
        if pr.shape[-3] != num_classes:
            raise DataError(f"y_pred scores have {pr.shape[-3]} classes on axis -3, expected {num_classes}")
        pr = pr.argmax(axis=-3)
    if pr.shape != t.shape:
        raise DataError(f"y_pred shape {pr.shape} does not match y_true shape {t.shape}")
    t = t.reshape(-1).astype(np.int64)
    pr = pr.reshape(-1).astype(np.int64)
    if ignore_index is not None:
        keep = t != ignore_index
        t, pr = t[keep], pr[keep]
    for name, arr in (("y_true", t), ("y_pred", pr)):
        if arr.size and (arr.min() < 0 or arr.max() >= num_classes):
            raise DataError(f"{name} holds class {int(arr.max() if arr.max() >= num_classes else arr.min())} "
                            f"outside 0..{num_classes - 1}")
    return np.bincount(t * num_classes + pr, minlength=num_classes**2).reshape(num_classes, num_classes)


def segmentation_metrics(
    y_true: Any,
    y_pred: Any,
    num_classes: int,
    *,
    ignore_index: int | None = None,
    class_names: list[str] | None = None,
) -> dict[str, Any]:
    """Segmentation metrics from one confusion matrix accumulated over all images.

    Returns: miou (mean over classes present in truth or prediction), per_class_iou
    {name: IoU or NaN}, mean_dice, per_class_dice, pixel_accuracy, n_pixels, absent_classes
    (classes in neither truth nor prediction: IoU undefined, excluded from the means).
    """
    if class_names is not None and len(class_names) != num_classes:
        raise DataError(f"class_names has {len(class_names)} names for {num_classes} classes")
    names = list(class_names) if class_names is not None else [str(i) for i in range(num_classes)]
    cm = confusion_matrix_seg(y_true, y_pred, num_classes, ignore_index=ignore_index).astype(np.float64)
    tp = np.diag(cm)
    gt = cm.sum(1)
    pd_ = cm.sum(0)
    union = gt + pd_ - tp
    iou = iou_from_counts(tp, pd_, gt)
    with np.errstate(invalid="ignore", divide="ignore"):
        dice = np.where(gt + pd_ > 0, 2 * tp / (gt + pd_), np.nan)
    total = cm.sum()
    return {
        "miou": miou_from_counts(tp, pd_, gt),
        "mean_dice": float(np.nanmean(dice)) if np.isfinite(dice).any() else math.nan,
        "pixel_accuracy": float(tp.sum() / total) if total else math.nan,
        "n_pixels": int(total),
        "per_class_iou": {nm: float(v) for nm, v in zip(names, iou, strict=False)},
        "per_class_dice": {nm: float(v) for nm, v in zip(names, dice, strict=False)},
        "absent_classes": [nm for nm, u in zip(names, union, strict=False) if u == 0],
    }


def iou_from_counts(intersection: Any, predicted: Any, true: Any) -> np.ndarray:
    """Per-class IoU ``(K,)`` from pixel counts ``(K,)``: intersection (true positives),
    predicted and true pixels per class; NaN for a class in neither truth nor prediction."""
    inter = np.asarray(intersection, dtype=np.float64)
    union = np.asarray(predicted, dtype=np.float64) + np.asarray(true, dtype=np.float64) - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, inter / union, np.nan)


def miou_from_counts(intersection: Any, predicted: Any, true: Any) -> float:
    """The one mIoU: the mean of :func:`iou_from_counts` over the classes present in truth or
    prediction (NaN when none is)."""
    iou = iou_from_counts(intersection, predicted, true)
    ok = np.isfinite(iou)
    return float(iou[ok].mean()) if ok.any() else math.nan


def miou_from_confusion(cm: Any) -> float:
    """mIoU of a pixel confusion matrix ``(K, K)`` (rows truth, columns prediction)."""
    cm = np.asarray(cm, dtype=np.float64)
    return miou_from_counts(np.diag(cm), cm.sum(0), cm.sum(1))


def segmentation_counts(y_true: Any, y_pred: Any, num_classes: int, *, ignore_index: int | None = None) -> np.ndarray:
    """Per-image pixel counts ``(N, 3, K)``: intersection, predicted and true pixels per class,
    of label maps ``(N, H, W)`` (pixels equal to ``ignore_index`` in ``y_true`` left out).

    Summed over images, ``miou_from_counts(*counts.sum(0))`` is the mIoU of the whole set;
    kept per image so bootstrap resamples of images cost no new prediction."""
    t_all, p_all = to_numpy(y_true, "y_true"), to_numpy(y_pred, "y_pred")
    if t_all.shape != p_all.shape:
        raise DataError(f"y_pred shape {p_all.shape} does not match y_true shape {t_all.shape}")
    out = np.zeros((len(t_all), 3, num_classes), np.int64)
    for i in range(len(t_all)):
        t, p = t_all[i].ravel().astype(np.int64), p_all[i].ravel().astype(np.int64)
        if ignore_index is not None:
            keep = t != ignore_index
            t, p = t[keep], p[keep]
        out[i, 0] = np.bincount(t[t == p], minlength=num_classes)
        out[i, 1] = np.bincount(p, minlength=num_classes)
        out[i, 2] = np.bincount(t, minlength=num_classes)
    return out
