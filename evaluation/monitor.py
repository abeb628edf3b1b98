"""Drift monitoring of incoming batches: is this batch still like the reference data?

A :class:`DriftMonitor` is fitted once on reference data (the deployed model's encoder
features ``(N, D)`` and output probabilities ``(N, K)`` on source validation or an accepted
target window). Each incoming batch then gets:

- a kernel two-sample test on features: unbiased MMD^2 (Gretton et al. 2012, eq. 3) with a
  Gaussian kernel, p-value by permutation. The kernel width is fixed at fit time (median
  heuristic on the reference, as in :func:`shiftkit.evaluation.gap.median_bandwidth`), and the
  reference block of the pooled kernel matrix is computed once, so a batch costs one
  ``(R, m)`` kernel block and ``P`` gathers of ``m x m`` entries (``R`` reference rows, ``m``
  batch rows, ``P`` permutations) instead of a fresh ``(R + m)^2`` kernel and ``P`` products;
- black-box shift detection on outputs (BBSD, Lipton et al. 2018; Rabanser et al. 2019):
  a two-sample Kolmogorov-Smirnov test per class probability (one for ``K = 2``, whose two
  columns carry the same information), or a chi-square test on the predicted-label counts;
- a Bonferroni correction over all tests of the batch: the batch p-value is
  ``min(1, T * min_t p_t)`` for ``T`` tests, and the verdict is ``drift = p < alpha``;
- which attribute groups (site, scanner, sex, weather) moved most: the MMD witness function
  ``f(x) = mean_j k(x, b_j) - mean_j k(x, r_j)`` (large where the batch has more mass than
  the reference) averaged over each group's rows of the batch.

Online mode (:meth:`DriftMonitor.update`) runs a CUSUM on the batch p-values,
``S_t = max(0, S_{t-1} + log(1/p_t) - k)``, raising an alarm and restarting when
``S_t > h``. Under no shift a valid p-value is (super-)uniform, so ``log(1/p)`` is at most
Exp(1) in distribution; ``h`` is set from that null (Markov-chain approximation of the run
length) so that the average run length between false alarms is at least ``arl0`` batches:
over a no-shift stream of ``L`` batches, about ``L / arl0`` false alarms at most. A single
batch has to be very unusual to alarm (a far stricter level than ``alpha``), while a
persistent moderate shift accumulates evidence over a few batches.

Defaults and how they were chosen: kernel width by the median heuristic (literature;
Gretton et al. 2012); ``n_reference = 500`` on development data seeds 100-109 (300 no-shift
batches of 64 each: per-seed alarm rates 0.027-0.047 at 500 reference rows, 0.020-0.080 at 200,
whose reference subset varies more between seeds); ``n_permutations = 500`` (p-values resolved
to 0.002, well below ``alpha``); ``cusum_k = 1.5`` (fixed, not tuned: halfway between the null
mean of ``log(1/p)``, 1, and the value 2 that only clearly drifted batches exceed on average);
``arl0 = 500`` is a budget, the user's to set.

Everything here is arrays in, numbers out; the model that produced the features is not needed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np
import torch

from shiftkit.datasets.errors import DataError

from ._arrays import features_2d, to_numpy
from .gap import _mmd2_from_sums, _small_problem_threads, median_bandwidth

__all__ = ["BatchDrift", "DriftMonitor", "cusum_threshold", "detection_delay", "timeseries_figure"]


@dataclass(frozen=True)
class BatchDrift:
    """Outcome of one batch.

    Attributes:
        drift: the per-batch verdict, ``p_value < alpha``.
        p_value: Bonferroni-combined p-value of all tests, ``min(1, T min_t p_t)``.
        p_values: each test's own p-value (``"mmd"``, ``"ks_<class>"`` or ``"chi2_labels"``).
        mmd2: unbiased MMD^2 between the batch and the reference (squared kernel units).
        n: rows in the batch.
        groups: attribute -> list of ``{"group", "n", "witness", "share", "reference_share"}``,
            sorted by ``witness`` (largest first: the group that moved most away from the
            reference), when attributes were given.
        most_drifted: ``"attribute=value"`` of the group with the largest witness score, or None.
        cusum: the online statistic after this batch (online mode only).
        alarm: the online alarm (online mode only; the CUSUM restarts after it).
        index: position in the stream (online mode) or -1.
    """

    drift: bool
    p_value: float
    p_values: dict[str, float]
    mmd2: float
    n: int
    groups: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    most_drifted: str | None = None
    cusum: float | None = None
    alarm: bool | None = None
    index: int = -1

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ----------------------------------------------------------------------------- online threshold


def _cusum_arl(h: float, k: float, n_cells: int = 150) -> float:
    """Average run length from 0 of ``S_t = max(0, S_{t-1} + E_t - k)``, ``E_t ~ Exp(1)``, to
    ``S_t > h``: Markov-chain approximation (Brook & Evans 1972) with an atom at 0 and
    ``n_cells`` cells on ``(0, h]``; ``ARL = (I - Q)^{-1} 1`` read at the atom."""
    edges = np.linspace(0.0, h, n_cells + 1)
    states = np.r_[0.0, 0.5 * (edges[:-1] + edges[1:])]
    lo = states[:, None] - k  # S' = s + E - k > s - k
    # P(S' in (e0, e1]) = exp(-(max(e0, lo) - lo)) - exp(-(max(e1, lo) - lo)) for e1 > lo
    cdf_hi = np.exp(-(np.maximum(edges[None, 1:], lo) - lo))
    cdf_lo = np.exp(-(np.maximum(edges[None, :-1], lo) - lo))
    q = np.empty((n_cells + 1, n_cells + 1))
    q[:, 0] = 1.0 - np.exp(-np.maximum(k - states, 0.0))  # to the atom: E <= k - s
    q[:, 1:] = cdf_lo - cdf_hi
    arl = np.linalg.solve(np.eye(n_cells + 1) - q, np.ones(n_cells + 1))
    return float(arl[0])


@lru_cache(maxsize=32)
def cusum_threshold(k: float, arl0: float) -> float:
    """CUSUM threshold ``h`` whose average run length to a false alarm is ``arl0`` batches when
    every p-value is uniform, the worst case a valid test allows (super-uniform p-values, e.g.
    from a permutation test or a Bonferroni combination, only lengthen it). Bisection on
    :func:`_cusum_arl`."""
    if not (arl0 > 1 and k > 1):
        raise DataError(f"cusum_threshold: need arl0 > 1 and k > 1; got arl0={arl0!r}, k={k!r}")
    lo, hi = 1e-3, 1.0
    while _cusum_arl(hi, k) < arl0:
        lo, hi = hi, 2 * hi
        if hi > 200:
            raise DataError(f"cusum_threshold: arl0={arl0!r} is out of reach")
    for _ in range(24):  # h to ~1e-7 relative
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if _cusum_arl(mid, k) < arl0 else (lo, mid)
    return float(hi)


def detection_delay(alarms: Sequence[bool], change_point: int) -> int | None:
    """Batches from the change point to the first alarm at or after it (0 = the first shifted
    batch alarmed), or None when no alarm followed the change."""
    for i in range(int(change_point), len(alarms)):
        if alarms[i]:
            return i - int(change_point)
    return None


# ----------------------------------------------------------------------------- monitor


def _as_attributes(attrs: Any, n: int, where: str) -> dict[str, np.ndarray]:
    if attrs is None:
        return {}
    if hasattr(attrs, "columns"):  # DataFrame
        attrs = {c: attrs[c].to_numpy() for c in attrs.columns}
    if not isinstance(attrs, Mapping):
        raise DataError(f"{where}: attributes must be a dict of columns or a DataFrame; got {type(attrs).__name__}")
    out = {}
    for k, v in attrs.items():
        arr = np.asarray(to_numpy(v, f"{where} attribute {k!r}")).astype(str)
        if arr.shape != (n,):
            raise DataError(f"{where}: attribute {k!r} has {arr.shape[0] if arr.ndim else 0} values for {n} rows")
        out[str(k)] = arr
    return out


class DriftMonitor:
    """Per-batch and online drift tests against a reference (see the module docstring).

    Args:
        alpha: per-batch level of the verdict (family-wise over the batch's tests).
        n_permutations: permutations of the MMD test; the smallest p-value is ``1/(P+1)``.
        n_reference: reference rows kept for the MMD kernel (a seeded random subset when the
            reference is larger); the KS tests use every reference row.
        bbsd: ``"ks"`` (per-class Kolmogorov-Smirnov on probabilities) or ``"chi2"``
            (chi-square on predicted-label counts) or ``None`` (features only).
        bandwidth: Gaussian kernel width in feature units; None = median heuristic on the
            reference.
        cusum_k: CUSUM reference value ``k`` (> 1 so that the statistic drifts down under no shift).
        arl0: online false-alarm budget: average batches between false alarms under no shift.
        min_group: smallest group (rows of a batch) for which a witness score is reported.
        seed: seeds the reference subset and the permutations.

    Example:
        >>> mon = DriftMonitor().fit(ref_features, ref_proba)
        >>> res = mon.test(batch_features, batch_proba, attributes={"sex": sex})
        >>> res.drift, res.p_value, res.most_drifted
    """

    def __init__(self, *, alpha: float = 0.05, n_permutations: int = 500, n_reference: int = 500,
                 bbsd: str | None = "ks", bandwidth: float | None = None, cusum_k: float = 1.5,
                 arl0: float = 500.0, min_group: int = 5, seed: int = 0):
        self.alpha = alpha
        self.n_permutations = n_permutations
        self.n_reference = n_reference
        self.bbsd = bbsd
        self.bandwidth = bandwidth
        self.cusum_k = cusum_k
        self.arl0 = arl0
        self.min_group = min_group
        self.seed = seed

    # -- fit ---------------------------------------------------------------------------------
    def fit(self, features: Any, proba: Any = None, *, attributes: Any = None) -> DriftMonitor:
        """Store the reference.

        Args:
            features: ``(N, D)`` reference features, ``N >= 10``.
            proba: ``(N, K)`` reference class probabilities (needed for BBSD).
            attributes: optional ``{name: (N,)}`` or DataFrame; only group shares are kept.
        """
        problems = []
        if not 0 < self.alpha < 1:
            problems.append(f"alpha must lie in (0, 1); got {self.alpha!r}")
        if int(self.n_permutations) < 19:
            problems.append(f"n_permutations must be >= 19 (p-values down to 0.05); got {self.n_permutations!r}")
        if int(self.n_reference) < 10:
            problems.append(f"n_reference must be >= 10; got {self.n_reference!r}")
        if self.bbsd not in ("ks", "chi2", None):
            problems.append(f"bbsd must be 'ks', 'chi2' or None; got {self.bbsd!r}")
        if not self.cusum_k > 1:
            problems.append(f"cusum_k must be > 1 (else the statistic grows under no shift); got {self.cusum_k!r}")
        if problems:
            raise DataError("DriftMonitor: " + "; ".join(problems))
        x = features_2d(features, "features", min_rows=10)
        gen = torch.Generator().manual_seed(int(self.seed))
        if x.shape[0] > self.n_reference:
            idx = torch.randperm(x.shape[0], generator=gen)[: int(self.n_reference)].numpy()
            xr = x[np.sort(idx)]
        else:
            xr = x
        self.center_ = xr.mean(0)
        self.reference_ = torch.from_numpy(xr - self.center_)
        self.bandwidth_ = float(self.bandwidth) if self.bandwidth is not None else median_bandwidth(xr[: len(xr) // 2], xr[len(xr) // 2:], seed=int(self.seed))
        self._gamma = -1.0 / (2.0 * self.bandwidth_ ** 2)
        self.k_rr_ = self._kernel(self.reference_, self.reference_)
        self.k_rr_.fill_diagonal_(0.0)
        self.k_rr_rows_ = self.k_rr_.sum(1)
        self.proba_ = None
        if self.bbsd is not None:
            if proba is None:
                raise DataError("DriftMonitor.fit: bbsd needs the reference probabilities 'proba' (N, K); pass "
                                "bbsd=None to test features only")
            p = features_2d(proba, "proba", min_rows=10)
            if p.shape[0] != x.shape[0]:
                raise DataError(f"DriftMonitor.fit: 'proba' has {p.shape[0]} rows, 'features' {x.shape[0]}")
            self.proba_ = p
            self.n_classes_ = p.shape[1]
            self.label_share_ = np.bincount(p.argmax(1), minlength=p.shape[1]) / p.shape[0]
        attrs = _as_attributes(attributes, x.shape[0], "DriftMonitor.fit")
        self.reference_shares_ = {k: {str(g): float(c) / x.shape[0] for g, c in zip(*np.unique(v, return_counts=True),
                                                                                    strict=True)}
                                  for k, v in attrs.items()}
        self.n_tests_ = 1 + (0 if self.bbsd is None else 1 if self.bbsd == "chi2" else
                             (1 if self.n_classes_ == 2 else self.n_classes_))
        self.h_ = cusum_threshold(float(self.cusum_k), float(self.arl0))
        self._perm_cache: dict[int, tuple[torch.Tensor, ...]] = {}
        self.reset()
        return self

    def reset(self) -> None:
        """Restart the online statistic (e.g. after a new reference was accepted)."""
        self.cusum_ = 0.0
        self.history_: list[BatchDrift] = []

    def _kernel(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        d = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * (a @ b.T)
        return d.clamp_min_(0.0).mul_(self._gamma).exp_()

    def _check_fitted(self) -> None:
        if not hasattr(self, "reference_"):
            raise DataError("DriftMonitor is not fitted; call fit(reference_features, reference_proba) first")

    # -- tests -------------------------------------------------------------------------------
    def _permutations(self, m: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Random splits of the pooled ``R + m`` rows, drawn once per batch size and reused
        (drawn independently of any data, so each batch's test stays exact). Each split is an
        indicator ``a = [a_R, a_B]`` of the rows put on the batch side (``m`` ones); the
        reference-only part of ``a'Ka`` and of ``a'r`` is precomputed here."""
        if m not in self._perm_cache:
            r = self.reference_.shape[0]
            gen = torch.Generator().manual_seed(int(self.seed) + 1 + m)
            sel = torch.rand(int(self.n_permutations), r + m, generator=gen).topk(m, dim=1).indices
            a = torch.zeros(int(self.n_permutations), r + m, dtype=torch.float64)
            a.scatter_(1, sel, 1.0)
            a_r, a_b = a[:, :r].contiguous(), a[:, r:].contiguous()
            self._perm_cache[m] = (a_r, a_b, ((a_r @ self.k_rr_) * a_r).sum(1), a_r @ self.k_rr_rows_)
        return self._perm_cache[m]

    def _mmd(self, xb: np.ndarray) -> tuple[float, float, torch.Tensor, torch.Tensor]:
        """MMD^2 of batch vs reference, its permutation p-value, and the kernel blocks
        ``K_RB`` ``(R, m)`` and ``K_BB`` ``(m, m)`` (diagonal zeroed).

        With pooled kernel K (diagonal zeroed), row sums r = K1, total T = 1'K1 and a split
        indicator a (batch side), the block sums are Syy = a'Ka, Sxy = a'r - Syy,
        Sxx = T - 2a'r + Syy (as in :func:`shiftkit.evaluation.gap.mmd_test`); a'Ka splits into
        a_R'K_RR a_R (precomputed) + 2 a_R'K_RB a_B + a_B'K_BB a_B, so a batch costs
        P R m + P m^2 multiply-adds.
        """
        b = torch.from_numpy(xb - self.center_)
        r, m = self.reference_.shape[0], b.shape[0]
        k_rb = self._kernel(self.reference_, b)
        k_bb = self._kernel(b, b)
        k_bb.fill_diagonal_(0.0)
        rows_r = self.k_rr_rows_ + k_rb.sum(1)
        rows_b = k_rb.sum(0) + k_bb.sum(1)
        total = rows_r.sum() + rows_b.sum()
        # observed split: every batch row on the batch side
        syy = k_bb.sum()
        ar = rows_b.sum()
        observed = float(_mmd2_from_sums(total - 2.0 * ar + syy, ar - syy, syy, r, m))
        a_r, a_b, q_rr, ar_rr = self._permutations(m)
        syy_p = q_rr + 2.0 * ((a_r @ k_rb) * a_b).sum(1) + ((a_b @ k_bb) * a_b).sum(1)
        ar_p = ar_rr + a_r @ k_rb.sum(1) + a_b @ rows_b
        stats = _mmd2_from_sums(total - 2.0 * ar_p + syy_p, ar_p - syy_p, syy_p, r, m)
        # a small tolerance so that the identity split and exact ties count as >= (float noise)
        n_ge = int((stats >= observed - 1e-12).sum())
        return observed, (1.0 + n_ge) / (1.0 + int(self.n_permutations)), k_rb, k_bb

    def _bbsd(self, pb: np.ndarray) -> dict[str, float]:
        from scipy import stats

        assert self.proba_ is not None
        if self.bbsd == "chi2":
            counts = np.bincount(pb.argmax(1), minlength=self.n_classes_)
            exp = self.label_share_ * counts.sum()
            keep = exp > 0
            if keep.sum() < 2:
                return {"chi2_labels": 1.0}
            # a class the reference never predicts but the batch does is drift by itself
            if (counts[~keep] > 0).any():
                return {"chi2_labels": 0.0}
            # tiny floor so the reference shares sum with the counts; scipy checks the totals
            res = stats.chisquare(counts[keep], exp[keep] * counts[keep].sum() / exp[keep].sum())
            return {"chi2_labels": float(res.pvalue)}
        cols = [1] if self.n_classes_ == 2 else list(range(self.n_classes_))
        return {f"ks_{c}": float(stats.ks_2samp(self.proba_[:, c], pb[:, c]).pvalue) for c in cols}

    def _groups(self, k_rb: torch.Tensor, k_bb: torch.Tensor, attrs: dict[str, np.ndarray]) -> dict[str, list[dict[str, Any]]]:
        # witness f(b_i) = mean_j k(b_i, b_j) (j != i) - mean_j k(b_i, r_j): how much more mass the
        # batch has than the reference around b_i
        m = k_bb.shape[0]
        wit = (k_bb.sum(1) / max(m - 1, 1) - k_rb.mean(0)).numpy()
        out: dict[str, list[dict[str, Any]]] = {}
        for name, vals in attrs.items():
            rows = []
            ref = self.reference_shares_.get(name, {})
            for g in np.unique(vals):
                sel = vals == g
                if sel.sum() < self.min_group:
                    continue
                rows.append({"group": str(g), "n": int(sel.sum()), "witness": float(wit[sel].mean()),
                             "share": float(sel.mean()), "reference_share": ref.get(str(g))})
            out[name] = sorted(rows, key=lambda d: -d["witness"])
        return out

    def test(self, features: Any, proba: Any = None, *, attributes: Any = None) -> BatchDrift:
        """Test one batch against the reference (does not touch the online state).

        Args:
            features: ``(m, D)`` batch features, ``m >= 2``.
            proba: ``(m, K)`` batch probabilities (needed when ``bbsd`` is set).
            attributes: optional ``{name: (m,)}`` or DataFrame of group labels.
        """
        self._check_fitted()
        xb = features_2d(features, "features")
        if xb.shape[1] != self.reference_.shape[1]:
            raise DataError(f"DriftMonitor.test: batch has {xb.shape[1]} feature columns, the reference "
                            f"{self.reference_.shape[1]}")
        with _small_problem_threads(0):
            mmd2, p_mmd, k_rb, k_bb = self._mmd(xb)
        p_values = {"mmd": p_mmd}
        if self.bbsd is not None:
            if proba is None:
                raise DataError("DriftMonitor.test: this monitor also tests outputs (bbsd); pass 'proba' (m, K)")
            pb = features_2d(proba, "proba")
            if pb.shape != (xb.shape[0], self.n_classes_):
                raise DataError(f"DriftMonitor.test: 'proba' has shape {pb.shape}, expected ({xb.shape[0]}, "
                                f"{self.n_classes_})")
            p_values.update(self._bbsd(pb))
        p = min(1.0, len(p_values) * min(p_values.values()))
        attrs = _as_attributes(attributes, xb.shape[0], "DriftMonitor.test")
        groups = self._groups(k_rb, k_bb, attrs) if attrs else {}
        top = max(((f"{a}={rows[0]['group']}", rows[0]["witness"]) for a, rows in groups.items() if rows),
                  key=lambda t: t[1], default=(None, 0.0))[0]
        return BatchDrift(drift=bool(p < self.alpha), p_value=float(p), p_values=p_values, mmd2=mmd2,
                          n=int(xb.shape[0]), groups=groups, most_drifted=top)

    def update(self, features: Any, proba: Any = None, *, attributes: Any = None) -> BatchDrift:
        """Online mode: test the next batch of a stream and update the CUSUM (see the module
        docstring). The per-batch verdict is kept as ``drift``; ``alarm`` is the online one."""
        res = self.test(features, proba, attributes=attributes)
        self.cusum_ = max(0.0, self.cusum_ + math.log(1.0 / max(res.p_value, 1e-300)) - float(self.cusum_k))
        alarm = self.cusum_ > self.h_
        out = BatchDrift(**{**asdict(res), "cusum": float(self.cusum_), "alarm": bool(alarm),
                            "index": len(self.history_)})
        if alarm:
            self.cusum_ = 0.0
        self.history_.append(out)
        return out

    def summary(self, change_point: int | None = None) -> dict[str, Any]:
        """Stream summary of the online history: batches, per-batch drift rate, alarms, and the
        detection delay (in batches) when the change point is known."""
        hist = self.history_
        out: dict[str, Any] = {
            "batches": len(hist), "drift_rate": float(np.mean([h.drift for h in hist])) if hist else float("nan"),
            "alarms": [h.index for h in hist if h.alarm], "cusum_threshold": self.h_,
            "arl0": float(self.arl0),
        }
        if change_point is not None:
            out["change_point"] = int(change_point)
            out["false_alarms_before_change"] = sum(bool(h.alarm) for h in hist[: int(change_point)])
            out["detection_delay_batches"] = detection_delay([bool(h.alarm) for h in hist], int(change_point))
            out["first_drift_verdict_delay_batches"] = detection_delay([h.drift for h in hist], int(change_point))
        return out


def timeseries_figure(rows: Sequence[Mapping[str, Any]], *, alpha: float = 0.05, cusum_threshold: float | None = None,
                      change_point: int | None = None):
    """Time series of a monitored stream: ``-log10 p`` per batch with the verdict level and the
    online alarms, the CUSUM against its threshold, the estimated accuracy with its interval
    (and the true accuracy when labels were available for evaluation), and the estimated
    prevalence. ``rows``: one dict per batch with keys ``batch``, ``p_value``, ``alarm``,
    ``cusum`` and optionally ``cbpe``/``atc``/``doc`` (``{"value", "low", "high"}``),
    ``true_accuracy``, ``prior``. Returns a matplotlib Figure."""
    from .plots import new_figure

    x = np.array([int(r["batch"]) for r in rows])
    has_acc = any("cbpe" in r for r in rows)
    has_prior = any(r.get("prior") is not None for r in rows)
    n_panels = 2 + int(has_acc) + int(has_prior)
    fig, axes = new_figure((9.0, 2.4 * n_panels), nrows=n_panels)
    ax = axes[0]
    lp = -np.log10(np.clip([float(r["p_value"]) for r in rows], 1e-12, 1))
    ax.plot(x, lp, "o-", ms=3, label="-log10 p (batch)")
    ax.axhline(-math.log10(alpha), color="grey", ls="--", lw=1, label=f"alpha = {alpha:g}")
    al = [r["batch"] for r in rows if r.get("alarm")]
    if al:
        ax.plot(al, [lp[list(x).index(a)] for a in al], "rv", ms=8, label="online alarm")
    ax.set_ylabel("-log10 p")
    ax.legend(loc="upper left", fontsize=8)
    ax = axes[1]
    ax.plot(x, [float(r.get("cusum") or 0.0) for r in rows], "-", color="C1", label="CUSUM")
    if cusum_threshold is not None:
        ax.axhline(cusum_threshold, color="red", ls="--", lw=1, label="alarm threshold")
    ax.set_ylabel("CUSUM")
    ax.legend(loc="upper left", fontsize=8)
    i = 2
    if has_acc:
        ax = axes[i]
        i += 1
        for name, col in (("cbpe", "C0"), ("atc", "C2"), ("doc", "C4")):
            vals = [r.get(name) for r in rows]
            if not any(v is not None for v in vals):
                continue
            ax.plot(x, [v["value"] for v in vals], "-", color=col, label=f"{name.upper()} estimate")
            if name == "cbpe":  # no band where an estimate has no interval (low/high None)
                ax.fill_between(x, [np.nan if v.get("low") is None else v["low"] for v in vals],
                                [np.nan if v.get("high") is None else v["high"] for v in vals], color=col, alpha=0.2)
        if any(r.get("true_accuracy") is not None for r in rows):
            ax.plot(x, [r.get("true_accuracy", np.nan) for r in rows], "k.", label="true (evaluation labels)")
        ax.set_ylabel("accuracy")
        ax.legend(loc="lower left", fontsize=8)
    if has_prior:
        ax = axes[i]
        ax.plot(x, [r["prior"][-1] if r.get("prior") is not None else np.nan for r in rows], "-", color="C3",
                label="estimated share of the last class")
        ax.set_ylabel("prevalence")
        ax.legend(loc="upper left", fontsize=8)
    for ax in np.atleast_1d(axes):
        if change_point is not None:
            ax.axvline(change_point - 0.5, color="black", lw=1, alpha=0.5)
    np.atleast_1d(axes)[-1].set_xlabel("batch (arrival order)")
    return fig
