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
from .calibration import reliability_curve

__all__ = ["auroc", "auroc_or_nan", "classification_metrics", "confusion_matrix_seg", "segmentation_metrics"]


def auroc_or_nan(y: np.ndarray, score: np.ndarray) -> tuple[float, str | None]:
    """Binary AUROC of `score` for y == 1, or (NaN, reason) when it is undefined."""
    from sklearn.metrics import roc_auc_score

    classes = np.unique(y)
    if len(y) == 0:
        return math.nan, "no samples"
    if len(classes) < 2:
        return math.nan, f"y_true holds a single class ({classes[0]}); AUROC needs both classes"
    return float(roc_auc_score(y, score)), None


def auroc(y: np.ndarray, proba: np.ndarray) -> tuple[float, str | None]:
    """AUROC of class probabilities ``proba`` ``(N, K)`` against integer labels ``y`` ``(N,)``.

    Binary: of ``proba[:, 1]``; ``K > 2``: one-vs-rest, macro-averaged. Returns
    ``(NaN, reason)`` when undefined (a single class present, or a class absent for K > 2).
    """
    from sklearn.metrics import roc_auc_score

    y = np.asarray(y)
    k = proba.shape[1]
    if k == 2:
        return auroc_or_nan(y, proba[:, 1])
    present = np.unique(y)
    if len(present) < k:
        return math.nan, (f"classes {sorted(set(range(k)) - set(present.tolist()))} are absent "
                          "from y_true; one-vs-rest AUROC needs every class")
    return float(roc_auc_score(y, proba, multi_class="ovr", average="macro", labels=list(range(k)))), None


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
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, tp / union, np.nan)
        dice = np.where(gt + pd_ > 0, 2 * tp / (gt + pd_), np.nan)
    total = cm.sum()
    return {
        "miou": float(np.nanmean(iou)) if np.isfinite(iou).any() else math.nan,
        "mean_dice": float(np.nanmean(dice)) if np.isfinite(dice).any() else math.nan,
        "pixel_accuracy": float(tp.sum() / total) if total else math.nan,
        "n_pixels": int(total),
        "per_class_iou": {nm: float(v) for nm, v in zip(names, iou, strict=False)},
        "per_class_dice": {nm: float(v) for nm, v in zip(names, dice, strict=False)},
        "absent_classes": [nm for nm, u in zip(names, union, strict=False) if u == 0],
    }
