"""Schedules of training progress ``p`` in [0, 1] (fraction of all optimisation steps done)."""

from __future__ import annotations

import math

__all__ = ["dann_lambda", "dann_lr_factor", "constant", "lr_schedule_factor", "LR_SCHEDULES"]

#: Names of the learning-rate schedules every method's training loop accepts (``lr_decay``).
LR_SCHEDULES: tuple[str, ...] = ("constant", "cosine")


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


def lr_schedule_factor(p: float, schedule: str = "constant", warmup: float = 0.0) -> float:
    """Learning-rate multiplier of the training loop's own schedule at progress ``p``.

    ``"constant"``: 1. ``"cosine"``: ``(1 + cos(pi p')) / 2`` over the steps after warm-up
    (Loshchilov & Hutter 2017, without restarts), ending at 0. ``warmup`` (a fraction of all
    steps, 0..1) ramps the factor linearly from ``1 / warmup_steps``-ish to 1 first (Goyal et
    al. 2017), so the first AdamW steps, whose second-moment estimates are still poor, are small.
    A method's own factor (e.g. DANN's annealing) multiplies this one.
    """
    p = min(max(float(p), 0.0), 1.0)
    if warmup > 0 and p < warmup:
        return (p + 1e-3) / (warmup + 1e-3)
    if schedule == "constant":
        return 1.0
    if schedule == "cosine":
        q = (p - warmup) / (1.0 - warmup) if warmup < 1 else 1.0
        return 0.5 * (1.0 + math.cos(math.pi * q))
    raise ValueError(f"unknown lr schedule {schedule!r}; known: {', '.join(LR_SCHEDULES)}")
