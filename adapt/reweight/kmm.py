"""Kernel Mean Matching (Huang, Gretton, Borgwardt, Schoelkopf & Smola, NIPS 2007).

KMM picks source weights w (n_s,) so that the weighted source kernel mean matches the target
kernel mean. With K = k(Xs, Xs) and kappa_i = (n_s / n_t) sum_j k(xs_i, xt_j) it solves the
quadratic programme

    minimise   f(w) = 1/2 w^T K w - kappa^T w
    subject to 0 <= w_i <= B                   (the weight bound, honoured exactly)
               |sum(w) / n_s - 1| <= eps       (the weights average about 1)

which is n_s^2 * MMD^2 between the weighted source and the target up to a constant.

Solver: accelerated projected gradient (FISTA with adaptive restart, O'Donoghue & Candes
2015) in a metric that takes the constant direction out of the step size. An RBF kernel
matrix has one eigenvalue of about n * mean(K) along ~1 (749 at n = 2,000, d = 64) and the
rest far below (16 there): a plain gradient step 1 / lambda_max crawls in every other
direction. The quadratic model used per step is L ||d||^2 + beta (1^T d)^2 with beta =
2 mean(K) and L ~ lambda_max(K restricted to sum-zero vectors), so the step is ~50x longer
there. Its minimiser over the feasible set is still exact and O(n): clip(v - tau, 0, B) with
one scalar tau, the root of a monotone piecewise-linear equation (safeguarded Newton, a few
O(n) passes, warm-started from the previous iterate's tau). L is checked at every step
against the actual curvature (K(w_new - y) is known without an extra product, see _solve)
and raised when too small, so the method keeps FISTA's guarantee. Every iterate is feasible.

Only kernel-vector products are needed:

- ``solver="exact"``: K @ v with K = k(Xs, Xs) held densely while n_s <= ``max_dense``
  (default 5,000: 200 MB in float64), else recomputed block by block every iteration.
  kappa is always computed in blocks: an n_s x n_t kernel is never held.
- ``solver="nystrom"``: K ~= Phi Phi^T + diag(1 - ||Phi_i||^2) with a Nystrom map on
  ``n_landmarks`` points drawn from the pooled data (Cholesky of K(Z, Z)), so each product
  costs O(n_s * m) time and memory; Phi in float32 by default.
- ``solver="auto"`` (default): exact while n_s <= ``max_exact`` (5,000), Nystrom above.

At n = 5,000 (64-D) the Nystrom weights (m = 2,500) correlate with the exact weights at
0.985 (Pearson; Spearman 0.965); figures and the switch are in docs/reweight.md.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal

import numpy as np
import torch

from shiftkit.adapt.reweight._kernels import (
    DEFAULT_BLOCK_ELEMS,
    median_gamma,
    nystrom_features,
    rbf,
    rbf_matvec,
    rbf_rowsum,
)
from shiftkit.adapt.reweight.base import BaseWeighter
from shiftkit.datasets.errors import DataError

MatVec = Callable[[torch.Tensor], torch.Tensor]


def _dot(a: torch.Tensor, b: torch.Tensor) -> float:
    """a . b for vectors without a BLAS call: with 2 MKL threads on a busy machine every BLAS
    dot waits for a descheduled thread (12 ms per call at n = 20,000, measured, against 0.07 ms
    for this elementwise product and sum)."""
    return float((a * b).sum())


def _tau_root(v: torch.Tensor, B: float, a: float, b: float, t: float, tau: float | None) -> float:
    """Root of F(tau) = a * tau - b * (S(tau) - t), S(tau) = sum_i clip(v_i - tau, 0, B).

    F is non-decreasing and piecewise linear (a >= 0, b > 0). Newton on the current linear
    piece lands on the exact root once the piece is right; a bracket [t_lo, t_hi] that every
    evaluation shrinks makes it bisect instead whenever Newton would leave the bracket, so it
    always terminates. Each evaluation is a few O(n) passes (no sort).
    """
    n = v.shape[0]
    vmin, vmax = float(v.min()), float(v.max())
    # S is nB below vmin - B and 0 above vmax; with a > 0 the root also lies between
    # -b (nB - t) / a and b t / a, where F changes sign whatever S is.
    t_lo, t_hi = vmin - B, vmax
    if a > 0:
        t_lo, t_hi = min(t_lo, -b * (n * B - t) / a), max(t_hi, b * t / a)
    tau = min(max(0.0 if tau is None else tau, t_lo), t_hi)
    for _ in range(200):
        c = (v - tau).clamp_(0.0, B)
        s = float(c.sum())
        n_free = int(torch.count_nonzero(c.mul_(B - c)))  # 0 < c < B
        f = a * tau - b * (s - t)
        if abs(f) <= 1e-13 * (abs(a * tau) + b * (abs(s) + abs(t)) + 1e-300):
            return tau
        if f > 0:
            t_hi = tau
        else:
            t_lo = tau
        slope = a + b * n_free  # dF/dtau on this linear piece
        tn = tau - f / slope if slope > 0 else math.nan
        if abs(tn - tau) <= 1e-15 * max(1.0, abs(tau)):
            return tn
        if not (t_lo < tn < t_hi):  # also catches NaN
            tn = 0.5 * (t_lo + t_hi)
        if t_hi - t_lo <= 1e-15 * max(1.0, abs(tau)):
            return tn
        tau = tn
    return tau


def project_scaled(
    v: torch.Tensor, B: float, lo: float, hi: float, b: float = 0.0, s_ref: float = 0.0, tau0: float | None = None
) -> tuple[torch.Tensor, float]:
    """argmin_w 1/2 ||w - v||^2 + b/2 (sum(w) - s_ref)^2 over {0 <= w <= B, lo <= sum(w) <= hi}.

    v: (n,) float64. Returns (w (n,), tau) with w = clip(v - tau, 0, B): by the KKT conditions
    tau = b (sum(w) - s_ref) + nu, nu the multiplier of the slab. First solve without the slab
    (nu = 0); if the sum lands outside [lo, hi] the slab binds and sum(w) = hi (or lo) fixes
    tau. ``tau0`` (the previous call's tau) only speeds up the root finding.
    """
    if b > 0:
        tau = _tau_root(v, B, 1.0, b, s_ref, tau0)
    else:
        tau = 0.0
    w = (v - tau).clamp_(0.0, B)
    s = float(w.sum())
    if lo <= s <= hi:
        return w, tau
    tau = _tau_root(v, B, 0.0, 1.0, hi if s > hi else lo, tau)
    return (v - tau).clamp_(0.0, B), tau


def project_box_slab(v: torch.Tensor, B: float, lo: float, hi: float) -> torch.Tensor:
    """Euclidean projection of v (n,) onto {0 <= w <= B, lo <= sum(w) <= hi}.

    The projection is clip(v - tau, 0, B) for the scalar tau (the multiplier of the sum
    constraint) that is 0 when the clipped sum already lies in [lo, hi], else the root of
    s(tau) = sum(clip(v - tau, 0, B)) = hi (or lo), found exactly (see ``project_scaled``).
    """
    return project_scaled(v, B, lo, hi)[0]


class KMM(BaseWeighter):
    """Kernel Mean Matching with the bound B and the epsilon slab honoured exactly.

    Parameters
    ----------
    B: upper bound on every weight (Huang et al.'s B).
    eps: slab half-width: |sum(w)/n_s - 1| <= eps. Default B / sqrt(n_s) (capped below 1),
        Huang et al.'s O(B / sqrt(n_s)) advice.
    gamma: RBF width, k = exp(-gamma ||x - y||^2). Default: median heuristic on the pooled data.
    solver: "auto" | "exact" | "nystrom" (see module docstring).
    max_exact: n_s above which "auto" switches to Nystrom.
    n_landmarks: Nystrom landmarks m (memory n_s * m * 4 bytes in float32: 1 GB at 100,000 x 2,500).
    max_dense: largest n_s for which the exact solver stores K densely.
    max_iter, tol: the solver stops when the relative step ||w_k+1 - w_k|| / ||w_k|| stays
        below tol for two iterations in a row. Default tol: 1e-6 for the exact solver, 1e-3
        for Nystrom: stopping there changes the Nystrom weights by far less than the
        approximation itself does (Pearson 0.9999 with the same approximation solved to 1e-5
        against 0.985 with the exact solution at n = 5,000; docs/reweight.md), and float32
        products put a floor near 5e-5 under the relative step anyway.
    clip, normalize: post-processing (base class). Default normalize=False so that the QP
        solution (and its bound B) is returned as is.
    dtype: torch dtype of the kernel products. Default None: float64 for the exact solver,
        float32 for Nystrom (halves its time and memory; its approximation error is orders of
        magnitude above float32 rounding). The solver's own vectors are always float64.
    seed: landmark sampling, the median heuristic subset and the power-iteration start.

    Attributes after fit: ``weights_`` (n_s,), ``ess_``, ``objective_`` (f at the solution),
    ``n_iter_``, ``gamma_``, ``solver_`` ("exact"/"nystrom"), ``eps_``, ``converged_``,
    ``tol_``, ``lipschitz_`` (the final L), ``n_matvec_`` (kernel products used).
    """

    inductive = False

    def __init__(
        self,
        *,
        B: float = 1000.0,
        eps: float | None = None,
        gamma: float | None = None,
        solver: Literal["auto", "exact", "nystrom"] = "auto",
        max_exact: int = 5000,
        n_landmarks: int = 2500,
        max_dense: int = 5000,
        max_iter: int = 3000,
        tol: float | None = None,
        clip: float | None = None,
        normalize: bool = False,
        dtype: torch.dtype | None = None,
        seed: int = 0,
        max_block_elems: int = DEFAULT_BLOCK_ELEMS,
        nystrom_diag: bool = True,
        landmarks: Literal["kmeans", "random"] = "random",
        kmeans_subsample: int = 20000,
        kmeans_iter: int = 20,
    ) -> None:
        self.nystrom_diag = nystrom_diag
        self.landmarks = landmarks
        self.kmeans_subsample = kmeans_subsample
        self.kmeans_iter = kmeans_iter
        super().__init__(clip=clip, normalize=normalize)
        self.B = B
        self.eps = eps
        self.gamma = gamma
        self.solver = solver
        self.max_exact = max_exact
        self.n_landmarks = n_landmarks
        self.max_dense = max_dense
        self.max_iter = max_iter
        self.tol = tol
        self.dtype = dtype
        self.seed = seed
        self.max_block_elems = max_block_elems

    # ---------------------------------------------------------------------------------
    def _fit(self, xs_np: np.ndarray, xt_np: np.ndarray) -> np.ndarray:
        if not (self.B > 0 and math.isfinite(self.B)):
            raise DataError(f"B: must be a positive finite number, got {self.B}")
        if self.solver not in ("auto", "exact", "nystrom"):
            raise DataError(f"solver: expected 'auto', 'exact' or 'nystrom', got {self.solver!r}")
        n_s, n_t = xs_np.shape[0], xt_np.shape[0]
        eps = min(self.B / math.sqrt(n_s), 0.999) if self.eps is None else float(self.eps)
        if eps < 0:
            raise DataError(f"eps: must be >= 0, got {eps}")
        lo, hi = n_s * max(0.0, 1.0 - eps), n_s * (1.0 + eps)
        if n_s * self.B < lo:
            raise DataError(f"B={self.B} with eps={eps}: sum(w) <= n_s * B cannot reach n_s * (1 - eps)")
        self.eps_ = eps
        self.gamma_ = float(self.gamma) if self.gamma is not None else median_gamma(xs_np, xt_np, seed=self.seed)
        solver = self.solver
        if solver == "auto":
            solver = "exact" if n_s <= self.max_exact else "nystrom"
        self.solver_ = solver
        dtype = self.dtype if self.dtype is not None else (torch.float64 if solver == "exact" else torch.float32)
        # Rounding of one product, relative to its size: the solver's curvature check allows for it.
        self._mv_eps = float(torch.finfo(dtype).eps)

        xs = torch.from_numpy(xs_np).to(dtype)
        xt = torch.from_numpy(xt_np).to(dtype)
        g, blk = self.gamma_, self.max_block_elems
        matvec: MatVec
        if solver == "exact":
            kappa = rbf_rowsum(xs, xt, g, max_block_elems=blk).double() * (n_s / n_t)
            if n_s <= self.max_dense:
                # Filled in row blocks: rbf on the whole matrix at once would hold a few
                # n_s x n_s temporaries besides K (peak 1.2 GB instead of 0.2 GB at 5,000).
                kss = torch.empty(n_s, n_s, dtype=dtype)
                rows = max(1, blk // n_s)
                for i0 in range(0, n_s, rows):
                    kss[i0 : i0 + rows] = rbf(xs[i0 : i0 + rows], xs, g)

                def matvec(v: torch.Tensor) -> torch.Tensor:
                    return (kss @ v.to(dtype)).double()
            else:

                def matvec(v: torch.Tensor) -> torch.Tensor:
                    return rbf_matvec(xs, xs, v.to(dtype), g, max_block_elems=blk).double()
        else:
            landmarks = self._landmarks(xs_np, xt_np).to(dtype)
            m = landmarks.shape[0]
            phi_s, chol = nystrom_features(xs, landmarks, g, max_block_elems=blk)
            # kappa = (n_s/n_t) Phi(Xs) Phi(Xt)^T 1 = (n_s/n_t) Phi(Xs) L^{-1} K(Z, Xt) 1: only the
            # column sums of K(Xt, Z) are needed, block by block (Phi(Xt) is never stored).
            kzt = torch.zeros(m, dtype=torch.float64)
            rows = max(1, blk // m)
            for i0 in range(0, n_t, rows):
                kzt += rbf(xt[i0 : i0 + rows], landmarks, g).sum(0).double()
            pt = torch.linalg.solve_triangular(chol, kzt[:, None], upper=False)[:, 0]
            kappa = (phi_s @ pt.to(dtype)).double() * (n_s / n_t)
            self.n_landmarks_ = m
            # Diagonal correction: Phi Phi^T under-estimates k(x, x) = 1 by what the landmarks
            # miss. Adding that residual back on the diagonal keeps the approximate QP strongly
            # convex like the exact one, so it picks the same weights in the directions the
            # low-rank part cannot see (without it the weights there are arbitrary).
            diag = None
            if self.nystrom_diag:
                diag = torch.empty(n_s, dtype=torch.float64)
                for i0 in range(0, n_s, rows):  # in blocks: a float64 copy of Phi would double its memory
                    diag[i0 : i0 + rows] = phi_s[i0 : i0 + rows].double().pow(2).sum(1)
                diag = (1.0 - diag).clamp_min_(0.0)

            def matvec(v: torch.Tensor) -> torch.Tensor:
                out = (phi_s @ (phi_s.T @ v.to(dtype))).double()
                return out + diag * v if diag is not None else out

        self.tol_ = self.tol if self.tol is not None else (1e-6 if solver == "exact" else 1e-3)
        w, kw = self._solve(matvec, kappa, lo, hi)
        self.objective_ = 0.5 * _dot(w, kw) - _dot(kappa, w)
        return w.numpy()

    def _landmarks(self, xs: np.ndarray, xt: np.ndarray) -> torch.Tensor:
        """Nystrom landmarks (m, d) from the pooled source + target sample.

        "random" (default): a uniform draw. "kmeans": k-means centres fitted on a random
        subset of at most ``kmeans_subsample`` pooled points (Zhang, Tsang & Kwok, ICML 2008);
        better on clustered features, no better on isotropic 64-D Gaussians (measured) and
        slower, hence not the default.
        """
        rng = np.random.default_rng(self.seed)
        n_pool = xs.shape[0] + xt.shape[0]
        m = min(self.n_landmarks, n_pool)
        if self.landmarks == "random":
            pick = np.sort(rng.choice(n_pool, size=m, replace=False))
            ns = xs.shape[0]
            # Index the two arrays directly: stacking them would copy n_s + n_t rows.
            return torch.from_numpy(np.vstack([xs[pick[pick < ns]], xt[pick[pick >= ns] - ns]]))
        if self.landmarks != "kmeans":
            raise DataError(f"landmarks: expected 'kmeans' or 'random', got {self.landmarks!r}")
        from sklearn.cluster import KMeans

        pool = np.vstack([xs, xt])
        sub = pool[rng.choice(pool.shape[0], size=min(self.kmeans_subsample, pool.shape[0]), replace=False)]
        km = KMeans(n_clusters=m, n_init=1, max_iter=self.kmeans_iter, random_state=self.seed).fit(sub)
        return torch.from_numpy(km.cluster_centers_)

    def _solve(self, matvec: MatVec, kappa: torch.Tensor, lo: float, hi: float) -> tuple[torch.Tensor, torch.Tensor]:
        """FISTA with adaptive restart in the metric L I + beta 1 1^T. Returns (w, K w), float64.

        Majorisation: f(w_new) <= f(y) + g^T d + 1/2 (L ||d||^2 + beta (1^T d)^2), d = w_new - y,
        holds when d^T K d <= L ||d||^2 + beta (1^T d)^2. beta = 2 mean(K) covers the large
        eigenvalue along ~1 (the one along 1 is n mean(K)); L starts at 1.02x a power-iteration
        estimate of the largest eigenvalue of K on sum-zero vectors and is raised whenever a
        step shows more curvature, so the inequality holds at every accepted step.

        One kernel product per iteration: K w_new is computed, and K y for the next gradient is
        the same linear combination of K w_new and K w as y is of w_new and w.
        """
        # The O(n) vector work below runs on ONE thread and only the kernel products on all of
        # them: on a busy 2-core machine each parallel reduction on 10^5 elements waited ~1-10 ms
        # for a descheduled thread (measured: a sum took 1.1 ms on 2 threads, 0.023 ms on one),
        # which at n = 100,000 cost more than the products themselves.
        n_threads = torch.get_num_threads()

        def product(v: torch.Tensor) -> torch.Tensor:
            torch.set_num_threads(n_threads)
            try:
                return matvec(v)
            finally:
                torch.set_num_threads(1)

        torch.set_num_threads(1)
        try:
            return self._solve_loop(product, kappa, lo, hi)
        finally:
            torch.set_num_threads(n_threads)

    def _solve_loop(self, matvec: MatVec, kappa: torch.Tensor, lo: float, hi: float) -> tuple[torch.Tensor, torch.Tensor]:
        n = kappa.shape[0]
        f64 = torch.float64
        ones = torch.ones(n, dtype=f64)
        k1 = matvec(ones)
        beta = 2.0 * float(k1.sum()) / (n * n)
        gen = torch.Generator().manual_seed(self.seed)
        v = torch.rand(n, generator=gen, dtype=f64) - 0.5
        lam, n_mv = 0.0, 1
        # Power iteration to 1 %: the closely spaced top eigenvalues make more steps slow to
        # pay off, and the curvature check below corrects an under-estimate.
        for _ in range(20):
            v -= v.mean()
            kv = matvec(v)
            n_mv += 1
            kv -= kv.mean()
            lam_new = _dot(v, kv) / max(_dot(v, v), 1e-300)
            nrm = float(kv.norm())
            if nrm == 0.0:
                break
            v = kv / nrm
            converged = abs(lam_new - lam) <= 1e-2 * abs(lam_new)
            lam = lam_new
            if converged:
                break
        # k(x, x) = 1 sets the curvature scale: the floor only matters for degenerate data
        # (all points identical), where the problem is linear off the 1 direction.
        L = max(1.02 * lam, 1e-6)

        B = float(self.B)
        w, tau = project_scaled(ones, B, lo, hi)
        kw = matvec(w)
        n_mv += 1
        y, ky, t = w, kw, 1.0
        k, calm, converged = 0, 0, False
        while k < self.max_iter:
            k += 1
            grad = ky - kappa
            s_y = float(y.sum())
            while True:
                w_new, tau = project_scaled(y - grad / L, B, lo, hi, beta / L, s_y, tau)
                kw_new = matvec(w_new)
                n_mv += 1
                d = w_new - y
                dd, s_d = _dot(d, d), float(d.sum())
                dkd = _dot(d, kw_new - ky)
                # Rounding in the products (float32 for Nystrom) must not read as curvature.
                noise = 10.0 * self._mv_eps * math.sqrt(dd) * (float(kw_new.norm()) + float(ky.norm()))
                if dkd <= L * dd + beta * s_d * s_d + noise or dd == 0.0:
                    break
                L = max(1.5 * L, 1.05 * (dkd - beta * s_d * s_d) / dd)
            diff = w_new - w
            rel = float(diff.norm()) / max(float(w.norm()), 1e-12)
            # Adaptive restart (gradient scheme, in the same metric): drop the momentum when
            # it points uphill.
            if _dot(y - w_new, diff) + (beta / L) * (s_y - float(w_new.sum())) * float(diff.sum()) > 0:
                t = 1.0
            t_new = 0.5 * (1.0 + math.sqrt(1.0 + 4.0 * t * t))
            theta = (t - 1.0) / t_new
            y = w_new + theta * diff
            ky = kw_new + theta * (kw_new - kw)
            w, kw, t = w_new, kw_new, t_new
            calm = calm + 1 if rel < self.tol_ else 0
            if calm >= 2:
                converged = True
                break
        self.n_iter_, self.converged_, self.lipschitz_, self.n_matvec_ = k, converged, L, n_mv
        return w, kw
