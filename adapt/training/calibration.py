"""Temperature scaling (Guo et al. 2017) folded into the network's last linear layer.

One scalar ``T > 0`` is fitted on labelled source-validation logits by minimising the
cross-entropy of ``logits / T``; accuracy and ranking (AUROC) are unchanged, only confidence
moves. The temperature is then folded into the weights of the classifier's last ``nn.Linear``
(``W / T``, ``b / T``), so the calibrated model is an ordinary module: saving, loading,
prediction and every method that adapts a copy of it see the calibrated logits with no extra
state.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

__all__ = ["fit_temperature", "fold_temperature", "last_linear"]


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

