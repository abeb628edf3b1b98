"""Statistics of a benchmark grid: a metric from stored per-image statistics, bootstrap
intervals (one method, or a paired difference of two on the same test images), t intervals
over data seeds, and the fraction of the source-only -> oracle gap a method closes.

Per-image statistics are what a harness cell stores so intervals need no new prediction:
classification ``{"label": (N,) int, "score": (N,) P(class 1)}`` (the metric is AUROC),
segmentation ``{"counts": (N, 3, K) int}`` from :func:`shiftkit.evaluation.metrics.segmentation_counts`
(the metric is mIoU of the summed counts).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from .metrics import binary_auroc, miou_from_counts

__all__ = ["bootstrap_ci", "bootstrap_se", "gap_closed", "metric_from_stats", "t_interval"]


def metric_from_stats(stats: Mapping[str, np.ndarray], idx: np.ndarray | None = None) -> float:
    """The target metric from stored per-image statistics (optionally the resample ``idx``):
    AUROC of ``score`` for ``label == 1``, accuracy of ``pred`` against ``label`` (multi-class),
    or mIoU of the summed ``counts``."""
    if "pred" in stats:
        y, p = stats["label"], stats["pred"]
        return float(np.mean(y == p)) if idx is None else float(np.mean(y[idx] == p[idx]))
    if "score" in stats:
        y, s = stats["label"], stats["score"]
        return binary_auroc(y, s) if idx is None else binary_auroc(y[idx], s[idx])
    c = stats["counts"] if idx is None else stats["counts"][idx]
    inter, pred, true = c.sum(0)
    return miou_from_counts(inter, pred, true)


def bootstrap_ci(stats: Mapping[str, np.ndarray], n_boot: int = 300, seed: int = 0,
                 other: Mapping[str, np.ndarray] | None = None) -> tuple[float, float]:
    """95 % percentile interval of the metric (or of metric - other's metric, paired: the same
    resampled test images for both) over ``n_boot`` test-image resamples."""
    n = len(stats["label"] if "label" in stats else stats["counts"])
    rng = np.random.default_rng(seed)
    vals = []
    for _ in range(n_boot):
        idx = rng.integers(0, n, n)
        v = metric_from_stats(stats, idx)
        if other is not None:
            v -= metric_from_stats(other, idx)
        vals.append(v)
    lo, hi = np.nanpercentile(vals, [2.5, 97.5])
    return float(lo), float(hi)


def bootstrap_se(stats: Mapping[str, np.ndarray], n_boot: int = 200, seed: int = 0) -> float:
    """Standard error of the metric: the standard deviation of its value over ``n_boot`` image
    resamples (resamples where it is undefined, e.g. AUROC of one class, are left out)."""
    n = len(stats["label"] if "label" in stats else stats["counts"])
    rng = np.random.default_rng(seed)
    vals = np.array([metric_from_stats(stats, rng.integers(0, n, n)) for _ in range(n_boot)])
    vals = vals[np.isfinite(vals)]
    return float(vals.std(ddof=1)) if len(vals) > 1 else math.nan


def t_interval(values: Sequence[float]) -> tuple[float, float, float]:
    """(mean, lower, upper) of the 95 % Student-t interval of the finite ``values`` (e.g. one
    figure per data seed); the bounds are NaN with fewer than two values."""
    from scipy.stats import t

    v = np.asarray([x for x in values if np.isfinite(x)], float)
    if len(v) == 0:
        return math.nan, math.nan, math.nan
    if len(v) == 1:
        return float(v[0]), math.nan, math.nan
    half = float(t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / math.sqrt(len(v)))
    return float(v.mean()), float(v.mean() - half), float(v.mean() + half)


def gap_closed(target: float, source_only: float, oracle: float) -> float:
    """Fraction of the source-only -> oracle gap a method closes: ``(target - source_only) /
    (oracle - source_only)`` (0 = no better than source-only, 1 = as good as the oracle; NaN
    when the oracle equals source-only)."""
    if oracle == source_only:
        return math.nan
    return (target - source_only) / (oracle - source_only)
