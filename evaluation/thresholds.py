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
        DataError: no labelled row, labels other than 0 and 1, or a single class.
    """
    y = labels_1d(labels, "labels")
    y = y[y >= 0]
    if len(y) == 0:
        raise DataError("prior_threshold: no labelled rows")
    if y.max() > 1:
        raise DataError(f"prior_threshold: binary labels expected, got class {int(y.max())}")
    if y.min() == y.max():  # a prior of 0 or 1 would put every prediction in one class
        raise DataError(f"prior_threshold: the labels need both classes, got only class {int(y[0])}")
    return float(y.mean())


def youden_threshold(labels: Any, proba: Any) -> float:
    """The threshold ``t`` on P(class 1) that maximises Youden's J = TPR - FPR of ``p >= t``
    on labelled data (equivalently balanced accuracy).

    The ROC curve is scikit-learn's ``roc_curve``; of the best scores the highest is taken, and
    the returned value lies halfway between it and the next lower score, so that it does not
    sit on a validation sample.

    labels: ``(N,)`` 0/1 (negative = unlabelled, left out); proba: ``(N,)`` P(class 1) or
    ``(N, 2)``. Raises DataError when either class is absent.
    """
    y_all = labels_1d(labels, "labels")
    p_all = probabilities(proba, len(y_all))
    if p_all.shape[1] != 2:
        raise DataError(f"youden_threshold: binary probabilities expected, got {p_all.shape[1]} classes")
    keep = y_all >= 0
    y, s = y_all[keep], p_all[keep, 1]
    if len(np.unique(y)) < 2:
        raise DataError("youden_threshold: the validation labels need both classes")
    from sklearn.metrics import roc_curve

    # thr: +inf (nothing positive), then every distinct score, descending
    fpr, tpr, thr = roc_curve(y, s, drop_intermediate=False)
    i = 1 + int(np.argmax((tpr - fpr)[1:]))
    lower = float(thr[i + 1]) if i + 1 < len(thr) else 0.0
    return _clip((float(thr[i]) + lower) / 2.0)


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
