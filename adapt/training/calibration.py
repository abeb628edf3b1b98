"""Temperature scaling (Guo et al. 2017) folded into the network's last linear layer.

One scalar ``T > 0`` is fitted on labelled source-validation logits by minimising the
cross-entropy of ``logits / T``; accuracy and ranking (AUROC) are unchanged, only confidence
moves. The temperature is then folded into the weights of the classifier's last ``nn.Linear``
(``W / T``, ``b / T``), so the calibrated model is an ordinary module: saving, loading,
prediction and every method that adapts a copy of it see the calibrated logits with no extra
state.

A binary classifier's operating threshold is chosen after calibration, from source data only
(:func:`set_decision_threshold`; the choices are :mod:`shiftkit.evaluation.thresholds`): the
fitted method keeps it as ``decision_threshold_``, the run scores its labels with it and
``save_model`` stores it in the model file.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import nn

__all__ = ["fit_temperature", "fold_temperature", "last_linear", "set_decision_threshold"]


def fit_temperature(logits: np.ndarray, labels: np.ndarray, *, bounds: tuple[float, float] = (0.05, 20.0)) -> float:
    """The temperature minimising the mean cross-entropy of ``softmax(logits / T)``.

    Args:
        logits: (N, K) float logits of labelled validation images.
        labels: (N,) int labels in 0..K-1 (negative labels are left out).
        bounds: search interval of ``T``.

    Returns: ``T`` (1.0 when there are fewer than two labelled rows). A bounded 1-D search over
    ``log T`` (golden section): the loss is smooth and unimodal in ``log T``, and no gradient
    optimiser's step size has to be chosen.
    """
    z = torch.as_tensor(np.asarray(logits, np.float64))
    y = torch.as_tensor(np.asarray(labels, np.int64))
    keep = y >= 0
    z, y = z[keep], y[keep]
    if len(y) < 2:
        return 1.0

    def loss(log_t: float) -> float:
        return float(nn.functional.cross_entropy(z / math.exp(log_t), y))

    lo, hi = math.log(bounds[0]), math.log(bounds[1])
    g = (math.sqrt(5) - 1) / 2
    a, b = hi - g * (hi - lo), lo + g * (hi - lo)
    fa, fb = loss(a), loss(b)
    for _ in range(60):  # interval shrinks by 0.618 per step: 60 steps reach ~1e-12 in log T
        if fa < fb:
            hi, b, fb = b, a, fa
            a = hi - g * (hi - lo)
            fa = loss(a)
        else:
            lo, a, fa = a, b, fb
            b = lo + g * (hi - lo)
            fb = loss(b)
    return float(math.exp((lo + hi) / 2))


def last_linear(model: nn.Module) -> nn.Linear | None:
    """The last ``nn.Linear`` registered in ``model`` (the classifier's output layer), or None."""
    found = None
    for m in model.modules():
        if isinstance(m, nn.Linear):
            found = m
    return found


@torch.no_grad()
def fold_temperature(model: nn.Module, temperature: float) -> bool:
    """Divide the last linear layer's weight and bias by ``temperature`` in place.

    Returns False (and changes nothing) when the model has no linear layer; the caller then
    keeps the uncalibrated model.
    """
    layer = last_linear(model)
    if layer is None or not (temperature > 0 and math.isfinite(temperature)):
        return False
    layer.weight.div_(temperature)
    if layer.bias is not None:
        layer.bias.div_(temperature)
    return True


def set_decision_threshold(method: Any, setting: float | str, *, source_labels: Any = None,
                           val: Any = None) -> float:
    """Choose a fitted binary classifier's threshold on P(class 1) and store it on the method
    as ``decision_threshold_``; returns it.

    setting: a number in (0, 1), ``"source_prior"`` (share of class 1 in ``source_labels``, the
    source training labels: the balanced-accuracy-optimal threshold of a calibrated model) or
    ``"source_val"`` (maximises Youden's J of the method's own probabilities on ``val``, the
    labelled source validation set). Never reads target data.
    """
    from shiftkit.evaluation.thresholds import resolve_threshold

    val_labels = val_proba = None
    if setting == "source_val" and val is not None:
        labels = getattr(val, "labels", None)
        val_labels = np.asarray(labels if labels is not None else [int(val[i]["label"]) for i in range(len(val))])
        val_proba = method.predict_proba(val)
    threshold = resolve_threshold(setting, source_labels=source_labels, val_labels=val_labels, val_proba=val_proba)
    method.decision_threshold_ = threshold
    return threshold
