"""Gaussian (RBF) kernel helpers in torch that never hold a large kernel matrix.

Every function takes features as torch tensors of shape (n, d) (float32 or float64) and
computes kernel blocks of at most ``max_block_elems`` entries at a time, so memory stays
O(block) however large n_s and n_t are. The kernel is ``k(x, y) = exp(-gamma * ||x - y||^2)``.
"""

from __future__ import annotations

import math

import numpy as np
import torch

# 2**22 entries: 32 MB per block in float64, small next to the data itself at d = 64.
DEFAULT_BLOCK_ELEMS = 1 << 22


def sq_dists(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Squared Euclidean distances (n_x, n_y), clamped at 0 against cancellation."""
    xx = (x * x).sum(1, keepdim=True)
    yy = (y * y).sum(1, keepdim=True).T
    return (xx + yy - 2.0 * (x @ y.T)).clamp_min_(0.0)


def rbf(x: torch.Tensor, y: torch.Tensor, gamma: float) -> torch.Tensor:
    """Dense kernel block (n_x, n_y). Only call on blocks you can afford to hold."""
    return torch.exp_(sq_dists(x, y).mul_(-gamma))


def _row_block(n_cols: int, max_block_elems: int) -> int:
    return max(1, max_block_elems // max(1, n_cols))


def rbf_matvec(
    x: torch.Tensor,
    y: torch.Tensor,
    v: torch.Tensor,
    gamma: float,
    *,
    max_block_elems: int = DEFAULT_BLOCK_ELEMS,
) -> torch.Tensor:
    """K(x, y) @ v for v of shape (n_y,) or (n_y, k), in row and column blocks.

    Returns shape (n_x,) or (n_x, k). Peak extra memory is ``max_block_elems`` entries.
    """
    squeeze = v.dim() == 1
    v2 = v.reshape(v.shape[0], -1)
    out = torch.zeros(x.shape[0], v2.shape[1], dtype=x.dtype, device=x.device)
    col = min(y.shape[0], max(1, int(math.sqrt(max_block_elems))) * 4)
    rows = _row_block(min(col, y.shape[0]), max_block_elems)
    for j0 in range(0, y.shape[0], col):
        yj, vj = y[j0 : j0 + col], v2[j0 : j0 + col]
        for i0 in range(0, x.shape[0], rows):
            out[i0 : i0 + rows] += rbf(x[i0 : i0 + rows], yj, gamma) @ vj
    return out[:, 0] if squeeze else out


def rbf_rowsum(
    x: torch.Tensor, y: torch.Tensor, gamma: float, *, max_block_elems: int = DEFAULT_BLOCK_ELEMS
) -> torch.Tensor:
    """sum_j k(x_i, y_j) for every i: shape (n_x,)."""
    ones = torch.ones(y.shape[0], dtype=x.dtype, device=x.device)
    return rbf_matvec(x, y, ones, gamma, max_block_elems=max_block_elems)


def median_gamma(x: np.ndarray | torch.Tensor, y: np.ndarray | torch.Tensor, *, max_points: int = 1000,
                 seed: int = 0) -> float:
    """Median heuristic: gamma = 1 / median squared distance over the pooled sample.

    Uses at most ``max_points`` points from each sample (a random subset) so it costs
    O(max_points^2) whatever the data size.
    """
    rng = np.random.default_rng(seed)
    xt = torch.as_tensor(x)
    yt = torch.as_tensor(y)
    pick_x = rng.choice(xt.shape[0], size=min(max_points, xt.shape[0]), replace=False)
    pick_y = rng.choice(yt.shape[0], size=min(max_points, yt.shape[0]), replace=False)
    pool = torch.cat([xt[torch.as_tensor(pick_x)], yt[torch.as_tensor(pick_y)]]).double()
    d2 = sq_dists(pool, pool)
    iu = torch.triu_indices(pool.shape[0], pool.shape[0], offset=1)
    med = float(d2[iu[0], iu[1]].median())
    if not math.isfinite(med) or med <= 0.0:
        # All points identical (or nearly): any width gives a constant kernel.
        return 1.0
    return 1.0 / med


def nystrom_features(
    x: torch.Tensor,
    landmarks: torch.Tensor,
    gamma: float,
    *,
    max_block_elems: int = DEFAULT_BLOCK_ELEMS,
    rel_eig_floor: float = 1e-8,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Nystrom map Phi(x) = K(x, Z) K(Z, Z)^{-1/2}, so that K(x, x') ~= Phi(x) Phi(x')^T.

    Returns (Phi of shape (n, r), projection of shape (m, r)) where r <= m drops the
    eigen-directions of K(Z, Z) below ``rel_eig_floor`` times the largest (they carry
    rounding noise, not signal). ``Phi`` for new points is ``rbf(x_new, Z) @ projection``.
    """
    kzz = rbf(landmarks, landmarks, gamma).double()
    evals, evecs = torch.linalg.eigh(kzz)
    keep = evals > rel_eig_floor * evals.max()
    proj = (evecs[:, keep] / evals[keep].sqrt()).to(x.dtype)
    rows = _row_block(landmarks.shape[0], max_block_elems)
    phi = torch.empty(x.shape[0], proj.shape[1], dtype=x.dtype, device=x.device)
    for i0 in range(0, x.shape[0], rows):
        phi[i0 : i0 + rows] = rbf(x[i0 : i0 + rows], landmarks, gamma) @ proj
    return phi, proj
