"""Importance-weighted validation (IWCV, Sugiyama, Krauledat & Mueller, JMLR 2007).

Under covariate shift the target risk E_t[l] equals E_s[w l] with w = p_t / p_s, so a model's
per-sample losses on held-out SOURCE validation data, weighted by the estimated ratios at
those samples, estimate its TARGET risk without a single target label. Use it to choose among
models/checkpoints/hyper-parameters (lower is better).

The estimate itself is :func:`shiftkit.evaluation.risk.iwcv_risk` (one implementation and one
name for the whole toolkit, re-exported here): ``iwcv_risk(losses, est.weight(X_val))["risk"]``.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from shiftkit.adapt.reweight.base import ArrayLike
from shiftkit.evaluation.risk import iwcv_risk

__all__ = ["iwcv_risk", "iwcv_select"]


def iwcv_select(candidate_losses: Mapping[str, ArrayLike], weights: ArrayLike) -> tuple[str, dict[str, float]]:
    """Pick the candidate with the lowest IWCV risk.

    candidate_losses: {name: (n,) per-sample validation losses}, all on the same samples.
    Returns (best name, {name: estimated target risk}).
    """
    if not candidate_losses:
        raise ValueError("candidate_losses: empty")
    w = np.asarray(weights, dtype=np.float64)
    risks = {k: iwcv_risk(v, w)["risk"] for k, v in candidate_losses.items()}
    return min(risks, key=risks.get), risks
