"""Schedules of training progress ``p`` in [0, 1] (fraction of all optimisation steps done)."""

from __future__ import annotations

import math

__all__ = ["dann_lambda", "dann_lr_factor", "constant"]


def dann_lambda(p: float, gamma: float = 10.0) -> float:
    """Adaptation weight ``lambda_p = 2 / (1 + exp(-gamma p)) - 1`` (Ganin et al. 2016, eq. 14 note).

    Rises from 0 at ``p = 0`` to ~1 at ``p = 1``: the discriminator is allowed to learn before
    its noisy early gradients reach the encoder.
    """
    return 2.0 / (1.0 + math.exp(-gamma * float(p))) - 1.0


def dann_lr_factor(p: float, alpha: float = 10.0, beta: float = 0.75) -> float:
    """Learning-rate multiplier ``1 / (1 + alpha p) ** beta`` (``lr_p = lr0 * factor``)."""
    return 1.0 / (1.0 + alpha * float(p)) ** beta


def constant(p: float) -> float:
    """Always 1."""
    return 1.0
