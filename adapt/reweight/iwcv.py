"""Importance-weighted validation (IWCV, Sugiyama, Krauledat & Mueller, JMLR 2007).

Under covariate shift the target risk E_t[l] equals E_s[w l] with w = p_t / p_s, so a model's
per-sample losses on held-out SOURCE validation data, weighted by the estimated ratios at
those samples, estimate its TARGET risk without a single target label. Use it to choose among
models/checkpoints/hyper-parameters (lower is better).

The estimate itself is shiftkit.evaluation.risk.iwcv_risk (one implementation for the whole
toolkit); this module adapts it to the estimators here.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from shiftkit.evaluation.risk import iwcv_risk as _iwcv

from .base import ArrayLike


def iwcv_risk(losses: ArrayLike, weights: ArrayLike, *, normalise: bool = True) -> float:
    """Label-free estimate of the target risk, in the loss's units.

    losses: (n,) per-sample losses on held-out source validation data (numpy or torch).
    weights: (n,) importance weights p_t/p_s at those samples, e.g. ``est.weight(X_val)``.
    normalise: self-normalised sum(w l) / sum(w) (default: lower variance, slightly biased)
        or the unbiased mean(w l).
    """
    return float(_iwcv(losses, weights, normalise=normalise)["risk"])


def iwcv_select(candidate_losses: Mapping[str, ArrayLike], weights: ArrayLike) -> tuple[str, dict[str, float]]:
    """Pick the candidate with the lowest IWCV risk.

    candidate_losses: {name: (n,) per-sample validation losses}, all on the same samples.
    Returns (best name, {name: estimated target risk}).
    """
    if not candidate_losses:
        raise ValueError("candidate_losses: empty")
    w = np.asarray(weights, dtype=np.float64)
    risks = {k: iwcv_risk(v, w) for k, v in candidate_losses.items()}
    return min(risks, key=risks.get), risks
