"""Losses of the alignment, confusion and self-supervised methods, as plain functions.

Every loss takes optional per-sample weights ``w`` ``(N,)`` (non-negative; ``None`` = all
ones). A weight of 0 removes a sample from the loss exactly (it contributes neither to a sum
nor to a normaliser), which is what a source-side importance-weighting adapter needs.

* :func:`entropy` - Shannon entropy of softmax rows, in nats.
* :func:`mcc_loss` - minimum class confusion (Jin et al. 2020, ECCV).
* :func:`coral_loss` - Deep CORAL (Sun & Saenko 2016, ECCV workshops).
* :func:`information_maximisation_loss` - SHOT's entropy minus diversity (Liang et al. 2020).
* :class:`MultilinearMap` / :class:`RandomizedMultilinearMap` - CDAN's conditioning map
  (Long et al. 2018, NeurIPS) and :func:`cdan_entropy_weights`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "MultilinearMap",
    "RandomizedMultilinearMap",
    "cdan_entropy_weights",
    "coral_loss",
    "entropy",
    "information_maximisation_loss",
    "mcc_loss",
    "weighted_covariance",
    "weighted_mean",
]


def _weights(w: torch.Tensor | None, n: int, like: torch.Tensor) -> torch.Tensor:
    if w is None:
        return torch.ones(n, dtype=torch.float32, device=like.device)
    w = w.to(device=like.device, dtype=torch.float32).reshape(-1)
    if w.shape[0] != n:
        raise ValueError(f"per-sample weights: got {w.shape[0]} weights for {n} samples")
    return w


def weighted_mean(values: torch.Tensor, w: torch.Tensor | None = None) -> torch.Tensor:
    """``sum_i w_i v_i / sum_i w_i`` over the first axis of ``values`` ``(N, ...)``; 0 if all weights are 0."""
    w = _weights(w, values.shape[0], values)
    shape = (-1,) + (1,) * (values.dim() - 1)
    return (values.float() * w.view(shape)).sum(0) / w.sum().clamp_min(1e-12)


def entropy(logits: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """``H(softmax(logits)) = -sum_k p_k log p_k`` along ``dim`` (nats); ``(N, K) -> (N,)``."""
    logp = F.log_softmax(logits.float(), dim=dim)
    return -(logp.exp() * logp).sum(dim)


def mcc_loss(logits: torch.Tensor, *, temperature: float = 2.5, w: torch.Tensor | None = None) -> torch.Tensor:
    """Minimum class confusion on unlabelled logits ``(N, K)`` (Jin et al. 2020, eq. 1-7).

    .. math::
        \\hat Y = \\mathrm{softmax}(Z / T), \\quad
        W_{ii} = \\frac{N (1 + e^{-H(\\hat y_i)})}{\\sum_{i'} (1 + e^{-H(\\hat y_{i'})})}, \\quad
        C = \\hat Y^\\top W \\hat Y,

        \\tilde C_{jj'} = \\frac{C_{jj'}}{\\sum_{j''} C_{j''j'}}, \\quad
        L_{MCC} = \\frac{1}{K} \\sum_j \\sum_{j' \\ne j} |\\tilde C_{jj'}|.

    ``T`` = 2.5 is the paper's default (literature). Per-sample weights ``w`` multiply the
    entropy weights ``W_ii`` before their normalisation. The entropy weights carry no gradient
    (as in the authors' code). Returns a 0-d tensor in ``[0, 1)``: 0 when no probability mass
    is shared between classes.
    """
    n, k = logits.shape
    p = F.softmax(logits.float() / temperature, dim=1)
    with torch.no_grad():
        h = -(p * torch.log(p.clamp_min(1e-12))).sum(1)
        ew = (1.0 + torch.exp(-h)) * _weights(w, n, logits)
        ew = n * ew / ew.sum().clamp_min(1e-12)
    c = (p * ew[:, None]).t() @ p  # (K, K), symmetric
    c = c / c.sum(0, keepdim=True).clamp_min(1e-12)  # category normalisation: column j' sums to 1
    return (c.sum() - torch.trace(c)) / k


def weighted_covariance(x: torch.Tensor, w: torch.Tensor | None = None) -> torch.Tensor:
    """Covariance ``(D, D)`` of features ``x`` ``(N, D)`` with frequency weights ``w``.

    ``C = sum_i w_i (x_i - m)(x_i - m)^T / (sum_i w_i - 1)`` with ``m`` the weighted mean; with
    unit weights this is the unbiased estimate ``(X^T X - (1^T X)^T (1^T X) / n) / (n - 1)``
    that Deep CORAL uses.
    """
    x = x.float()
    w = _weights(w, x.shape[0], x)
    m = (x * w[:, None]).sum(0) / w.sum().clamp_min(1e-12)
    xc = x - m
    return (xc * w[:, None]).t() @ xc / (w.sum() - 1.0).clamp_min(1e-12)


def coral_loss(f_s: torch.Tensor, f_t: torch.Tensor, *, w_s: torch.Tensor | None = None,
               w_t: torch.Tensor | None = None) -> torch.Tensor:
    """Deep CORAL loss between source ``(Ns, D)`` and target ``(Nt, D)`` features (Sun & Saenko 2016, eq. 1).

    .. math:: \\ell_{CORAL} = \\frac{1}{4 d^2} \\lVert C_S - C_T \\rVert_F^2

    with ``C_S``, ``C_T`` the (weighted, see :func:`weighted_covariance`) feature covariances.
    """
    if f_s.shape[1] != f_t.shape[1]:
        raise ValueError(f"coral_loss: source has {f_s.shape[1]} features, target {f_t.shape[1]}")
    d = f_s.shape[1]
    diff = weighted_covariance(f_s, w_s) - weighted_covariance(f_t, w_t)
    return (diff * diff).sum() / (4.0 * d * d)


def information_maximisation_loss(logits: torch.Tensor, *, w: torch.Tensor | None = None,
                                  diversity_weight: float = 1.0, epsilon: float = 0.0) -> tuple[torch.Tensor, dict]:
    """SHOT's information-maximisation loss on target logits ``(N, K)`` (Liang et al. 2020, eq. 2).

    .. math::
        L_{ent} = -E_x \\sum_k p_k(x) \\log p_k(x), \\qquad
        L_{div} = \\sum_k \\bar p_k \\log \\bar p_k, \\quad \\bar p = E_x[p(x)],

        L_{IM} = L_{ent} + \\lambda_{div} L_{div}.

    Individually certain, globally diverse predictions minimise it. ``epsilon > 0`` takes the
    logarithms as ``log(p + epsilon)``, as the authors' code does (``epsilon = 1e-5`` in
    tim-learn/SHOT ``object/loss.py`` and ``image_target.py``). Returns the loss and the logs
    ``im_entropy`` (mean per-sample entropy, nats) and ``im_marginal_entropy`` (``H(p_bar)``).
    """
    p = F.softmax(logits.float(), dim=1)
    if epsilon > 0:
        ent = weighted_mean(-(p * torch.log(p + epsilon)).sum(1), w)
    else:
        ent = weighted_mean(entropy(logits), w)
    pbar = weighted_mean(p, w)
    div = (pbar * torch.log(pbar + epsilon if epsilon > 0 else pbar.clamp_min(1e-12))).sum()  # = -H(p_bar)
    return ent + diversity_weight * div, {"im_entropy": ent.detach(), "im_marginal_entropy": (-div).detach()}


# ------------------------------------------------------------------------------------ CDAN


class MultilinearMap(nn.Module):
    """CDAN's multilinear map ``T(f, g) = f (x) g``: ``(N, D), (N, K) -> (N, D * K)`` (outer product, flattened)."""

    def forward(self, f: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        return torch.bmm(g.unsqueeze(2), f.unsqueeze(1)).flatten(1)


class RandomizedMultilinearMap(nn.Module):
    """Randomised multilinear map ``T(f, g) = (R_f f) * (R_g g) / sqrt(d)`` (Long et al. 2018, eq. 9).

    ``R_f`` ``(D, d)`` and ``R_g`` ``(K, d)`` are drawn once from N(0, 1) and kept fixed (stored
    as buffers, so a saved model reproduces them); ``E[<T(f,g), T(f',g')>] = <f (x) g, f' (x) g'>``.
    ``(N, D), (N, K) -> (N, d)``.
    """

    def __init__(self, features_dim: int, num_classes: int, output_dim: int = 1024, *, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(int(seed))
        self.register_buffer("rf", torch.randn(features_dim, output_dim, generator=g))
        self.register_buffer("rg", torch.randn(num_classes, output_dim, generator=g))
        self.output_dim = int(output_dim)

    def forward(self, f: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        return (f.float() @ self.rf) * (g.float() @ self.rg) / math.sqrt(self.output_dim)


def cdan_entropy_weights(g: torch.Tensor, n_source: int, w: torch.Tensor | None = None) -> torch.Tensor:
    """CDAN+E sample weights ``w(H(g)) = 1 + exp(-H(g))`` for softmax rows ``g`` ``(N, K)`` (Long et al. 2018, eq. 10).

    Normalised within each domain (rows ``[:n_source]`` source, the rest target) to average 1,
    as the authors' code does, so confident samples count more without changing either
    domain's total weight. Optional per-sample weights ``w`` multiply them before normalising.
    No gradient flows through the weights.
    """
    with torch.no_grad():
        h = -(g * torch.log(g.clamp_min(1e-12))).sum(1)
        ew = (1.0 + torch.exp(-h)) * _weights(w, g.shape[0], g)
        out = torch.empty_like(ew)
        for sl in (slice(0, n_source), slice(n_source, g.shape[0])):
            part = ew[sl]
            if part.numel():
                out[sl] = part * part.numel() / part.sum().clamp_min(1e-12)
    return out
