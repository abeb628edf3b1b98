"""Label-free estimates of target risk, for choosing checkpoints or hyper-parameters when the
target domain has no labels, and a check of those estimates where labels exist.

- `iwcv_risk`: importance-weighted validation (Sugiyama et al. 2007): source-validation losses
  weighted by density ratios w(x) = p_t(x) / p_s(x) (weights are an input; see
  `classifier_density_ratio` or shiftkit.adapt.reweight).
- `dev_risk`: Deep Embedded Validation (You et al. 2019): IWCV plus the control variate
  eta = -Cov(w l, w) / Var(w), exploiting E_s[w] = 1; lower variance than IWCV.
- `prediction_entropy`: mean Shannon entropy of target predictions (lower = more confident).
- `soft_neighborhood_density`: SND (Saito et al. 2021): entropy of the temperature-softmax
  similarity distribution among L2-normalised target predictions (higher = denser
  neighbourhoods = better).
- `evaluate_estimators`: Spearman rank correlation of each estimate with the true target risk
  across checkpoints, error in risk units, and the regret of the checkpoint each would choose.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from shiftkit.datasets.errors import DataError

from ._arrays import features_2d, probabilities, to_numpy

__all__ = [
    "iwcv_risk",
    "dev_risk",
    "effective_sample_size",
    "classifier_density_ratio",
    "prediction_entropy",
    "soft_neighborhood_density",
    "evaluate_estimators",
    "ESTIMATOR_DIRECTION",
]

# +1: the estimate grows with risk (lower is better); -1: it shrinks with risk (higher is better).
ESTIMATOR_DIRECTION = {"iwcv": 1, "dev": 1, "entropy": 1, "snd": -1, "source_val": 1}


def _losses_weights(losses: Any, weights: Any) -> tuple[np.ndarray, np.ndarray]:
    lo = to_numpy(losses, "losses").astype(float).reshape(-1)
    w = to_numpy(weights, "weights").astype(float).reshape(-1)
    if lo.shape != w.shape:
        raise DataError(f"'losses' has {lo.size} values but 'weights' has {w.size}")
    if lo.size < 2:
        raise DataError("need at least 2 validation samples")
    if not (np.all(np.isfinite(lo)) and np.all(np.isfinite(w))):
        raise DataError("'losses' and 'weights' must be finite")
    if np.any(w < 0) or w.sum() <= 0:
        raise DataError("'weights' must be non-negative with a positive sum")
    return lo, w


def effective_sample_size(weights: Any) -> float:
    """Kish effective sample size (sum w)^2 / sum w^2: how many equally weighted samples the
    weighted estimate is worth."""
    w = to_numpy(weights, "weights").astype(float).reshape(-1)
    return float(w.sum() ** 2 / (w**2).sum()) if (w**2).sum() > 0 else 0.0


def iwcv_risk(losses: Any, weights: Any, *, normalise: bool = True) -> dict[str, float]:
    """Importance-weighted validation risk. losses: (n,) per-sample loss on held-out SOURCE
    validation data; weights: (n,) density ratios p_t/p_s at those samples.
    normalise: self-normalised (sum w l / sum w, biased but stabler) or the plain mean(w l).
    Returns {"risk", "ess"} in the loss's units."""
    lo, w = _losses_weights(losses, weights)
    risk = float((w * lo).sum() / w.sum()) if normalise else float((w * lo).mean())
    return {"risk": risk, "ess": effective_sample_size(w)}


def dev_risk(losses: Any, weights: Any) -> dict[str, float]:
    """Deep Embedded Validation risk (You et al. 2019, Algorithm 1).

    L = w * losses, eta = -Cov(L, w) / Var(w), risk = mean(L) + eta * mean(w) - eta.
    The control variate uses E_s[w] = 1, so pass the density ratios as estimated: do NOT
    rescale them to sample mean 1 (that cancels the correction and leaves self-normalised IWCV).
    Returns {"risk", "eta", "ess"}; with constant weights 1, eta is 0 and risk = mean loss."""
    lo, w = _losses_weights(losses, weights)
    weighted = w * lo
    var_w = float(np.var(w, ddof=1))
    eta = 0.0 if var_w <= 1e-12 else -float(np.cov(weighted, w, ddof=1)[0, 1]) / var_w
    risk = float(weighted.mean() + eta * w.mean() - eta)
    return {"risk": risk, "eta": eta, "ess": effective_sample_size(w)}


def classifier_density_ratio(
    features_source_fit: Any,
    features_target_fit: Any,
    features_eval: Any,
    *,
    C: float = 1.0,
    clip: float | None = 20.0,
    normalise: bool = False,
) -> np.ndarray:
    """Density ratio w(x) = p_t(x) / p_s(x) = P(t|x) / P(s|x) * n_s / n_t from a logistic
    domain classifier fitted on (source_fit vs target_fit) features and applied to
    `features_eval` (e.g. the source validation set, as DEV does). Clipped at `clip`; rescaled
    to mean 1 only when `normalise` (keep False for `dev_risk`). Returns (n_eval,) weights."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    a = features_2d(features_source_fit, "features_source_fit")
    b = features_2d(features_target_fit, "features_target_fit")
    e = features_2d(features_eval, "features_eval", min_rows=1)
    clf = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=2000))
    clf.fit(np.concatenate([a, b]), np.r_[np.zeros(len(a)), np.ones(len(b))])
    p = np.clip(clf.predict_proba(e)[:, 1], 1e-6, 1 - 1e-6)
    w = p / (1 - p) * (len(a) / len(b))
    if clip is not None:
        w = np.minimum(w, clip)
    return w / w.mean() if normalise else w




def prediction_entropy(proba: Any) -> float:
    """Mean Shannon entropy (nats) of target predictions (N, K) or (N,) = P(class 1)."""
    p = probabilities(proba, name="proba", min_rows=2)
    return float(-(p * np.log(np.clip(p, 1e-12, 1))).sum(1).mean())


def soft_neighborhood_density(proba: Any, *, tau: float = 0.05, max_samples: int = 4000, seed: int = 0) -> float:
    """SND (Saito et al. 2021): L2-normalise target predictions (N, K), similarities
    M = P P' with the diagonal excluded, S = row-softmax(M / tau), SND = mean_i H(S_i) (nats).
    Higher is better. At most `max_samples` rows (seeded subsample); computed in row chunks."""
    import torch

    p = probabilities(proba, name="proba", min_rows=2)
    if len(p) > max_samples:
        p = p[np.random.default_rng(seed).choice(len(p), max_samples, replace=False)]
    t = torch.from_numpy(p)
    t = t / t.norm(dim=1, keepdim=True).clamp_min(1e-12)
    total = 0.0
    n = t.shape[0]
    for start in range(0, n, 512):
        sim = t[start:start + 512] @ t.T / tau  # (c, N)
        rows = torch.arange(start, min(start + 512, n))
        sim[rows - start, rows] = -math.inf  # a point is not its own neighbour
        logp = torch.log_softmax(sim, dim=1)
        prob = logp.exp()
        total += float(-(prob * torch.nan_to_num(logp, neginf=0.0)).sum())
    return total / n


def evaluate_estimators(
    estimates: Mapping[str, Sequence[float]],
    true_risk: Sequence[float],
) -> dict[str, dict[str, Any]]:
    """How well each label-free estimate tracks the true target risk across checkpoints.

    estimates: {estimator name: one value per checkpoint}; names in ESTIMATOR_DIRECTION get
    their direction from there (e.g. "snd" is higher-is-better), others are read as risks.
    true_risk: (n_checkpoints,) target risk measured WITH labels (e.g. 1 - accuracy or loss).
    Returns {name: {"spearman" (of the risk-oriented estimate with the true risk; 1 = perfect
    ranking), "abs_error" (mean |estimate - truth|, only for iwcv/dev/source_val, which are in
    risk units), "selected" (checkpoint index the estimate would choose), "regret" (true risk
    of that choice minus the best true risk)}}.
    """
    from scipy.stats import spearmanr

    truth = np.asarray(true_risk, dtype=float)
    if truth.ndim != 1 or len(truth) < 2:
        raise DataError("true_risk needs one value per checkpoint, at least 2 checkpoints")
    out: dict[str, dict[str, Any]] = {}
    for name, vals in estimates.items():
        v = np.asarray(vals, dtype=float)
        if v.shape != truth.shape:
            raise DataError(f"estimates[{name!r}] has {v.size} values for {truth.size} checkpoints")
        sign = ESTIMATOR_DIRECTION.get(name, 1)
        oriented = sign * v
        rho = spearmanr(oriented, truth).statistic if np.ptp(oriented) > 0 and np.ptp(truth) > 0 else math.nan
        sel = int(np.nanargmin(oriented))
        row: dict[str, Any] = {"spearman": float(rho), "selected": sel,
                               "regret": float(truth[sel] - truth.min())}
        if name in ("iwcv", "dev", "source_val"):
            row["abs_error"] = float(np.mean(np.abs(v - truth)))
        out[name] = row
    return out
