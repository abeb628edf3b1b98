"""KLIEP: Kullback-Leibler Importance Estimation Procedure (Sugiyama et al., NIPS 2007).

Model: w(x) = sum_l alpha_l k(x, c_l), alpha >= 0, with Gaussian kernels on ``n_centers``
target points c_l. KLIEP maximises the target log-likelihood of p_t(x) ~= w(x) p_s(x):

    maximise  J(alpha) = mean_j log w(xt_j)   subject to  mean_i w(xs_i) = 1, alpha >= 0.

Optimiser: the constraint is folded in by scale invariance, J'(alpha) = mean_j log (A alpha)_j
- log(b^T alpha) with b = mean_i k(xs_i, c) (J' is unchanged by alpha -> c alpha, and equals J
on the constraint set), and alpha = exp(beta) removes the sign constraint. J' is smooth in
beta, so scipy's L-BFGS-B maximises it to a gradient tolerance; alpha is then rescaled so the
source mean of w is exactly 1. (A peer multiplies its gradient step by machine epsilon and
stops after two iterations near the uniform start; this converges, and ``n_iter_``,
``converged_`` say so.)

Kernel width: likelihood cross-validation over ``gammas`` (multiples of the median-heuristic
gamma by default): K folds of the target, fit on K-1, score mean log w on the held-out fold.

High dimensions: an isotropic Gaussian-kernel model cannot single out the few directions in
which the domains differ; on 64-D Gaussians its Spearman correlation with the true ratio was
0.44-0.49 (measured, docs/reweight.md) whatever the width. ``basis="loglinear"`` is the
log-linear KLIEP of Tsuboi, Kashima, Hido, Bickel & Sugiyama (2009): w(x) = exp(theta . phi(x))
/ mean_i exp(theta . phi(xs_i)) with phi(x) = standardised [x, x^2] (exact for Gaussian pairs
with diagonal covariances), same likelihood objective, concave in theta, L-BFGS, L2 strength by
the same likelihood CV, O((n_s + n_t) d) per iteration. ``basis="auto"`` (default) uses the
Gaussian kernel up to ``auto_max_dim`` (8) features and the log-linear model above.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch
from scipy.optimize import minimize
from scipy.special import logsumexp

from shiftkit.adapt.reweight._kernels import median_gamma, rbf
from shiftkit.adapt.reweight.base import BaseWeighter
from shiftkit.datasets.errors import DataError

DEFAULT_GAMMA_FACTORS = (0.1, 0.3, 1.0, 3.0, 10.0)


def _kernel(x: np.ndarray, c: np.ndarray, gamma: float) -> np.ndarray:
    # Rows in blocks keep peak memory at O(block * n_centers) for very large x.
    out = np.empty((x.shape[0], c.shape[0]))
    ct = torch.from_numpy(c)
    step = max(1, (1 << 22) // max(1, c.shape[0]))
    for i0 in range(0, x.shape[0], step):
        out[i0 : i0 + step] = rbf(torch.from_numpy(x[i0 : i0 + step]), ct, gamma).numpy()
    return out


def _solve(A: np.ndarray, b: np.ndarray, max_iter: int, tol: float) -> tuple[np.ndarray, int, bool]:
    """Maximise mean log(A alpha) - log(b @ alpha) over alpha = exp(beta) > 0.

    A: (n_t, m) kernel of target points on centres; b: (m,) source-mean kernel.
    Returns alpha (m,) scaled so b @ alpha = 1, the iteration count, and convergence.
    """
    n_t = A.shape[0]
    tiny = 1e-300

    def negobj(beta: np.ndarray) -> tuple[float, np.ndarray]:
        # Shift beta by its max for overflow safety: J' is invariant to the scale of alpha.
        alpha = np.exp(beta - beta.max())
        aa = A @ alpha
        ba = float(b @ alpha)
        val = float(np.mean(np.log(aa + tiny)) - np.log(ba))
        grad_alpha = A.T @ (1.0 / (aa + tiny)) / n_t - b / ba
        return -val, -(alpha * grad_alpha)

    beta0 = np.zeros(A.shape[1])
    res = minimize(negobj, beta0, jac=True, method="L-BFGS-B", options={"maxiter": max_iter, "gtol": tol})
    alpha = np.exp(res.x - res.x.max())
    alpha /= float(b @ alpha)
    return alpha, int(res.nit), bool(res.success)


DEFAULT_LAMBDAS = (1e-3, 1e-2, 1e-1, 1.0)


def _loglinear_solve(phi_s: np.ndarray, phi_t: np.ndarray, lam: float, max_iter: int, tol: float):
    """Maximise mean_t theta.phi - log mean_s exp(theta.phi) - lam/2 ||theta||^2 (concave)."""
    mean_t = phi_t.mean(0)
    n_s = phi_s.shape[0]

    def negobj(theta: np.ndarray) -> tuple[float, np.ndarray]:
        z = phi_s @ theta
        lse = logsumexp(z)
        p = np.exp(z - lse)  # softmax over source samples
        val = float(theta @ mean_t - (lse - np.log(n_s)) - 0.5 * lam * theta @ theta)
        grad = mean_t - p @ phi_s - lam * theta
        return -val, -grad

    res = minimize(negobj, np.zeros(phi_s.shape[1]), jac=True, method="L-BFGS-B",
                   options={"maxiter": max_iter, "gtol": tol})
    return res.x, int(res.nit), bool(res.success)


class KLIEP(BaseWeighter):
    """KLIEP importance weights with likelihood-CV kernel width; inductive (``weight(X)``).

    Parameters
    ----------
    basis: "auto" | "gaussian" | "loglinear" (see the module docstring).
    auto_max_dim: "auto" uses the Gaussian kernel up to this many features.
    lambdas: L2 strengths tried by likelihood CV for the log-linear basis.
    gamma: fixed RBF width (k = exp(-gamma ||x - y||^2)); None -> likelihood CV over ``gammas``.
    gammas: candidate widths; default ``DEFAULT_GAMMA_FACTORS`` times the median-heuristic gamma.
    n_centers: kernel centres drawn from the target (without replacement).
    cv: number of target folds for the likelihood cross-validation.
    max_iter, tol: L-BFGS-B iteration cap and projected-gradient tolerance.
    clip, normalize: post-processing (base class); normalize=True by default.
    seed: centre and fold sampling.

    Attributes after fit: ``weights_`` (n_s,), ``ess_``, ``basis_``, ``cv_scores_``
    ({gamma or lambda: mean held-out log-likelihood}); Gaussian: ``gamma_``, ``alpha_`` (m,),
    ``centers_`` (m, d); log-linear: ``lambda_``, ``theta_`` (2d,);
    ``n_iter_``, ``converged_``, ``log_likelihood_`` (mean log w on the target).
    """

    inductive = True

    def __init__(
        self,
        *,
        basis: Literal["auto", "gaussian", "loglinear"] = "auto",
        auto_max_dim: int = 8,
        gamma: float | None = None,
        gammas: Sequence[float] | None = None,
        lambdas: Sequence[float] = DEFAULT_LAMBDAS,
        n_centers: int = 200,
        cv: int = 5,
        max_iter: int = 1000,
        tol: float = 1e-6,
        clip: float | None = None,
        normalize: bool = True,
        seed: int = 0,
    ) -> None:
        super().__init__(clip=clip, normalize=normalize)
        self.basis = basis
        self.auto_max_dim = auto_max_dim
        self.lambdas = lambdas
        self.gamma = gamma
        self.gammas = gammas
        self.n_centers = n_centers
        self.cv = cv
        self.max_iter = max_iter
        self.tol = tol
        self.seed = seed

    def _fit_one(self, xs: np.ndarray, xt: np.ndarray, gamma: float, rng: np.random.Generator):
        m = min(self.n_centers, xt.shape[0])
        centers = xt[np.sort(rng.choice(xt.shape[0], size=m, replace=False))]
        A = _kernel(xt, centers, gamma)
        b = _kernel(xs, centers, gamma).mean(0)
        alpha, nit, ok = _solve(A, b, self.max_iter, self.tol)
        return alpha, centers, nit, ok

    def _phi(self, x: np.ndarray) -> np.ndarray:
        z = (x - self.loc_) / self.scale_x_
        q = z * z
        return np.hstack([z, (q - self.loc_q_) / self.scale_q_])

    def _fit_loglinear(self, xs: np.ndarray, xt: np.ndarray) -> np.ndarray:
        pool = np.vstack([xs, xt])
        self.loc_ = pool.mean(0)
        self.scale_x_ = np.where(pool.std(0) > 0, pool.std(0), 1.0)
        q = ((pool - self.loc_) / self.scale_x_) ** 2
        self.loc_q_ = q.mean(0)
        self.scale_q_ = np.where(q.std(0) > 0, q.std(0), 1.0)
        phi_s, phi_t = self._phi(xs), self._phi(xt)
        rng = np.random.default_rng(self.seed)
        if self.cv < 2 or xt.shape[0] < self.cv:
            raise DataError(f"cv: need 2 <= cv <= n_t, got cv={self.cv} with n_t={xt.shape[0]}")
        folds = np.array_split(rng.permutation(xt.shape[0]), self.cv)
        scores: dict[float, float] = {}
        for lam in self.lambdas:
            lls = []
            for k in range(self.cv):
                train = np.concatenate([folds[i] for i in range(self.cv) if i != k])
                theta, _, _ = _loglinear_solve(phi_s, phi_t[train], float(lam), self.max_iter, self.tol)
                log_norm = logsumexp(phi_s @ theta) - np.log(phi_s.shape[0])
                lls.append(float(np.mean(phi_t[folds[k]] @ theta) - log_norm))
            scores[float(lam)] = float(np.mean(lls))
        self.cv_scores_ = scores
        self.lambda_ = max(scores, key=scores.get)
        self.theta_, self.n_iter_, self.converged_ = _loglinear_solve(phi_s, phi_t, self.lambda_, self.max_iter, self.tol)
        self.log_norm_ = float(logsumexp(phi_s @ self.theta_) - np.log(phi_s.shape[0]))
        self.log_likelihood_ = float(np.mean(phi_t @ self.theta_) - self.log_norm_)
        return self._raw_weight(xs)

    def _fit(self, xs: np.ndarray, xt: np.ndarray) -> np.ndarray:
        if self.basis not in ("auto", "gaussian", "loglinear"):
            raise DataError(f"basis: expected 'auto', 'gaussian' or 'loglinear', got {self.basis!r}")
        basis = self.basis
        if basis == "auto":
            basis = "gaussian" if xs.shape[1] <= self.auto_max_dim else "loglinear"
        self.basis_ = basis
        if basis == "loglinear":
            return self._fit_loglinear(xs, xt)
        if self.n_centers < 1:
            raise DataError(f"n_centers: must be >= 1, got {self.n_centers}")
        rng = np.random.default_rng(self.seed)
        if self.gamma is not None:
            gamma = float(self.gamma)
            self.cv_scores_ = {}
        else:
            g0 = median_gamma(xs, xt, seed=self.seed)
            grid = list(self.gammas) if self.gammas is not None else [f * g0 for f in DEFAULT_GAMMA_FACTORS]
            if self.cv < 2 or xt.shape[0] < self.cv:
                raise DataError(f"cv: need 2 <= cv <= n_t, got cv={self.cv} with n_t={xt.shape[0]}")
            folds = np.array_split(rng.permutation(xt.shape[0]), self.cv)
            scores: dict[float, float] = {}
            for g in grid:
                lls = []
                for k in range(self.cv):
                    train = np.concatenate([folds[i] for i in range(self.cv) if i != k])
                    alpha, centers, _, _ = self._fit_one(xs, xt[train], g, rng)
                    w_held = _kernel(xt[folds[k]], centers, g) @ alpha
                    lls.append(float(np.mean(np.log(np.maximum(w_held, 1e-300)))))
                scores[float(g)] = float(np.mean(lls))
            self.cv_scores_ = scores
            gamma = max(scores, key=scores.get)
        self.gamma_ = gamma
        self.alpha_, self.centers_, self.n_iter_, self.converged_ = self._fit_one(xs, xt, gamma, rng)
        self.log_likelihood_ = float(np.mean(np.log(np.maximum(_kernel(xt, self.centers_, gamma) @ self.alpha_, 1e-300))))
        return self._raw_weight(xs)

    def _raw_weight(self, x: np.ndarray) -> np.ndarray:
        if self.basis_ == "loglinear":
            return np.exp(self._phi(x) @ self.theta_ - self.log_norm_)
        return _kernel(x, self.centers_, self.gamma_) @ self.alpha_
