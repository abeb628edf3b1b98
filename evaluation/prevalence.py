"""Prevalence (label) shift: estimate the new class prior, correct probabilities and threshold.

Label shift means ``p(x | y)`` stays and ``p(y)`` moves (a winter wave raises the share of
findings). A fixed decision threshold on probabilities calibrated to the old prior is then no
longer the rule it was chosen to be: at a higher prevalence the model's probabilities are too
low and findings are missed.

Estimators of the target prior ``q(y)``, fitted on labelled reference data (prior ``p(y)``):

- **BBSE**, black-box shift estimation (Lipton et al. 2018, eq. 4): with the reference joint
  confusion matrix ``C[i, j] = P_ref(yhat = i, y = j)`` and the batch's predicted-label shares
  ``mu[i] = Q(yhat = i)``, the weights ``w = q / p`` solve ``C w = mu``; ``q = w * p``
  (least squares, clipped to >= 0 and renormalised).
- **EM** (Saerens et al. 2002, eq. 2.6-2.7) on probabilities calibrated with bias-corrected
  temperature scaling (BCTS, Alexandari et al. 2020): iterate
  ``q_ik ∝ (pi_k / p_k) * r_ik`` and ``pi_k = mean_i q_ik`` to the maximum-likelihood prior.
  Alexandari et al. show EM with BCTS beats BBSE; both are returned.

Correction: ``p'(y | x) ∝ (q_y / p_y) p(y | x)`` (Saerens eq. 2.4). A threshold ``t`` on the
old P(class 1) corresponds to the threshold ``t'`` on the new one that classifies every
image the same way as the prior-corrected rule, ``t' = t p1 q0 / (t p1 q0 + (1 - t) p0 q1)``.

:func:`threshold_effect` shows what the correction does per group: FNR and FPR of the old
threshold, of the corrected rule, and of the rule with the true prior (the policy a clinic
chose, applied at the prevalence it now faces).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

import numpy as np

from shiftkit.datasets.errors import DataError

from ._arrays import labels_1d
from .performance_estimation import MIN_REFERENCE, _proba, apply_bcts, drift_verdict, fit_bcts

REFERENCE_BOOTSTRAP = 20  # refits on reference resamples for the calibration term
MIN_PREDICTED = 10  # reference predictions per class below which BBSE is not identified (C too noisy)

__all__ = ["PriorEstimate", "PriorShiftEstimator", "correct_proba", "corrected_threshold", "threshold_effect"]


@dataclass(frozen=True)
class PriorEstimate:
    """Estimated target prior of one batch/window.

    prior: ``(K,)`` estimated target class shares (the preferred estimate: EM + BCTS).
    bbse: ``(K,)`` the BBSE estimate; em: ``(K,)`` the EM estimate.
    reference_prior: ``(K,)`` the reference class shares.
    interval: ``(K, 2)`` interval of the preferred (EM) estimate for the batch's true class
        shares at the estimator's level (see :meth:`PriorShiftEstimator.estimate`), or None.
    threshold: the corrected threshold on P(class 1) for binary models (None otherwise).
    bbse_interval: ``(K, 2)`` the same for the BBSE estimate, or None.
    trusted / why: as :class:`~shiftkit.evaluation.performance_estimation.Estimate`: False with
        the reason when the batch's drift test rejected, None when no drift check was given.
    """

    prior: list[float]
    bbse: list[float]
    em: list[float]
    reference_prior: list[float]
    interval: list[list[float]] | None
    threshold: float | None = None
    em_iterations: int = 0
    bbse_interval: list[list[float]] | None = None
    trusted: bool | None = None
    why: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> PriorEstimate:
        """Inverse of :meth:`to_dict` (unknown keys are ignored)."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    def with_verdict(self, trusted: bool | None, why: str = "") -> PriorEstimate:
        """A copy with the trust verdict set."""
        return replace(self, trusted=trusted, why="; ".join(w for w in (why, self.why) if w))


def correct_proba(proba: Any, reference_prior: Any, target_prior: Any) -> np.ndarray:
    """Saerens et al. 2002, eq. 2.4: ``p'(y|x) ∝ (q_y / p_y) p(y|x)``; returns ``(N, K)``."""
    p = _proba(proba, "proba")
    w = np.asarray(target_prior, float) / np.clip(np.asarray(reference_prior, float), 1e-12, None)
    if w.shape != (p.shape[1],):
        raise DataError(f"correct_proba: priors must have {p.shape[1]} entries")
    out = p * w
    return out / out.sum(1, keepdims=True)


def corrected_threshold(threshold: float, reference_prior: Any, target_prior: Any) -> float:
    """Threshold on the *uncorrected* P(class 1) equivalent to ``threshold`` on the corrected one
    (binary): ``t' = t p1 q0 / (t p1 q0 + (1 - t) p0 q1)``."""
    p0, p1 = (float(v) for v in reference_prior)
    q0, q1 = (float(v) for v in target_prior)
    t = float(threshold)
    if not 0 < t < 1:
        raise DataError(f"corrected_threshold: threshold must lie in (0, 1); got {threshold!r}")
    return t * p1 * q0 / (t * p1 * q0 + (1 - t) * p0 * q1)


def _em(r: np.ndarray, p_ref: np.ndarray, tol: float = 1e-7, max_iter: int = 2000) -> tuple[np.ndarray, int]:
    """Saerens EM on calibrated probabilities ``r`` ``(m, K)``, or ``(B, m, K)`` for ``B``
    resamples at once (each converges on its own; iteration stops when all have)."""
    batched = r.ndim == 3
    r3 = r if batched else r[None]
    if r3.shape[2] == 2:
        return _binary_mle(r3, p_ref, batched)
    pi = np.broadcast_to(p_ref, (r3.shape[0], r3.shape[2])).copy()
    it, done = 0, False
    while not done and it < max_iter:
        it += 1
        q = r3 * (pi / p_ref)[:, None, :]
        q /= q.sum(2, keepdims=True)
        new = q.mean(1)
        done = bool(np.abs(new - pi).max() < tol)
        pi = new
    return (pi if batched else pi[0]), it


def _binary_mle(r3: np.ndarray, p_ref: np.ndarray, batched: bool) -> tuple[np.ndarray, int]:
    """K = 2: EM's fixed point is the maximum of the likelihood sum_i log(pi a_i + (1 - pi) b_i)
    with ``a = r_1 / p_1``, ``b = r_0 / p_0``; its derivative is decreasing in ``pi``, so 60
    bisection steps find it to 1e-18 whatever the separation (EM itself crawls when the
    classifier is weak)."""
    a = r3[:, :, 1] / p_ref[1]
    b = r3[:, :, 0] / p_ref[0]
    d = a - b

    def grad(pi: np.ndarray) -> np.ndarray:
        return (d / (pi[:, None] * a + (1 - pi[:, None]) * b)).sum(1)

    lo, hi = np.zeros(len(a)), np.ones(len(a))
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        up = grad(mid) > 0
        lo, hi = np.where(up, mid, lo), np.where(up, hi, mid)
    pi1 = 0.5 * (lo + hi)
    out = np.stack([1 - pi1, pi1], 1)
    return (out if batched else out[0]), 60


def _bbse(pred: np.ndarray, joint: np.ndarray, p_ref: np.ndarray) -> np.ndarray:
    k = len(p_ref)
    mu = np.bincount(pred, minlength=k) / len(pred)
    w, *_ = np.linalg.lstsq(joint, mu, rcond=None)
    q = np.clip(w, 0, None) * p_ref
    return q / q.sum() if q.sum() > 0 else p_ref.copy()


class PriorShiftEstimator:
    """BBSE and EM-with-BCTS estimates of the target class prior (see the module docstring).

    Intervals (for the batch's realised class shares, at ``level``): the error of an estimate
    ``e_k`` against the batch's true share ``y_k`` splits, when the batch is drawn like the
    reference, into three independent parts whose variances add:

    - ``e_k - mean_i q_ik`` (``q`` the calibrated probabilities): how the estimator reads the
      batch's inputs, from a bootstrap of the batch (both terms on the same resamples), and at
      least its per-row spread on reference pseudo-batches divided by the batch size;
    - ``mean_i q_ik - y_k``: the batch's labels around their calibrated expectation,
      binomial-like, ``sum_i q_ik (1 - q_ik) / n^2``;
    - the calibration error of the fit on ``N`` reference rows: the spread of the estimate of
      the whole reference under fits on 20 bootstrap resamples of it (measured at ``fit``).

    The BBSE interval is centred on the unclipped BBSE estimate (linear in the batch), so a
    point estimate clipped to 0 still gets an honest interval.

    Normal interval ``e_k ± z sqrt(sum)``, clipped to [0, 1]. Coverage reported in
    ``benchmarks/results/monitor_coverage.json``. A prior shift moves ``y_k`` by design; the
    interval is for the estimate, so it remains valid under label shift as long as ``p(x|y)``
    holds, but it is only measured without shift.

    Args:
        n_bootstrap: bootstrap resamples of the batch (64: the bootstrap term is usually the
            smallest of the three, so its variance need not be known to better than ~20 %).
        level: interval coverage.
        threshold: the decision threshold on P(class 1) in use (binary), whose corrected
            value is reported.
        seed: bootstrap seed.

    Example:
        >>> est = PriorShiftEstimator().fit(val_proba, val_labels)
        >>> r = est.estimate(window_proba); r.prior, r.interval, r.threshold
        >>> new_proba = est.correct(window_proba, r)
    """

    def __init__(self, *, n_bootstrap: int = 64, level: float = 0.95, threshold: float = 0.5, seed: int = 0):
        self.n_bootstrap = n_bootstrap
        self.level = level
        self.threshold = threshold
        self.seed = seed

    def fit(self, proba: Any, y_true: Any) -> PriorShiftEstimator:
        """Fit on labelled reference probabilities ``(N, K)`` and labels ``(N,)``."""
        p = _proba(proba, "proba")
        y = labels_1d(y_true, "y_true")
        if len(y) != len(p):
            raise DataError(f"PriorShiftEstimator.fit: {len(y)} labels for {len(p)} probability rows")
        k = p.shape[1]
        if y.min() < 0 or y.max() >= k:
            raise DataError(f"PriorShiftEstimator.fit: labels must lie in 0..{k - 1}")
        counts = np.bincount(y, minlength=k)
        if (counts == 0).any():
            raise DataError(f"PriorShiftEstimator.fit: class(es) {list(np.nonzero(counts == 0)[0])} absent from the "
                            "reference labels; the prior cannot be estimated for them")
        self.n_classes_ = k
        self.reference_prior_ = counts / len(y)
        joint = np.zeros((k, k))
        np.add.at(joint, (p.argmax(1), y), 1.0)
        self.joint_ = joint / len(y)
        self.joint_pinv_ = np.linalg.pinv(self.joint_)
        # BBSE solves C w = mu: with a class (almost) never predicted, C is (nearly) singular and
        # w is not identified; its estimate then gets no interval
        pred_counts = np.bincount(p.argmax(1), minlength=k)
        rare = [int(c) for c in np.nonzero(pred_counts < MIN_PREDICTED)[0]]
        self.bbse_problem_ = (f"BBSE not identified: the model predicts class(es) {rare} fewer than {MIN_PREDICTED} "
                              "times on the reference (singular confusion matrix)") if rare else ""
        self.temperature_, self.bias_ = fit_bcts(np.log(p), y)
        self.n_reference_ = len(y)
        # calibration error of a fit on N rows: refit on bootstrap resamples of the reference
        # and read the whole reference as if it were a batch; the spread of those estimates is
        # the spread of the fit (the true shares of that "batch" are fixed)
        rng = np.random.default_rng(self.seed)
        em_b, bbse_b = [], []
        for _ in range(REFERENCE_BOOTSTRAP if len(y) >= MIN_REFERENCE else 0):
            i = rng.integers(0, len(y), len(y))
            cnt = np.bincount(y[i], minlength=k)
            if (cnt == 0).any():
                continue
            pr = cnt / len(y)
            jb = np.zeros((k, k))
            np.add.at(jb, (p[i].argmax(1), y[i]), 1.0 / len(y))
            tb, bb = fit_bcts(np.log(p[i]), y[i])
            em_b.append(_em(apply_bcts(p, tb, bb), pr, tol=1e-6, max_iter=300)[0])
            bbse_b.append((np.linalg.pinv(jb) @ (np.bincount(p.argmax(1), minlength=k) / len(y))) * pr)  # linear, as the interval
        self.calibration_var_em_ = np.var(em_b, 0, ddof=1) if len(em_b) > 1 else None
        self.calibration_var_bbse_ = np.var(bbse_b, 0, ddof=1) if len(bbse_b) > 1 else None
        # per-row spread of (estimate - mean calibrated probability) on reference pseudo-batches
        # of 64: a floor for a batch whose own bootstrap sees too little variety (e.g. every row
        # predicted as one class gives a zero-width BBSE bootstrap)
        q = apply_bcts(p, self.temperature_, self.bias_)
        idx = rng.integers(0, len(y), (64, 64))
        self.row_var_em_ = (_em(q[idx], self.reference_prior_, tol=1e-6, max_iter=300)[0] - q[idx].mean(1)).var(0) * 64
        mu = np.stack([np.bincount(row, minlength=k) for row in p.argmax(1)[idx]]) / 64
        self.row_var_bbse_ = (self._bbse_linear(mu) - q[idx].mean(1)).var(0) * 64
        return self

    def _point(self, p: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
        r = apply_bcts(p, self.temperature_, self.bias_)
        # the calibrated reference probabilities imply the reference prior; EM starts from it
        em, it = _em(r, self.reference_prior_)
        return em, _bbse(p.argmax(1), self.joint_, self.reference_prior_), it

    def _bbse_linear(self, mu: np.ndarray) -> np.ndarray:
        """Unclipped BBSE ``p * C^+ mu`` for ``(..., K)`` predicted-label shares (one product with
        the pseudo-inverse). It sums to 1 (the columns of ``C`` sum to ``p``) and is linear in
        the batch, so its spread is read without the clipping's distortion."""
        return (mu @ self.joint_pinv_.T) * self.reference_prior_

    def estimate(self, proba: Any, *, drift: Any = None) -> PriorEstimate:
        """Estimate the prior of a batch/window ``(m, K)`` (no labels); ``drift``: the batch's
        drift test, which sets ``trusted`` / ``why`` (see the class docstring for the intervals)."""
        from scipy.stats import norm

        if not hasattr(self, "reference_prior_"):
            raise DataError("PriorShiftEstimator is not fitted; call fit(reference_proba, reference_labels)")
        p = _proba(proba, "proba", self.n_classes_)
        em, bbse, it = self._point(p)
        m, k = p.shape
        trusted, why = drift_verdict(drift)
        interval = bbse_iv = None
        if self.calibration_var_em_ is None or self.n_bootstrap < 2 or m < 2:
            why = "; ".join(w for w in (why, f"no interval: needs >= {MIN_REFERENCE} reference rows, >= 2 batch rows "
                                             "and n_bootstrap >= 2") if w)
        else:
            r = apply_bcts(p, self.temperature_, self.bias_)
            rng = np.random.default_rng(self.seed)
            idx = rng.integers(0, m, (int(self.n_bootstrap), m))
            rb = r[idx]                                                      # (B, m, K)
            mean_q = rb.mean(1)
            boot_em, _ = _em(rb, self.reference_prior_, tol=1e-6, max_iter=300)
            # predicted-label shares of every resample at once: (B, m) labels -> (B, K) shares
            pred = p.argmax(1)
            mu = np.stack([np.bincount(row, minlength=k) for row in pred[idx]]) / m
            lin = self._bbse_linear(np.bincount(pred, minlength=k) / m)
            # labels around their calibrated expectation: binomial-like spread of the batch
            binom = (r * (1 - r)).sum(0) / m ** 2
            z = float(norm.ppf(0.5 + self.level / 2))

            def iv(point: np.ndarray, boot: np.ndarray, cal: np.ndarray, row_var: np.ndarray) -> list[list[float]]:
                read = np.maximum((boot - mean_q).var(0, ddof=1), row_var / m)
                half = z * np.sqrt(binom + cal + read)
                return np.stack([np.clip(point - half, 0, 1), np.clip(point + half, 0, 1)], 1).tolist()

            interval = iv(em, boot_em, self.calibration_var_em_, self.row_var_em_)
            if self.bbse_problem_:
                why = "; ".join(w for w in (why, f"no BBSE interval: {self.bbse_problem_}") if w)
            else:
                bbse_iv = iv(lin, self._bbse_linear(mu), self.calibration_var_bbse_, self.row_var_bbse_)
        thr = (corrected_threshold(self.threshold, self.reference_prior_, em) if self.n_classes_ == 2 else None)
        return PriorEstimate(prior=em.tolist(), bbse=bbse.tolist(), em=em.tolist(),
                             reference_prior=self.reference_prior_.tolist(), interval=interval,
                             threshold=thr, em_iterations=it, bbse_interval=bbse_iv, trusted=trusted, why=why)

    def correct(self, proba: Any, estimate: PriorEstimate | Any) -> np.ndarray:
        """Prior-corrected (and BCTS-calibrated) probabilities ``(m, K)`` of the batch."""
        prior = estimate.prior if isinstance(estimate, PriorEstimate) else estimate
        q = apply_bcts(_proba(proba, "proba", self.n_classes_), self.temperature_, self.bias_)
        return correct_proba(q, self.reference_prior_, prior)


def _rates(y: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    pos, neg = y == 1, y == 0
    return {"fnr": float((pred[pos] == 0).mean()) if pos.any() else float("nan"),
            "fpr": float((pred[neg] == 1).mean()) if neg.any() else float("nan")}


def threshold_effect(
    y_true: Any,
    proba: Any,
    *,
    reference_prior: Any,
    estimated_prior: Any,
    true_prior: Any | None = None,
    threshold: float = 0.5,
    groups: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """FNR / FPR per group of three binary rules on the same (evaluation-labelled) batch:

    - ``fixed``: ``P(class 1) >= threshold`` as deployed;
    - ``corrected``: the same threshold after correcting to the estimated prior;
    - ``true_prior``: the same threshold after correcting to the true prior (the rule the
      clinic's policy means at the prevalence it now faces), when ``true_prior`` is given.

    ``gap_fixed`` / ``gap_corrected`` are the FNR and FPR differences to ``true_prior``: what the
    prevalence shift costs the deployed rule, and what is left after the correction.
    Labels here only *evaluate*; no estimate sees them. Returns a JSON-able dict
    ``{"overall": {...}, "<attr>=<value>": {...}}``.
    """
    y = labels_1d(y_true, "y_true")
    p = _proba(proba, "proba")
    if p.shape[1] != 2:
        raise DataError("threshold_effect: binary models only (K = 2)")
    if len(y) != len(p):
        raise DataError(f"threshold_effect: {len(y)} labels for {len(p)} rows")
    rules = {"fixed": threshold,
             "corrected": corrected_threshold(threshold, reference_prior, estimated_prior)}
    if true_prior is not None:
        rules["true_prior"] = corrected_threshold(threshold, reference_prior, true_prior)
    masks: dict[str, np.ndarray] = {"overall": np.ones(len(y), bool)}
    for name, vals in (groups or {}).items():
        v = np.asarray(vals).astype(str)
        if v.shape != (len(y),):
            raise DataError(f"threshold_effect: group {name!r} has {v.shape[0]} values for {len(y)} rows")
        for g in np.unique(v):
            masks[f"{name}={g}"] = v == g
    out: dict[str, Any] = {"thresholds": rules}
    for key, m in masks.items():
        row: dict[str, Any] = {"n": int(m.sum()), "positives": int(y[m].sum())}
        for rule, t in rules.items():
            row[rule] = _rates(y[m], (p[m, 1] >= t).astype(int))
        if "true_prior" in rules:
            for rule in ("fixed", "corrected"):
                row[f"gap_{rule}"] = {k: row[rule][k] - row["true_prior"][k] for k in ("fnr", "fpr")}
        out[key] = row
    return out
