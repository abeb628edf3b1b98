"""Maximum mean discrepancy with a Gaussian kernel: the unbiased MMD^2, the quadratic-time
permutation test (blocked kernel sums in torch) and the linear-time test; the median-heuristic
bandwidth. Shapes: source ``x`` (n, D), target ``y`` (m, D)."""

from __future__ import annotations

import contextlib
import math
from dataclasses import asdict, dataclass
from typing import Any

import torch

from shiftkit.datasets.errors import DataError

from .._arrays import features_2d, same_width

__all__ = ["LinearMMDResult", "MMDResult", "median_bandwidth", "mmd2_unbiased", "mmd_linear_test", "mmd_test"]


@dataclass(frozen=True)
class MMDResult:
    """Result of the quadratic-time permutation test.

    mmd2: unbiased MMD^2 estimate (squared kernel units; can be slightly negative under no shift).
    p_value: permutation p-value, (1 + #{perm >= observed}) / (1 + n_permutations).
    bandwidth: Gaussian kernel width sigma in feature units, k(a, b) = exp(-|a-b|^2 / (2 sigma^2)).
    """

    mmd2: float
    p_value: float
    bandwidth: float
    n_x: int = 0
    n_y: int = 0
    n_permutations: int = 0

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)


@dataclass(frozen=True)
class LinearMMDResult:
    """Result of the linear-time MMD test (Gretton et al. 2012, section 6).

    mmd2: the linear-time unbiased estimate (mean of h over n//2 disjoint quadruples);
    p_value: one-sided normal-approximation p-value; z: the z statistic.
    """

    mmd2: float
    p_value: float
    bandwidth: float
    z: float
    n_pairs: int

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)


# ----------------------------------------------------------------------------- kernels


def _as_tensor(x: Any, name: str, dtype: torch.dtype) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        t = x.detach().to("cpu")
        if t.ndim == 1:
            t = t[:, None]
        if t.ndim != 2:
            raise DataError(f"argument {name!r} must have shape (N, D); got shape {tuple(t.shape)}")
        if t.shape[0] < 2:
            raise DataError(f"argument {name!r} needs at least 2 rows; got {t.shape[0]}")
        if not torch.isfinite(t).all():
            raise DataError(f"argument {name!r} has non-finite values")
        return t.to(dtype)
    return torch.from_numpy(features_2d(x, name)).to(dtype)


def _sq_dists(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Squared Euclidean distances (n, m); inputs are centred by the caller so that the
    |a|^2 + |b|^2 - 2ab expansion does not cancel catastrophically in float32."""
    d = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * (a @ b.T)
    return d.clamp_min_(0.0)


def _median_bandwidth_t(z: torch.Tensor, max_points: int, generator: torch.Generator) -> float:
    if z.shape[0] > max_points:
        idx = torch.randperm(z.shape[0], generator=generator)[:max_points]
        z = z[idx]
    d2 = _sq_dists(z, z)
    iu = torch.triu_indices(z.shape[0], z.shape[0], offset=1)
    dist = d2[iu[0], iu[1]].double().sqrt()
    med = float(dist.median()) if dist.numel() else 0.0
    if not med > 0:
        # Many duplicate points: fall back to the mean non-zero distance, then to 1.
        pos = dist[dist > 0]
        med = float(pos.mean()) if pos.numel() else 1.0
    return med


def median_bandwidth(x: Any, y: Any, *, max_points: int = 2000, seed: int = 0) -> float:
    """Median heuristic: the median pairwise Euclidean distance in the pooled sample
    (computed on at most `max_points` randomly chosen points). Returns sigma in feature units."""
    xt = _as_tensor(x, "x", torch.float64)
    yt = _as_tensor(y, "y", torch.float64)
    if xt.shape[1] != yt.shape[1]:
        same_width(xt.numpy(), yt.numpy(), "x", "y")
    z = torch.cat([xt, yt])
    z = z - z.mean(0)
    return _median_bandwidth_t(z, max_points, torch.Generator().manual_seed(seed))


class _SymKernel:
    """Pooled Gaussian kernel matrix (N x N, diagonal zeroed) stored as its upper-triangular
    blocks K_ij, i <= j. Symmetry halves both the build and each quadratic form a'Ka:
    a'Ka = sum_i a_i'K_ii a_i + 2 sum_{i<j} a_i'K_ij a_j, i.e. B(B+1)/2 of B^2 block products."""

    def __init__(self, z: torch.Tensor, bandwidth: float, block: int = 4000):
        big_n = z.shape[0]
        n_blocks = max(1, round(big_n / block))
        edges = [round(i * big_n / n_blocks) for i in range(n_blocks + 1)]
        self.slices = [slice(edges[i], edges[i + 1]) for i in range(n_blocks)]
        gamma = -1.0 / (2.0 * bandwidth * bandwidth)
        sq = (z * z).sum(1)
        self.blocks: dict[tuple[int, int], torch.Tensor] = {}
        r = torch.zeros(big_n, dtype=z.dtype)
        for i, si in enumerate(self.slices):
            for j in range(i, n_blocks):
                sj = self.slices[j]
                kij = z[si] @ z[sj].T
                kij.mul_(-2.0).add_(sq[si][:, None]).add_(sq[sj][None, :]).clamp_min_(0.0)
                kij.mul_(gamma).exp_()
                if i == j:
                    kij.fill_diagonal_(0.0)  # the unbiased estimator leaves out i == j terms
                self.blocks[(i, j)] = kij
                r[si] += kij.sum(1)
                if i != j:
                    r[sj] += kij.sum(0)
        self.row_sums = r  # r = K 1
        self.total = r.sum()  # T = 1'K1

    def quad(self, a: torch.Tensor) -> torch.Tensor:
        """a'Ka for each row of a (p, N) -> (p,)."""
        out = torch.zeros(a.shape[0], dtype=a.dtype)
        for (i, j), kij in self.blocks.items():
            ai = a[:, self.slices[i]]
            aj = ai if i == j else a[:, self.slices[j]]
            term = ((ai @ kij) * aj).sum(1)
            out += term if i == j else 2.0 * term
        return out

    def mmd2(self, a: torch.Tensor, n: int, m: int) -> torch.Tensor:
        """Unbiased MMD^2 for each split a (p, N) with n ones (x) per row."""
        sxx = self.quad(a)
        ar = a @ self.row_sums
        sxy = ar - sxx
        syy = self.total - 2.0 * ar + sxx
        return _mmd2_from_sums(sxx, sxy, syy, n, m)


def _pooled_kernel(
    x: Any, y: Any, bandwidth: float | None, dtype: torch.dtype, seed: int
) -> tuple[_SymKernel, int, int, float]:
    xt = _as_tensor(x, "x", dtype)
    yt = _as_tensor(y, "y", dtype)
    if xt.shape[1] != yt.shape[1]:
        raise DataError(f"'x' has {xt.shape[1]} feature column(s) but 'y' has {yt.shape[1]}")
    n, m = xt.shape[0], yt.shape[0]
    z = torch.cat([xt, yt])
    # Centring changes no distance but keeps |a|^2 + |b|^2 - 2ab from cancelling in float32.
    z = z - z.mean(0)
    if bandwidth is None:
        bandwidth = _median_bandwidth_t(z, 2000, torch.Generator().manual_seed(seed))
    elif not (bandwidth > 0 and math.isfinite(bandwidth)):
        raise DataError(f"argument 'bandwidth' must be a positive number; got {bandwidth!r}")
    return _SymKernel(z, float(bandwidth)), n, m, float(bandwidth)


def _mmd2_from_sums(sxx: torch.Tensor, sxy: torch.Tensor, syy: torch.Tensor, n: int, m: int) -> torch.Tensor:
    return sxx / (n * (n - 1)) + syy / (m * (m - 1)) - 2.0 * sxy / (n * m)


@contextlib.contextmanager
def _small_problem_threads(n_total: int):
    """Run tiny problems single-threaded: at N of a few hundred, OpenMP hand-offs cost more
    than the arithmetic (25x slower measured on a busy 2-core machine). Restores the setting."""
    before = torch.get_num_threads()
    if n_total <= 1500 and before > 1:
        torch.set_num_threads(1)
        try:
            yield
        finally:
            torch.set_num_threads(before)
    else:
        yield


def _dtype_for(n_total: int) -> torch.dtype:
    # float64 where the kernel matrix is small (exactness for tests and small studies);
    # float32 at scale, where the matmul cost dominates and 1e-7 relative error is harmless.
    return torch.float64 if n_total <= 3000 else torch.float32


def _split_indicator(n: int, m: int, dtype: torch.dtype) -> torch.Tensor:
    a = torch.zeros(1, n + m, dtype=dtype)
    a[0, :n] = 1.0
    return a


def mmd2_unbiased(x: Any, y: Any, bandwidth: float | None = None) -> float:
    """Unbiased MMD^2 (Gretton et al. 2012, eq. 3) with a Gaussian kernel.

    x: (n, D), y: (m, D), n, m >= 2. bandwidth: sigma in feature units, None for the median
    heuristic on the pooled sample. Returns MMD^2 in squared kernel units (unitless; the
    Gaussian kernel is bounded by 1), which can be slightly negative when there is no shift.
    """
    n_total = _n_rows(x) + _n_rows(y)
    dtype = _dtype_for(n_total)
    with _small_problem_threads(n_total):
        k, n, m, _ = _pooled_kernel(x, y, bandwidth, dtype, seed=0)
        return float(k.mmd2(_split_indicator(n, m, dtype), n, m)[0])


def _n_rows(x: Any) -> int:
    return int(x.shape[0]) if hasattr(x, "shape") and len(x.shape) else len(x)


def mmd_test(
    x: Any,
    y: Any,
    *,
    n_permutations: int = 1000,
    seed: int = 0,
    bandwidth: float | None = None,
    max_samples: int | None = 10_000,
) -> MMDResult:
    """Two-sample test H0: x and y come from the same distribution.

    Gaussian kernel with median-heuristic width (or `bandwidth`), unbiased MMD^2, permutation
    p-value. The pooled (N x N) kernel matrix K (diagonal zeroed) is built once; each permutation
    is an indicator vector a (1 = assigned to x), and the three block sums follow from one
    quadratic form: Sxx = a'Ka, Sxy = a'r - Sxx, Syy = T - 2a'r + Sxx with r = K1, T = 1'K1.
    Permutations are evaluated in chunks as matrix products (A K), using K's symmetry.

    max_samples: each side is randomly subsampled to at most this many rows (memory is
    2 N^2 bytes in float32 for the upper-triangular blocks); None disables it. For larger data
    use `mmd_linear_test`.
    Returns an `MMDResult`; the p-value is never 0 (the observed split counts as one permutation).
    """
    if n_permutations < 1:
        raise DataError(f"argument 'n_permutations' must be >= 1; got {n_permutations}")
    gen = torch.Generator().manual_seed(int(seed))
    x = _subsample(x, "x", max_samples, gen)
    y = _subsample(y, "y", max_samples, gen)
    n_total = _n_rows(x) + _n_rows(y)
    with _small_problem_threads(n_total):
        return _mmd_permutation_test(x, y, n_permutations, seed, bandwidth, gen)


def _mmd_permutation_test(
    x: Any, y: Any, n_permutations: int, seed: int, bandwidth: float | None, gen: torch.Generator
) -> MMDResult:
    n_total = _n_rows(x) + _n_rows(y)
    dtype = _dtype_for(n_total)
    k, n, m, bw = _pooled_kernel(x, y, bandwidth, dtype, seed=seed)
    big_n = n + m
    observed = k.mmd2(_split_indicator(n, m, dtype), n, m)[0]
    # Chunk of permutations per matrix product: large enough for BLAS efficiency (1,000 per
    # product measured ~10% cheaper than 512 at N = 10,000), bounded to ~16M entries (64 MB in
    # float32) for memory.
    chunk = int(max(16, min(1024, 16_000_000 // big_n)))
    n_ge = 0
    done = 0
    while done < n_permutations:
        p = min(chunk, n_permutations - done)
        # A random split with exactly n ones per row: the n smallest of N uniform draws.
        u = torch.rand(p, big_n, generator=gen, dtype=torch.float64)
        kth = u.kthvalue(n, dim=1, keepdim=True).values
        a = (u <= kth).to(dtype)  # (p, N)
        stats = k.mmd2(a, n, m)
        n_ge += int((stats >= observed).sum())
        done += p
    p_value = (1.0 + n_ge) / (1.0 + n_permutations)
    return MMDResult(float(observed), float(p_value), bw, n, m, int(n_permutations))


def _subsample(x: Any, name: str, max_samples: int | None, gen: torch.Generator) -> Any:
    if max_samples is None:
        return x
    n = _n_rows(x)
    if n <= max_samples:
        return x
    idx = torch.randperm(n, generator=gen)[:max_samples]
    if isinstance(x, torch.Tensor):
        return x[idx]
    return features_2d(x, name)[idx.numpy()]


def mmd_linear_test(x: Any, y: Any, *, bandwidth: float | None = None, seed: int = 0) -> LinearMMDResult:
    """Linear-time MMD test for large n (Gretton et al. 2012, Lemma 14 / Corollary 16).

    Uses n2 = min(n, m) // 2 disjoint quadruples (x_2i, x_2i+1, y_2i, y_2i+1) after a seeded
    shuffle; h = k(x,x') + k(y,y') - k(x,y') - k(x',y). The statistic mean(h) is asymptotically
    normal, so the one-sided p-value is 1 - Phi(sqrt(n2) mean(h) / std(h)). O(n D) time and
    memory; less powerful than `mmd_test` at equal n, but usable at millions of rows.
    """
    with _small_problem_threads(0 if _n_rows(x) + _n_rows(y) <= 100_000 else 10**9):
        return _linear_mmd(x, y, bandwidth, seed)


def _linear_mmd(x: Any, y: Any, bandwidth: float | None, seed: int) -> LinearMMDResult:
    xt = _as_tensor(x, "x", torch.float64)
    yt = _as_tensor(y, "y", torch.float64)
    if xt.shape[1] != yt.shape[1]:
        raise DataError(f"'x' has {xt.shape[1]} feature column(s) but 'y' has {yt.shape[1]}")
    gen = torch.Generator().manual_seed(int(seed))
    n2 = min(xt.shape[0], yt.shape[0]) // 2
    if n2 < 2:
        raise DataError("mmd_linear_test needs at least 4 rows on each side")
    xt = xt[torch.randperm(xt.shape[0], generator=gen)[: 2 * n2]]
    yt = yt[torch.randperm(yt.shape[0], generator=gen)[: 2 * n2]]
    if bandwidth is None:
        z = torch.cat([xt, yt])
        bandwidth = _median_bandwidth_t(z - z.mean(0), 2000, gen)
    gamma = 1.0 / (2.0 * bandwidth * bandwidth)

    def kv(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return torch.exp(-gamma * ((a - b) ** 2).sum(1))

    x1, x2, y1, y2 = xt[0::2], xt[1::2], yt[0::2], yt[1::2]
    h = kv(x1, x2) + kv(y1, y2) - kv(x1, y2) - kv(x2, y1)
    mean = float(h.mean())
    sd = float(h.std(unbiased=True))
    z_stat = mean * math.sqrt(n2) / sd if sd > 0 else (math.inf if mean > 0 else 0.0)
    p = 0.5 * math.erfc(z_stat / math.sqrt(2.0))
    return LinearMMDResult(mean, float(p), float(bandwidth), float(z_stat), int(n2))
