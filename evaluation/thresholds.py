"""The operating threshold of a binary classifier, chosen from source data only.

A model temperature-calibrated on source validation predicts P(class 1 | x) for the source
prior. Thresholding at 0.5 maximises accuracy, not balanced accuracy: with a minority class 1
it flags too few positives (high specificity, low sensitivity). For calibrated probabilities
``q``, the expected balanced accuracy of ``q >= t`` is largest at ``t = pi``, the class-1 prior
(the Bayes rule for costs weighted by the inverse class shares, Elkan 2001). Two data-driven
choices:

- :func:`prior_threshold`: the share of class 1 in the source training labels;
- :func:`youden_threshold`: the threshold that maximises Youden's J (TPR - FPR, i.e.
  balanced accuracy - 1/2 times 2) on labelled source validation scores.

:func:`resolve_threshold` turns a run-config setting (a number, ``"source_prior"`` or
``"source_val"``) into a number in (0, 1).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from shiftkit.datasets.errors import DataError

from ._arrays import labels_1d, probabilities

__all__ = ["THRESHOLD_MODES", "prior_threshold", "resolve_threshold", "youden_threshold"]

#: Named settings of ``train.decision_threshold`` besides a number in (0, 1).
THRESHOLD_MODES = ("source_prior", "source_val")
# A threshold is kept strictly inside (0, 1): at 0 or 1 every prediction is one class.
_EPS = 1e-6


def _clip(t: float) -> float:
    return float(min(max(t, _EPS), 1.0 - _EPS))


def prior_threshold(labels: Any) -> float:
    """Share of class 1 among the labelled rows (labels < 0 are unlabelled and left out).

    Raises:
        DataError: no labelled row, or labels other than 0 and 1.
    """
    y = labels_1d(labels, "labels")
    y = y[y >= 0]
    if len(y) == 0:
        raise DataError("prior_threshold: no labelled rows")
    if y.max() > 1:
        raise DataError(f"prior_threshold: binary labels expected, got class {int(y.max())}")
    return _clip(float(y.mean()))


def youden_threshold(labels: Any, proba: Any) -> float:
    """The threshold ``t`` on P(class 1) that maximises Youden's J = TPR - FPR of ``p >= t``
    on labelled data (equivalently balanced accuracy).

    Candidates are the distinct scores; among the best, the largest J plateau's middle is
    taken, and the returned value lies halfway between the chosen score and the next lower
    one, so that it does not sit on a validation sample.

    labels: ``(N,)`` 0/1 (negative = unlabelled, left out); proba: ``(N,)`` P(class 1) or
    ``(N, 2)``. Raises DataError when either class is absent.
    """
    y_all = labels_1d(labels, "labels")
    p_all = probabilities(proba, len(y_all))
    if p_all.shape[1] != 2:
        raise DataError(f"youden_threshold: binary probabilities expected, got {p_all.shape[1]} classes")
    keep = y_all >= 0
    y, s = y_all[keep], p_all[keep, 1]
    n_pos, n_neg = int((y == 1).sum()), int((y == 0).sum())
    if n_pos == 0 or n_neg == 0:
        raise DataError("youden_threshold: the validation labels need both classes")
    cand = np.unique(s)[::-1]  # descending
    # predicted positive at threshold cand[i]: every score >= cand[i]
    order = np.argsort(-s, kind="stable")
    s_sorted, y_sorted = s[order], y[order]
    tp = np.cumsum(y_sorted == 1)
    fp = np.cumsum(y_sorted == 0)
    last = np.searchsorted(-s_sorted, -cand, side="right") - 1  # last index with score >= cand[i]
    j = tp[last] / n_pos - fp[last] / n_neg
    best = np.flatnonzero(np.isclose(j, j.max(), rtol=0, atol=1e-12))
    i = int(best[len(best) // 2])
    lower = float(cand[i + 1]) if i + 1 < len(cand) else 0.0
    return _clip((float(cand[i]) + lower) / 2.0)


def resolve_threshold(setting: float | str, *, source_labels: Any = None, val_labels: Any = None,
                      val_proba: Any = None) -> float:
    """The decision threshold a setting stands for.

    setting: a number in (0, 1) (returned as is), ``"source_prior"`` (needs ``source_labels``)
    or ``"source_val"`` (needs ``val_labels`` and ``val_proba``).
    """
    if isinstance(setting, str):
        if setting == "source_prior":
            if source_labels is None:
                raise DataError("decision threshold 'source_prior' needs the source training labels")
            return prior_threshold(source_labels)
        if setting == "source_val":
            if val_labels is None or val_proba is None:
                raise DataError("decision threshold 'source_val' needs labelled source validation data")
            return youden_threshold(val_labels, val_proba)
        raise DataError(f"decision threshold: unknown setting {setting!r}; give a number in (0, 1) or one of "
                        f"{list(THRESHOLD_MODES)}")
    t = float(setting)
    if not (math.isfinite(t) and 0.0 < t < 1.0):
        raise DataError(f"decision threshold must lie in (0, 1); got {setting!r}")
    return t
