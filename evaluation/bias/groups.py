"""Group metrics of a bias audit: the metric functions (fairlearn ``MetricFrame`` point
estimates), the same metrics under B bootstrap weightings at once, the bootstrap weights, and
between-group differences with their intervals. AUROC and ECE are
:mod:`shiftkit.evaluation.metrics`' own.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from .._arrays import to_numpy
from ..metrics import auroc_from_weights, ece_from_confidence

# Name -> direction: +1 higher is better, -1 lower is better, 0 no preferred direction.
METRICS: dict[str, int] = {
    "accuracy": 1,
    "auroc": 1,
    "fpr": -1,
    "fnr": -1,
    "selection_rate": 0,
    "ece": -1,
    "prevalence": 0,
}
AGE_BANDS = ((0, 20, "0-20"), (20, 40, "20-40"), (40, 60, "40-60"), (60, 80, "60-80"), (80, math.inf, "80+"))
N_ECE_BINS = 15


def age_band(age: Any) -> np.ndarray:
    """Age in years -> band label "0-20", "20-40", "40-60", "60-80", "80+" (lower edge
    inclusive); missing or negative ages -> "missing"."""
    a = pd.to_numeric(pd.Series(to_numpy(age, "age")), errors="coerce").to_numpy(dtype=float)
    out = np.full(len(a), "missing", dtype=object)
    for lo, hi, name in AGE_BANDS:
        out[(a >= lo) & (a < hi)] = name
    return out



# ----------------------------------------------------------------------------- metric functions


def group_metric_functions(threshold: float) -> dict[str, Any]:
    """Metric callables f(y_true, score) for MetricFrame; undefined values are NaN.

    AUROC and ECE are `shiftkit.evaluation.metrics`' (plain numpy: sklearn's roc_auc_score
    spends most of its time validating input, called once per group per metric); the tests
    check equality with sklearn and fairlearn."""
    from ..metrics import binary_auroc, expected_calibration_error

    def accuracy(y, s):
        return float(((np.asarray(s) >= threshold).astype(int) == np.asarray(y)).mean())

    def selection_rate(y, s):
        return float((np.asarray(s) >= threshold).mean())

    def prevalence(y, s):
        return float(np.mean(np.asarray(y) == 1))

    def fpr(y, s):
        y, s = np.asarray(y), np.asarray(s)
        neg = y == 0
        return float((s[neg] >= threshold).mean()) if neg.any() else math.nan

    def fnr(y, s):
        y, s = np.asarray(y), np.asarray(s)
        pos = y == 1
        return float((s[pos] < threshold).mean()) if pos.any() else math.nan

    def auroc(y, s):
        return binary_auroc(y, s)

    def ece(y, s):
        return expected_calibration_error(np.asarray(y), np.asarray(s, dtype=float), N_ECE_BINS)

    return {"accuracy": accuracy, "auroc": auroc, "fpr": fpr, "fnr": fnr,
            "selection_rate": selection_rate, "ece": ece, "prevalence": prevalence}


def _weighted_group_metrics(y: np.ndarray, s: np.ndarray, w: np.ndarray, threshold: float) -> dict[str, np.ndarray]:
    """All METRICS for one group under B weightings at once.

    y (n,) 0/1, s (n,) scores, w (B, n) non-negative row weights (bootstrap multiplicities;
    ones = the plain estimate). Returns {metric: (B,)} with NaN where undefined.
    """
    pred = (s >= threshold).astype(float)
    pos = (y == 1).astype(float)
    neg = 1.0 - pos
    conf = np.maximum(s, 1.0 - s)  # top-label confidence of the binary prediction
    correct = (pred == y).astype(float)
    cols = np.stack([np.ones_like(s), correct, pred, pos, neg, neg * pred, pos * (1 - pred)], axis=1)
    sums = w @ cols  # (B, 7)
    cnt, n_correct, n_pred, n_pos, n_neg, n_fp, n_fn = sums.T
    with np.errstate(invalid="ignore", divide="ignore"):
        out = {
            "accuracy": n_correct / cnt,
            "selection_rate": n_pred / cnt,
            "prevalence": n_pos / cnt,
            "fpr": np.where(n_neg > 0, n_fp / n_neg, np.nan),
            "fnr": np.where(n_pos > 0, n_fn / n_pos, np.nan),
        }
    # ECE (15 equal-width bins of top-label confidence) and AUROC (Mann-Whitney, ties 1/2):
    # the metrics module's, under all B weightings at once.
    out["ece"] = ece_from_confidence(conf, correct, N_ECE_BINS, weights=w)
    out["auroc"] = auroc_from_weights(s, w * pos, w * neg)
    return out


# ----------------------------------------------------------------------------- bootstrap and differences


def _bootstrap_weights(n: int, n_boot: int, rng: np.random.Generator, chunk: int = 64):
    """Yield (b, n) multinomial multiplicities: resampling n rows with replacement."""
    done = 0
    while done < n_boot:
        b = min(chunk, n_boot - done)
        # Row multiplicities of b resamples: counts of n uniform draws per row, via one bincount
        # (rng.multinomial over n equal cells is ~20x slower).
        idx = rng.integers(0, n, size=(b, n)) + (np.arange(b) * n)[:, None]
        yield np.bincount(idx.ravel(), minlength=b * n).reshape(b, n).astype(float)
        done += b


def _reason(metric: str, n_pos: int, n_neg: int) -> str | None:
    if metric == "auroc" and (n_pos == 0 or n_neg == 0):
        return f"single class in group ({'no positives' if n_pos == 0 else 'no negatives'}); AUROC undefined"
    if metric == "fpr" and n_neg == 0:
        return "no negatives (label 0) in group; FPR undefined"
    if metric == "fnr" and n_pos == 0:
        return "no positives (label 1) in group; FNR undefined"
    return None


def _disparities(values: dict[str, float]) -> tuple[float, float]:
    v = np.array([x for x in values.values() if x is not None and np.isfinite(x)], dtype=float)
    if len(v) < 2:
        return math.nan, math.nan
    hi, lo = v.max(), v.min()
    return float(hi - lo), float(lo / hi) if hi > 0 else math.nan


def difference_interval(point: np.ndarray, boot: np.ndarray | None,
                        ci: tuple[float, float] = (0.025, 0.975)) -> dict[str, Any]:
    """Bootstrap interval of a between-group gap, for the pair of groups that makes the gap.

    The gap reported is ``max - min`` over groups (fairlearn's ``difference()``), made by the
    groups ``hi = argmax`` and ``lo = argmin`` of the point estimates. Its interval is the
    percentile interval of ``m*_hi - m*_lo`` over the resamples, the same two groups in every
    resample: a smooth statistic whose percentile interval is valid, so a 95 % interval covers
    the true ``m_hi - m_lo`` about 95 % of the time at any true gap, zero included. It can
    reach below zero: the data cannot tell which of the two groups is worse. (The percentile
    interval of the resampled ``max - min`` was biased upward -- re-picking the extremes in
    every resample inflates them -- and could exclude its own point estimate: 64 % coverage at a
    true gap of 0 in simulation.) The ratio interval is that of ``m*_lo / m*_hi``.

    Args:
        point: ``(G,)`` per-group point estimates (NaN: undefined or suppressed).
        boot: ``(B, G)`` the same metric under B bootstrap resamples, or None.
        ci: lower and upper quantiles.

    Returns:
        ``{"pair": (i_hi, i_lo) or None, "difference_ci": [lo, hi] or None, "ratio_ci": ...}``.
    """
    out: dict[str, Any] = {"pair": None, "difference_ci": None, "ratio_ci": None}
    ok = np.flatnonzero(np.isfinite(point))
    if len(ok) < 2:
        return out
    i_hi, i_lo = int(ok[np.argmax(point[ok])]), int(ok[np.argmin(point[ok])])
    if i_hi == i_lo:  # all equal: any two distinct groups make the (zero) gap
        i_hi, i_lo = int(ok[0]), int(ok[1])
    out["pair"] = (i_hi, i_lo)
    if boot is None or boot.shape[0] == 0:
        return out
    hi, lo = boot[:, i_hi], boot[:, i_lo]
    with np.errstate(invalid="ignore", divide="ignore"):
        dd = hi - lo
        rr = np.where(hi > 0, lo / hi, np.nan)
    dd, rr = dd[np.isfinite(dd)], rr[np.isfinite(rr)]
    if len(dd):
        out["difference_ci"] = [float(np.quantile(dd, ci[0])), float(np.quantile(dd, ci[1]))]
    if len(rr):
        out["ratio_ci"] = [float(np.quantile(rr, ci[0])), float(np.quantile(rr, ci[1]))]
    return out


def _none_nan(v: float) -> float | None:
    return v if v is not None and np.isfinite(v) else None
