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

Intervals (the batch's *true* accuracy, at ``level``): the error of an estimate on a batch of
``n`` rows drawn like the reference has two parts, and the interval adds both,
``value ± z sqrt(v (1/n + 1/N))``:

- the batch's sampling noise: its realised accuracy is a sum of ``n`` right/wrong outcomes
  (binomial-like) around what the estimator reads from the batch's inputs, variance ``v / n``;
- the estimator's own calibration error, fitted on ``N`` reference rows: variance ``v / N``.

``v`` is the variance of the per-row residual ``d_i = 1[correct_i] - t_i`` (``t_i`` the row's
term: ATC's indicator, DoC's shifted confidence, CBPE's calibrated probability) measured on the
reference by 5-fold cross-fitting (each fold scored by an estimator fitted on the other four),
so it holds the calibration error of a fit on finitely many rows and not only in-sample noise.
Segmentation rows are pixels of images; pass ``groups`` (the image of each row) and ``n``,
``N`` and ``v`` count images, since pixels of one image are not independent. The coverage was
designed on development data seeds and is reported on test data seeds in
``benchmarks/results/monitor_coverage.json`` (``scripts/monitor_coverage.py``). Where no valid
interval exists (a reference too small to measure the residual, a metric whose coverage was
never measured) the estimate's ``interval`` is None and ``why`` says so.

None of this holds under a shift that changes the model's calibration: the estimate is then
biased, in a direction that depends on the estimator and the shift (measured per estimator in
``docs/monitoring.md``). :class:`Estimate` carries a ``trusted`` verdict for that: ``None``
when no drift check was given, ``False`` with the reason when the batch's drift test rejected.

Segmentation: pass per-pixel probabilities flattened to ``(pixels, K)`` rows (optionally
subsampled); the estimate is then pixel accuracy.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np

from shiftkit.datasets.errors import DataError

from ._arrays import labels_1d, to_numpy
from .metrics import auroc_from_weights

__all__ = ["Estimate", "PerformanceEstimator", "drift_verdict", "estimate_performance", "normal_interval"]

METHODS = ("atc", "doc", "cbpe")


#: smallest reference (rows, or images for segmentation) whose residual variance is trusted for
#: an interval; below it the interval is None
MIN_REFERENCE = 50
FOLDS = 5
#: rows a BCTS calibration is fitted on at most (a seeded subsample; K parameters need no more,
#: and pixel rows of a segmentation reference run to hundreds of thousands)
BCTS_MAX_ROWS = 5_000


@dataclass(frozen=True)
class Estimate:
    """One label-free estimate and whether to believe it.

    Attributes:
        method: ``"atc"``, ``"doc"``, ``"cbpe"``, ``"em"``, ``"bbse"``.
        metric: ``"accuracy"``, ``"pixel_accuracy"``, ``"auroc"`` or ``"prior[k]"``.
        value: the estimate (a share in [0, 1]).
        interval: ``(low, high)`` at ``level`` for the batch's true value, or None when this
            estimator has no valid interval here (``why`` says why).
        level: nominal coverage of ``interval``.
        trusted: False when the batch's drift test rejected (the estimators assume the shift
            keeps the model's calibration), True when it did not, None when no drift check
            was run (arrays API without ``drift=``).
        why: the reasons behind ``trusted`` and a missing interval, in words ("" when none).
    """

    method: str
    metric: str
    value: float
    interval: tuple[float, float] | None
    level: float = 0.95
    trusted: bool | None = None
    why: str = ""

    @property
    def low(self) -> float | None:
        """Lower end of the interval (None without an interval)."""
        return None if self.interval is None else self.interval[0]

    @property
    def high(self) -> float | None:
        """Upper end of the interval (None without an interval)."""
        return None if self.interval is None else self.interval[1]

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict; ``low``/``high`` are repeated for readers of the older layout."""
        d = asdict(self)
        d["interval"] = None if self.interval is None else [float(v) for v in self.interval]
        d["low"], d["high"] = self.low, self.high
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Estimate:
        """Inverse of :meth:`to_dict` (also reads the older ``{"low", "high"}`` layout)."""
        iv = d.get("interval", (d["low"], d["high"]) if d.get("low") is not None else None)
        return cls(method=str(d["method"]), metric=str(d["metric"]), value=float(d["value"]),
                   interval=None if iv is None else (float(iv[0]), float(iv[1])), level=float(d.get("level", 0.95)),
                   trusted=d.get("trusted"), why=str(d.get("why", "")))

    def with_verdict(self, trusted: bool | None, why: str = "") -> Estimate:
        """A copy with the trust verdict set (``why`` is appended to any interval note)."""
        note = "; ".join(w for w in (why, self.why) if w)
        return replace(self, trusted=trusted, why=note)


def drift_verdict(drift: Any) -> tuple[bool | None, str]:
    """``(trusted, why)`` from a drift test result (anything with ``drift`` and ``p_value``)."""
    if drift is None:
        return None, "no drift check was run on this batch"
    if bool(drift.drift):
        return False, (f"the batch differs from the reference (drift test p = {float(drift.p_value):.3g}); the "
                       "estimators assume the shift keeps the model's calibration, and under the embedded shifts "
                       "they missed the true accuracy by 0.07-0.6")
    return True, ""


def normal_interval(value: float, var_row: float, n: int, n_ref: int, level: float) -> tuple[float, float]:
    """``value ± z sqrt(var_row (1/n + 1/n_ref))`` clipped to [0, 1]: batch sampling noise plus the
    calibration error of an estimator fitted on ``n_ref`` reference rows (module docstring)."""
    from scipy.stats import norm

    half = float(norm.ppf(0.5 + level / 2)) * math.sqrt(max(var_row, 0.0) * (1.0 / n + 1.0 / n_ref))
    return max(0.0, value - half), min(1.0, value + half)


def _group_means(x: np.ndarray, groups: np.ndarray | None) -> np.ndarray:
    """Row values ``(T, m)`` averaged per group ``(T, G)`` (unchanged without groups)."""
    if groups is None:
        return x
    _, inv, counts = np.unique(groups, return_inverse=True, return_counts=True)
    return np.stack([np.bincount(inv, row, minlength=len(counts)) / counts for row in x])


def _groups(groups: Any, n: int, name: str) -> np.ndarray | None:
    if groups is None:
        return None
    g = np.asarray(groups).reshape(-1)
    if g.shape != (n,):
        raise DataError(f"argument {name!r} must give one group per row ({n}); got {g.shape}")
    return g


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
        n_bootstrap: unused (the intervals are analytic); kept so older calls still work.
        level: interval coverage.
        seed: seeds the cross-fitting folds and the bootstrap.
        metric: name of the estimated metric (``"pixel_accuracy"`` for pixel rows).

    Example:
        >>> est = PerformanceEstimator().fit(val_proba, val_labels)
        >>> e = est.estimate(batch_proba)["atc"]; e.value, e.interval
    """

    def __init__(self, *, score: str = "negative_entropy", n_bootstrap: int = 30, level: float = 0.95, seed: int = 0,
                 metric: str = "accuracy"):
        self.score = score
        self.n_bootstrap = n_bootstrap
        self.level = level
        self.seed = seed
        self.metric = metric

    def _score(self, p: np.ndarray) -> np.ndarray:
        return _neg_entropy(p) if self.score == "negative_entropy" else p.max(1)

    def _params(self, p: np.ndarray, y: np.ndarray) -> tuple[float, float, float, float, np.ndarray]:
        """``(accuracy, ATC threshold, mean confidence, BCTS T, BCTS b)`` fitted on ``(p, y)``."""
        acc = float((p.argmax(1) == y).mean())
        s = self._score(p)
        # t such that mean(s > t) = reference accuracy (Garg et al. 2022, eq. 1)
        thr = float(np.quantile(s, 1.0 - acc, method="lower")) if acc < 1 else -np.inf
        sub = (np.random.default_rng(self.seed).choice(len(y), BCTS_MAX_ROWS, replace=False)
               if len(y) > BCTS_MAX_ROWS else slice(None))
        t, b = fit_bcts(np.log(p[sub]), y[sub])
        return acc, thr, float(p.max(1).mean()), t, b

    def fit(self, proba: Any, y_true: Any, *, groups: Any = None) -> PerformanceEstimator:
        """Fit on reference probabilities ``(N, K)`` (or ``(N,)`` P(class 1)) and labels ``(N,)``.

        ``groups``: ``(N,)`` the image each row belongs to, for pixel rows of segmentation
        (the interval then counts images, see the module docstring).
        """
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
        g = _groups(groups, len(y), "groups")
        self.n_classes_ = p.shape[1]
        self.accuracy_, self.threshold_, self.mean_confidence_, self.temperature_, self.bias_ = self._params(p, y)
        # cross-fitted residuals d = 1[correct] - term: each fold scored by an estimator fitted
        # on the other folds, so the variance includes the error of fitting on finitely many rows
        units = np.unique(g) if g is not None else np.arange(len(y))
        self.n_reference_ = len(units)
        correct = (p.argmax(1) == y).astype(float)
        resid = np.full((len(METHODS), len(y)), np.nan)
        if self.n_reference_ >= MIN_REFERENCE:
            fold_of_unit = np.random.default_rng(self.seed).permutation(len(units)) % FOLDS
            fold = fold_of_unit[np.searchsorted(units, g)] if g is not None else fold_of_unit
            for f in range(FOLDS):
                test = fold == f
                params = self._params(p[~test], y[~test])
                resid[:, test] = correct[test] - self._per_row(p[test], params)
            r = _group_means(resid, g)
            self.residual_var_ = r.var(1, ddof=1)
            self.residual_mean_ = r.mean(1)
            # CBPE's correction uses the full fit's own mean residual on the reference: the
            # estimate is then DoC on calibrated probabilities, and its error is exactly
            # mean_ref(d) - mean_batch(d) for one fixed calibration map, whose variance the
            # interval states (a cross-fitted mean would mix two different maps)
            self.cbpe_offset_ = float((correct - self._per_row(p)[2]).mean())
        else:
            self.residual_var_ = self.residual_mean_ = None
            self.cbpe_offset_ = 0.0
        return self

    def _per_row(self, p: np.ndarray, params: tuple | None = None) -> np.ndarray:
        """Per-row terms whose batch means are the three estimates, ``(3, m)``: ATC's indicator
        ``s(x) > t``, DoC's confidence shifted by the reference gap, CBPE's calibrated
        probability of the predicted class."""
        acc, thr, conf, t, b = params or (self.accuracy_, self.threshold_, self.mean_confidence_, self.temperature_,
                                          self.bias_)
        q = apply_bcts(p, t, b)
        return np.stack([(self._score(p) > thr).astype(float), p.max(1) + (acc - conf),
                         q[np.arange(len(q)), p.argmax(1)]])

    def estimate(self, proba: Any, *, groups: Any = None, drift: Any = None) -> dict[str, Estimate]:
        """Estimated accuracy of the batch ``(m, K)``: ``{"atc", "doc", "cbpe"}`` (+ ``"cbpe_auroc"``
        for binary models), each an :class:`Estimate`.

        Args:
            proba: ``(m, K)`` batch probabilities (pixel rows for segmentation).
            groups: ``(m,)`` image of each row (segmentation; required when fitted with groups).
            drift: the batch's drift test (:class:`~shiftkit.evaluation.monitor.BatchDrift`); sets
                ``trusted`` and ``why``. None: ``trusted`` is None.
        """
        if not hasattr(self, "accuracy_"):
            raise DataError("PerformanceEstimator is not fitted; call fit(reference_proba, reference_labels)")
        p = _proba(proba, "proba", self.n_classes_)
        g = _groups(groups, len(p), "groups")
        terms = self._per_row(p)
        point = terms.mean(1)
        # CBPE: BCTS minimises the NLL, which for K > 2 (and pixel rows) does not make the mean
        # top-class probability equal the accuracy; add back its mean residual on the reference
        # (dashcam development seeds: a +0.007 bias). ATC and DoC are unbiased on the reference
        # by construction, so they are left as published.
        point[2] += self.cbpe_offset_
        point = np.clip(point, 0.0, 1.0)
        n = len(np.unique(g)) if g is not None else p.shape[0]
        trusted, why = drift_verdict(drift)
        out: dict[str, Estimate] = {}
        for i, m in enumerate(METHODS):
            if self.residual_var_ is None:
                iv, note = None, (f"no interval: the reference has {self.n_reference_} "
                                  f"{'images' if g is not None else 'rows'}, fewer than {MIN_REFERENCE} to measure "
                                  "the estimator's error")
            else:
                iv, note = normal_interval(float(point[i]), float(self.residual_var_[i]), n, self.n_reference_,
                                           self.level), ""
            out[m] = Estimate(m, self.metric, float(point[i]), iv, self.level, trusted,
                              "; ".join(w for w in (why, note) if w))
        if self.n_classes_ == 2:
            q1 = apply_bcts(p, self.temperature_, self.bias_)[:, 1]
            auc = auroc_from_weights(p[:, 1], q1, 1.0 - q1)  # expected-label AUROC
            out["cbpe_auroc"] = Estimate("cbpe", "auroc", auc, None, self.level, trusted, "; ".join(
                w for w in (why, "no interval: the coverage of an expected-AUROC interval was never measured") if w))
        return out


def estimate_performance(reference_proba: Any, reference_labels: Any, proba: Any, **kwargs: Any) -> dict[str, Estimate]:
    """One-call form: ``PerformanceEstimator(**kwargs).fit(reference_proba, reference_labels).estimate(proba)``."""
    return PerformanceEstimator(**kwargs).fit(reference_proba, reference_labels).estimate(proba)
