"""Gradient reversal layer (Ganin & Lempitsky 2015; Ganin et al. 2016, JMLR 17:59).

Identity in the forward pass; multiplies the incoming gradient by ``-lambda`` in the backward
pass, so minimising the domain classifier's loss *maximises* it with respect to the encoder.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["GradientReversal", "grad_reverse"]


class _GradReverse(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, lambda_: float) -> torch.Tensor:  # type: ignore[override]
        ctx.lambda_ = float(lambda_)
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # type: ignore[override]
        return -ctx.lambda_ * grad, None


def grad_reverse(x: torch.Tensor, lambda_: float = 1.0) -> torch.Tensor:
    """Return ``x`` unchanged; its gradient is multiplied by ``-lambda_`` on the way back."""
    return _GradReverse.apply(x, lambda_)


class GradientReversal(nn.Module):
    """Module form of :func:`grad_reverse`; set ``.lambda_`` each step to follow a schedule."""

    def __init__(self, lambda_: float = 1.0):
        super().__init__()
        self.lambda_ = float(lambda_)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return grad_reverse(x, self.lambda_)
