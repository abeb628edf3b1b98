"""Temperature scaling folded into the output layer: recovers a known temperature, changes no
prediction, and lowers the validation cross-entropy and ECE of an over-confident model."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from shiftkit.adapt.training.calibration import fit_temperature, fold_temperature
from shiftkit.evaluation.metrics import classification_metrics


def _draw(n: int, k: int, true_t: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Logits z and labels drawn from softmax(z / true_t): the calibrating temperature is true_t."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, k)) * 4.0
    p = np.exp(z / true_t - (z / true_t).max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    y = np.array([rng.choice(k, p=row) for row in p])
    return z, y


def test_fit_temperature_recovers_the_true_temperature():
    z, y = _draw(4000, 3, 2.5, seed=0)
    assert abs(fit_temperature(z, y) - 2.5) < 0.25
    z, y = _draw(4000, 2, 0.5, seed=1)  # under-confident logits get T < 1
    assert abs(fit_temperature(z, y) - 0.5) < 0.06


def test_folding_keeps_predictions_and_calibrates():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 2))
    with torch.no_grad():
        model[2].weight.mul_(20.0)  # an over-confident head
    x = torch.randn(3000, 8)
    with torch.no_grad():
        logits = model(x).numpy()
    y = np.array([np.random.default_rng(i).choice(2, p=np.exp(r / 20) / np.exp(r / 20).sum())
                  for i, r in enumerate(logits)])
    before = classification_metrics(y, torch.softmax(torch.as_tensor(logits), 1).numpy())
    t = fit_temperature(logits, y)
    assert fold_temperature(model, t)
    with torch.no_grad():
        after_logits = model(x).numpy()
    np.testing.assert_allclose(after_logits, logits / t, rtol=1e-4, atol=1e-4)
    after = classification_metrics(y, torch.softmax(torch.as_tensor(after_logits), 1).numpy())
    assert after["accuracy"] == before["accuracy"] and abs(after["auroc"] - before["auroc"]) < 1e-9
    assert after["ece"] < before["ece"] and after["ece"] < 0.05
