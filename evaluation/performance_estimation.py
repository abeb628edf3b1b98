"""Label-free estimates of a model's accuracy (and AUROC) on a new batch.

Each estimator is fitted on labelled reference data (source validation, or an accepted and
labelled target window) and then reads only the new batch's predicted probabilities:

- **ATC**, average thresholded confidence (Garg et al. 2022, eq. 1-2): choose ``t`` on the
  reference so that the share of reference points with score ``s(x) > t`` equals the reference
  accuracy; the estimate is the share of batch points with ``s(x) > t``. Score: negative
  entropy (the paper's better variant) or maximum confidence.
- **DoC**, difference of confidences (Guillory et al. 2021): reference accuracy minus the
  drop in mean maximum confidence, ``acc_ref - (mean conf_ref - mean conf_batch)``.
- **CBPE**, confidence-based performance estimation (as NannyML's CBPE): calibrate the
  probabilities on the reference (bias-corrected temperature scaling, Alexandari et al. 2020,
  shared with :mod:`shiftkit.evaluation.prevalence`); a calibrated probability is the chance
  the prediction is right, so the expected accuracy is ``mean_i max_k q_ik`` and the expected
  binary AUROC is the AUROC of the scores against labels drawn as ``y_i ~ Bernoulli(q_i1)``,
  computed exactly with per-sample weights ``q_i1`` / ``1 - q_i1``.

Intervals: ATC and DoC get a percentile bootstrap over the batch rows; CBPE gets the
Poisson-binomial interval of the batch's realised accuracy (``sd = sqrt(sum q(1-q)) / n``),
widened by the bootstrap of its estimate. They describe sampling noise of the batch only; the
bias a shift causes (the estimators assume the shift keeps calibration) is not in them.

Segmentation: pass per-pixel probabilities flattened to ``(pixels, K)`` rows (optionally
subsampled); the estimate is then pixel accuracy.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from shiftkit.datasets.errors import DataError

from ._arrays import labels_1d, to_numpy
from .metrics import auroc_from_weights

__all__ = ["Estimate", "PerformanceEstimator", "estimate_performance"]

METHODS = ("atc", "doc", "cbpe")


@dataclass(frozen=True)
class Estimate:
    """One label-free estimate: ``value`` with a ``(low, high)`` interval at ``level``."""

    method: str
    metric: str
    value: float
    low: float
    high: float
    level: float = 0.95

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _proba(p: Any, name: str, k: int | None = None) -> np.ndarray:
    arr = np.asarray(to_numpy(p, name), dtype=np.float64)
    if arr.ndim == 1:  # binary: P(class 1)
        arr = np.stack([1.0 - arr, arr], 1)
    if arr.ndim != 2 or arr.shape[0] < 1 or arr.shape[1] < 2:
        raise DataError(f"argument {name!r} must have shape (N, K) with K >= 2; got {arr.shape}")
    if not np.isfinite(arr).all() or (arr < -1e-6).any():
        raise DataError(f"argument {name!r} must hold finite probabilities >= 0 (rows summing to 1); pass "
                        "softmax probabilities, not logits")
    s = arr.sum(1)
    if np.abs(s - 1.0).max() > 1e-3:
        raise DataError(f"argument {name!r}: rows must sum to 1 (row {int(np.argmax(np.abs(s - 1)))} sums to "
                        f"{s[int(np.argmax(np.abs(s - 1)))]:.4f}); pass softmax probabilities, not logits")
    if k is not None and arr.shape[1] != k:
        raise DataError(f"argument {name!r} has {arr.shape[1]} classes, the reference {k}")
    return np.clip(arr, 1e-12, 1.0)


def _neg_entropy(p: np.ndarray) -> np.ndarray:
    return (p * np.log(p)).sum(1)


def fit_bcts(logits: np.ndarray, y: np.ndarray, *, bias: bool = True) -> tuple[float, np.ndarray]:
    """Bias-corrected temperature scaling (Alexandari et al. 2020, eq. 5): ``q = softmax(z / T + b)``
    fitted by minimising the reference NLL. Returns ``(T, b)``; ``bias=False`` is plain
    temperature scaling (Guo et al. 2017)."""
    from scipy.optimize import minimize
    from scipy.special import log_softmax

    k = logits.shape[1]
    z = logits - logits.mean(1, keepdims=True)
    onehot = np.eye(k)[y]

    def nll(theta: np.ndarray) -> tuple[float, np.ndarray]:
        log_t = theta[0]
        b = np.concatenate([[0.0], theta[1:]]) if bias else np.zeros(k)
        inv_t = np.exp(-log_t)
        ls = log_softmax(z * inv_t + b, axis=1)
        q = np.exp(ls)
        g_logits = (q - onehot) / len(y)  # d NLL / d (z/T + b)
        g_logt = float((g_logits * z).sum() * -inv_t)
        grad = [g_logt] + (list(g_logits.sum(0)[1:]) if bias else [])
        return float(-(ls * onehot).sum() / len(y)), np.asarray(grad)

    theta0 = np.zeros(1 + (k - 1 if bias else 0))
    res = minimize(nll, theta0, jac=True, method="L-BFGS-B", bounds=[(-4.0, 4.0)] + [(-20.0, 20.0)] * (len(theta0) - 1))
    t = float(np.exp(res.x[0]))
    b = np.concatenate([[0.0], res.x[1:]]) if bias else np.zeros(k)
    return t, b


def apply_bcts(proba: np.ndarray, t: float, b: np.ndarray) -> np.ndarray:
    """Calibrated probabilities ``softmax(log p / T + b)`` of ``(N, K)`` probabilities."""
    from scipy.special import softmax

    z = np.log(np.clip(proba, 1e-12, 1.0))
    return softmax((z - z.mean(1, keepdims=True)) / t + b, axis=1)


class PerformanceEstimator:
    """ATC, DoC and CBPE fitted on labelled reference outputs.

    Args:
        score: ATC score, ``"negative_entropy"`` (default, the paper's better choice) or
            ``"max_confidence"``.
        n_bootstrap: bootstrap resamples of the batch for the intervals.
        level: interval coverage.
        seed: bootstrap seed.

    Example:
        >>> est = PerformanceEstimator().fit(val_proba, val_labels)
        >>> est.estimate(batch_proba)["atc"].value
    """

    def __init__(self, *, score: str = "negative_entropy", n_bootstrap: int = 200, level: float = 0.95, seed: int = 0):
        self.score = score
        self.n_bootstrap = n_bootstrap
        self.level = level
        self.seed = seed

    def _score(self, p: np.ndarray) -> np.ndarray:
        return _neg_entropy(p) if self.score == "negative_entropy" else p.max(1)

    def fit(self, proba: Any, y_true: Any) -> PerformanceEstimator:
        """Fit on reference probabilities ``(N, K)`` (or ``(N,)`` P(class 1)) and labels ``(N,)``."""
        if self.score not in ("negative_entropy", "max_confidence"):
            raise DataError(f"PerformanceEstimator: score must be 'negative_entropy' or 'max_confidence'; got "
                            f"{self.score!r}")
        if not 0 < self.level < 1:
            raise DataError(f"PerformanceEstimator: level must lie in (0, 1); got {self.level!r}")
        p = _proba(proba, "proba")
        y = labels_1d(y_true, "y_true")
        if len(y) != len(p):
            raise DataError(f"PerformanceEstimator.fit: {len(y)} labels for {len(p)} probability rows")
        if y.min() < 0 or y.max() >= p.shape[1]:
            raise DataError(f"PerformanceEstimator.fit: labels must lie in 0..{p.shape[1] - 1}")
        self.n_classes_ = p.shape[1]
        correct = p.argmax(1) == y
        self.accuracy_ = float(correct.mean())
        s = self._score(p)
        # t such that mean(s > t) = reference accuracy (Garg et al. 2022, eq. 1)
        self.threshold_ = float(np.quantile(s, 1.0 - self.accuracy_, method="lower")) if self.accuracy_ < 1 else -np.inf
        self.mean_confidence_ = float(p.max(1).mean())
        self.temperature_, self.bias_ = fit_bcts(np.log(p), y)
        return self

    def _per_row(self, p: np.ndarray) -> np.ndarray:
        """Per-row terms whose batch means are the three estimates, ``(3, m)``: ATC's indicator
        ``s(x) > t``, DoC's confidence shifted by the reference gap, CBPE's calibrated
        probability of the predicted class."""
        q = apply_bcts(p, self.temperature_, self.bias_)
        return np.stack([(self._score(p) > self.threshold_).astype(float),
                         p.max(1) + (self.accuracy_ - self.mean_confidence_),
                         q[np.arange(len(q)), p.argmax(1)]])

    def estimate(self, proba: Any) -> dict[str, Estimate]:
        """Estimated accuracy of the batch ``(m, K)``: ``{"atc", "doc", "cbpe"}`` (+ ``"cbpe_auroc"``
        for binary models), each an :class:`Estimate` with an interval."""
        if not hasattr(self, "accuracy_"):
            raise DataError("PerformanceEstimator is not fitted; call fit(reference_proba, reference_labels)")
        p = _proba(proba, "proba", self.n_classes_)
        terms = self._per_row(p)
        point = np.clip(terms.mean(1), 0.0, 1.0)
        rng = np.random.default_rng(self.seed)
        a = (1.0 - self.level) / 2
        n = p.shape[0]
        idx = rng.integers(0, n, (int(self.n_bootstrap), n)) if self.n_bootstrap > 0 and n > 1 else None
        out: dict[str, Estimate] = {}
        for i, m in enumerate(METHODS):
            if idx is not None:
                lo, hi = np.quantile(terms[i][idx].mean(1), [a, 1 - a])
            else:
                lo = hi = point[i]
            if m == "cbpe":
                # the realised accuracy of this batch is Poisson-binomial around the estimate
                from scipy.stats import norm

                q = terms[2]
                half = norm.ppf(1 - a) * np.sqrt((q * (1 - q)).sum()) / n
                lo, hi = min(lo, point[i] - half), max(hi, point[i] + half)
            out[m] = Estimate(m, "accuracy", float(point[i]), float(max(lo, 0.0)), float(min(hi, 1.0)), self.level)
        if self.n_classes_ == 2:
            q1 = apply_bcts(p, self.temperature_, self.bias_)[:, 1]
            auc = auroc_from_weights(p[:, 1], q1, 1.0 - q1)  # expected-label AUROC
            bs = [auroc_from_weights(p[j, 1], q1[j], 1.0 - q1[j]) for j in (idx[:30] if idx is not None else [])]
            lo, hi = np.nanquantile(bs, [a, 1 - a]) if bs else (auc, auc)
            out["cbpe_auroc"] = Estimate("cbpe", "auroc", auc, float(min(lo, auc)), float(max(hi, auc)), self.level)
        return out


def estimate_performance(reference_proba: Any, reference_labels: Any, proba: Any, **kwargs: Any) -> dict[str, Estimate]:
    """One-call form: ``PerformanceEstimator(**kwargs).fit(reference_proba, reference_labels).estimate(proba)``."""
    return PerformanceEstimator(**kwargs).fit(reference_proba, reference_labels).estimate(proba)
