"""Transferability scores: which candidate model (or source domain) will fine-tune best on a
target task, estimated from the candidate's features / outputs on a few labelled target
images, without fine-tuning anything.

Arrays in, numbers out (numpy arrays, torch tensors or lists). Every score is oriented so that
**higher means the candidate should transfer better**.

- :func:`logme` (You et al. 2021): maximum log evidence of a Bayesian linear model on the
  features, per target class, solved with the fixed-point iteration over one eigendecomposition
  of the feature Gram matrix, vectorised over classes.
- :func:`leep` (Nguyen et al. 2020): log expected empirical prediction from the candidate's
  own class probabilities.
- :func:`nce` (Tran et al. 2019): negative conditional entropy of target labels given the
  candidate's hard predictions.
- :func:`h_score` (Bao et al. 2019) with Ledoit-Wolf shrinkage (Ibrahim et al. 2022).
- :func:`gbc` (Pandy et al. 2022): Gaussian Bhattacharyya coefficient between target classes
  in the (PCA-reduced) feature space.
- :func:`score_all`, :data:`SCORE_NAMES`, :func:`rank_agreement` (weighted Kendall tau of a score
  against measured transfer, through ``scipy.stats.weightedtau``).

Why GBC as the "newer" score: it needs no hyper-parameter tuned on held-out tasks (SFDA's
regulariser and ETran's energy threshold are), it is a closed form over per-class means and
variances, so it stays stable with a few dozen labelled images (TransRate's coding rate
depends on its distortion ``eps`` relative to the feature scale), and in its authors'
source-model-selection experiments it beat LEEP, NCE, H-score and LogME.

Label-free ranking (no target labels) needs the candidate's predictions or a source sample:
:mod:`shiftkit.evaluation.risk` (``prediction_entropy``, ``soft_neighborhood_density``) and
:mod:`shiftkit.evaluation.gap` (``mmd_test``, ``proxy_a_distance``); ``shiftkit.adapt.harness.rank``
combines them per candidate.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from shiftkit.datasets.errors import DataError

from ._arrays import features_2d, probabilities, to_numpy

__all__ = [
    "SCORE_NAMES",
    "LogMEResult",
    "logme",
    "logme_details",
    "leep",
    "nce",
    "h_score",
    "gbc",
    "score_all",
    "rank_agreement",
]

#: Scores :func:`score_all` computes; all are higher-is-better.
SCORE_NAMES: tuple[str, ...] = ("logme", "leep", "nce", "h_score", "gbc")


# ----------------------------------------------------------------------------- input checks


def _labels(y: Any, n: int, name: str = "labels") -> tuple[np.ndarray, int]:
    """Labels (n,) -> (codes 0..C-1, C). Needs >= 2 classes."""
    arr = to_numpy(y, name).reshape(-1)
    if arr.shape[0] != n:
        raise DataError(f"argument {name!r} has {arr.shape[0]} labels for {n} rows")
    if arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)) or np.any(arr != np.round(arr)):
            raise DataError(f"argument {name!r} must hold whole-number class labels")
    if arr.dtype.kind in "iuf" and np.any(arr < 0):
        raise DataError(f"argument {name!r} holds negative labels (unlabelled rows?); pass labelled rows only")
    classes, codes = np.unique(arr, return_inverse=True)
    if len(classes) < 2:
        raise DataError(f"argument {name!r} holds a single class; transferability needs >= 2 target classes")
    return codes.astype(np.int64), len(classes)




# ----------------------------------------------------------------------------- LogME


class LogMEResult:
    """Per-class outcome of :func:`logme_details`.

    Attributes:
        score: mean over classes of the per-sample maximum log evidence (nats per sample).
        evidence: ``(C,)`` per-class maximum log evidence divided by ``N``.
        alpha: ``(C,)`` prior precision of the weights at the maximum.
        beta: ``(C,)`` noise precision at the maximum.
        iterations: fixed-point iterations run (the slowest class).
        converged: whether every class met the tolerance.
    """

    def __init__(self, score: float, evidence: np.ndarray, alpha: np.ndarray, beta: np.ndarray,
                 iterations: int, converged: bool):
        self.score, self.evidence, self.alpha, self.beta = score, evidence, alpha, beta
        self.iterations, self.converged = iterations, converged

    def to_dict(self) -> dict[str, Any]:
        return {"score": self.score, "evidence": self.evidence.tolist(), "alpha": self.alpha.tolist(),
                "beta": self.beta.tolist(), "iterations": self.iterations, "converged": self.converged}


def logme_details(
    features: Any,
    labels: Any,
    *,
    max_iter: int = 100,
    tol: float = 1e-10,
    dtype: str = "float64",
) -> LogMEResult:
    """LogME with its per-class evidence, precisions and convergence (see :func:`logme`)."""
    import torch

    f = features_2d(features, "features")
    codes, c = _labels(labels, f.shape[0])
    if dtype not in ("float64", "float32"):
        raise DataError(f"argument 'dtype' must be 'float64' or 'float32'; got {dtype!r}")
    n, d = f.shape
    tdt = torch.float64 if dtype == "float64" else torch.float32
    ft = torch.from_numpy(f).to(tdt)
    y = torch.zeros(n, c, dtype=torch.float64)
    y[torch.arange(n), torch.from_numpy(codes)] = 1.0  # one-hot: one regression per class
    # One eigendecomposition of the smaller Gram matrix gives the SVD F = U S V^T:
    # F^T F = V S^2 V^T (when N > D) or F F^T = U S^2 U^T (when N <= D). The fixed point only
    # needs sigma = s^2 and x = U^T y, never U itself: x = S^-1 V^T (F^T y).
    # Eigenvalues below rcond * largest are rounding noise (treated as 0: rank k < min(N, D)).
    # float32 resolves about 1e-7 of the largest; 1e-5 keeps the real small ones.
    rcond = max(n, d) * torch.finfo(torch.float64).eps if dtype == "float64" else 1e-5
    if n > d:
        sig, v = torch.linalg.eigh(ft.T @ ft)
        sig, v = sig.double(), v.double()
        fty = (ft.T @ y.to(tdt)).double()  # (D, C)
        keep = sig > sig.max().clamp_min(0) * rcond
        s = sig[keep].sqrt()
        x = (v[:, keep].T @ fty) / s[:, None]  # (k, C)
    else:
        sig, u = torch.linalg.eigh(ft @ ft.T)
        sig, u = sig.double(), u.double()
        keep = sig > sig.max().clamp_min(0) * rcond
        x = u[:, keep].T @ y  # (k, C)
    sigma = sig[keep][:, None]  # (k, 1) nonzero eigenvalues of F^T F
    k = int(sigma.shape[0])
    x2 = x**2  # (k, C)
    # Part of |y|^2 outside the column space of F (no singular value carries it).
    res_x2 = ((y**2).sum(0) - x2.sum(0)).clamp_min(0.0)  # (C,)
    # Profile over t = alpha / beta: for fixed t the best beta is N / E(t) with
    # E(t) = |y - F m|^2 + t |m|^2 = res_x2 + sum x^2 t / (sigma + t), so the evidence becomes a
    # function of u = log t alone (per class):
    #   L(u) = N/2 log(N / E) - N/2 + k/2 u - 1/2 sum log(t + sigma) - N/2 log 2 pi,
    # whose stationarity condition gamma = N t E'(t) / E(t) is exactly MacKay's fixed point.
    n_f = float(n)

    def profile(u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        t = u.exp()[None, :]
        den = sigma + t
        e = res_x2 + (x2 * t / den).sum(0)
        e1 = (x2 * sigma / den**2).sum(0)  # E'(t)
        e2 = -2.0 * (x2 * sigma / den**3).sum(0)  # E''(t)
        gamma = (sigma / den).sum(0)
        val = n_f / 2 * torch.log(n_f / e) - n_f / 2 + k / 2 * u - 0.5 * torch.log(den).sum(0)
        tt = t[0]
        q = tt * e1 / e
        grad = 0.5 * (gamma - n_f * q)  # dL/du
        dgamma = -(tt * sigma / den**2).sum(0)
        dq = tt * (e1 / e + tt * e2 / e - tt * e1**2 / e**2)
        hess = 0.5 * (dgamma - n_f * dq)
        return val, grad, hess

    # A few fixed-point steps from alpha = beta = 1 (the paper's start), then safeguarded
    # Newton on u: the fixed point alone converges linearly and can need hundreds of steps
    # for 1e-10 (measured: > 100 on 80 x 10 random features).
    t = torch.ones(c, dtype=torch.float64)
    for _ in range(3):
        den = sigma + t[None, :]
        gamma = (sigma / den).sum(0)
        e = res_x2 + (x2 * t[None, :] / den).sum(0)
        m2 = (sigma * x2 / den**2).sum(0)
        res2 = e - t * m2
        t = (gamma / m2.clamp_min(1e-300)) / ((n_f - gamma) / res2.clamp_min(1e-300))
        t = t.clamp(1e-12, 1e12)
    u = t.log()
    converged = False
    it = 0
    for it in range(1, max_iter + 1):  # noqa: B007 - `it` is reported
        val, grad, hess = profile(u)
        if float(grad.abs().max()) <= tol * n_f:  # stationary: gamma = N t E'/E to tol
            converged = True
            break
        step = torch.where(hess < 0, -grad / hess, grad.sign())
        step = step.clamp(-3.0, 3.0)
        for _ in range(40):  # backtrack until the evidence does not decrease
            new_val = profile(u + step)[0]
            worse = ~(new_val >= val - 1e-12 * val.abs())
            if not bool(worse.any()):
                break
            step = torch.where(worse, step / 2, step)
        u = u + step
        if float(step.abs().max()) <= tol:
            converged = True
            break
    t = u.exp()
    den = sigma + t[None, :]
    e = res_x2 + (x2 * t[None, :] / den).sum(0)
    m2 = (sigma * x2 / den**2).sum(0)
    res2 = e - t * m2
    beta = n_f / e
    alpha = t * beta
    # log|A| with A = alpha I_D + beta F^T F: k eigenvalues alpha + beta sigma_i, D - k equal alpha.
    logdet = torch.log(alpha[None, :] + beta[None, :] * sigma).sum(0) + (d - k) * torch.log(alpha)
    evidence = (d / 2.0 * torch.log(alpha) + n / 2.0 * torch.log(beta) - 0.5 * logdet
                - beta / 2.0 * res2 - alpha / 2.0 * m2 - n / 2.0 * math.log(2 * math.pi)) / n
    ev = evidence.numpy()
    return LogMEResult(float(ev.mean()), ev, alpha.numpy(), beta.numpy(), it, converged)


def logme(features: Any, labels: Any, *, max_iter: int = 100, tol: float = 1e-10, dtype: str = "float64") -> float:
    """LogME (You et al., ICML 2021): mean per-sample maximum log evidence of a linear model.

    For each target class c, the one-hot column y = 1[label == c] (N,) is modelled as
    y = F w + e with prior w ~ N(0, alpha^-1 I_D) and noise e ~ N(0, beta^-1 I_N). The log
    evidence (Bishop 2006, eq. 3.86) is

        L(alpha, beta) = D/2 log alpha + N/2 log beta - N/2 log 2 pi
                         - beta/2 |y - F m|^2 - alpha/2 |m|^2 - 1/2 log|A|,
        A = alpha I + beta F^T F,  m = beta A^-1 F^T y.

    It is maximised by MacKay's fixed point alpha <- gamma / |m|^2,
    beta <- (N - gamma) / |y - F m|^2 with gamma = sum_i sigma_i / (sigma_i + alpha/beta), where
    sigma_i are the eigenvalues of F^T F. One eigendecomposition of the smaller Gram matrix
    (D x D when N > D, else N x N) serves every class and every iteration: each step is then
    O(k C), all classes at once. Iterates until alpha/beta moves by less than ``tol``
    (relative); the reference implementation stops at 1e-3 after at most 11 steps, and its
    fast variant leaves out the (D - k) log alpha part of log|A| when rank(F) = k < D
    (e.g. N < D), which this implementation keeps.

    Args:
        features: ``(N, D)`` features of the labelled target images (any unit; LogME is not
            scale-invariant, so compare candidates on their raw features as the paper does).
        labels: ``(N,)`` target class labels (>= 2 classes).
        max_iter: fixed-point iterations at most.
        tol: relative change of alpha/beta that stops the iteration.
        dtype: ``"float64"`` (default) or ``"float32"`` for the Gram matrix and its
            eigendecomposition (about twice as fast; the iteration stays float64).

    Returns:
        LogME in nats per sample, averaged over classes (higher = better transfer).
    """
    return logme_details(features, labels, max_iter=max_iter, tol=tol, dtype=dtype).score


# ----------------------------------------------------------------------------- LEEP and NCE


def leep(source_proba: Any, labels: Any) -> float:
    """LEEP (Nguyen et al., ICML 2020): log expected empirical prediction.

    With theta_i = the candidate's class probabilities on target image i (its own Z output
    classes, which need not be the target classes):

        P(y, z) = 1/N sum_i theta_i(z) 1[y_i = y],   P(y | z) = P(y, z) / sum_y' P(y', z),
        LEEP = 1/N sum_i log( sum_z P(y_i | z) theta_i(z) ).

    Args:
        source_proba: ``(N, Z)`` probabilities (or ``(N,)`` = P(class 1) of a binary model).
        labels: ``(N,)`` target labels.

    Returns:
        LEEP in nats (<= 0; higher = better transfer).
    """
    theta = probabilities(source_proba, name="source_proba", min_rows=2)
    codes, c = _labels(labels, theta.shape[0])
    onehot = np.eye(c)[codes]  # (N, C)
    joint = onehot.T @ theta / theta.shape[0]  # (C, Z)
    pz = joint.sum(0, keepdims=True)
    cond = np.divide(joint, pz, out=np.zeros_like(joint), where=pz > 0)  # P(y | z), (C, Z)
    eep = (theta * cond[codes]).sum(1)  # (N,) sum_z P(y_i | z) theta_i(z)
    return float(np.mean(np.log(np.clip(eep, 1e-300, None))))


def nce(source_pred: Any, labels: Any) -> float:
    """NCE (Tran et al., ICCV 2019): negative conditional entropy -H(Y | Z).

    z_i is the candidate's hard prediction on target image i (its argmax when probabilities
    are given). With the empirical joint P(y, z) = #{i: y_i = y, z_i = z} / N:

        NCE = sum_{y, z} P(y, z) log P(y | z) = sum_{y, z} P(y, z) log( P(y, z) / P(z) ).

    Args:
        source_pred: ``(N,)`` predicted candidate classes, or ``(N, Z)`` probabilities.
        labels: ``(N,)`` target labels.

    Returns:
        NCE in nats (<= 0; 0 when the prediction determines the label).
    """
    arr = to_numpy(source_pred, "source_pred")
    z = probabilities(arr, name="source_pred", min_rows=2).argmax(1) if arr.ndim == 2 else arr.reshape(-1)
    codes, c = _labels(labels, len(z))
    _, zc = np.unique(z, return_inverse=True)
    joint = np.zeros((c, int(zc.max()) + 1))
    np.add.at(joint, (codes, zc), 1.0)
    joint /= len(z)
    pz = joint.sum(0, keepdims=True)
    nz = joint > 0
    return float((joint[nz] * np.log(joint[nz] / np.broadcast_to(pz, joint.shape)[nz])).sum())


# ----------------------------------------------------------------------------- H-score


def h_score(features: Any, labels: Any, *, shrinkage: bool = True) -> float:
    """H-score (Bao et al. 2019), with Ledoit-Wolf shrinkage (Ibrahim et al., ICLR 2022).

        H(f) = tr( Sigma_f^-1 Sigma_z ),  Sigma_z = cov(E[f | y]) (between-class covariance),

    and with shrinkage the covariance becomes Sigma_f^(a) = (1 - a) Sigma_f + a (tr Sigma_f / D) I
    with a the Ledoit-Wolf coefficient (``sklearn.covariance.LedoitWolf``), giving

        H_a(f) = tr( (Sigma_f^(a))^-1 (1 - a) Sigma_z ).

    The plain H-score inverts a sample covariance that is singular when N <= D (few labelled
    images); the shrunk one is always well conditioned. Both covariances use 1/N.

    Args:
        features: ``(N, D)``; labels: ``(N,)``.
        shrinkage: ``False`` gives the original H-score with a pseudo-inverse.

    Returns:
        H-score (dimensionless, >= 0; higher = better transfer).
    """
    from sklearn.covariance import LedoitWolf

    f = features_2d(features, "features")
    codes, c = _labels(labels, f.shape[0])
    f = f - f.mean(0)
    means = np.stack([f[codes == j].mean(0) for j in range(c)])
    g = means[codes]  # (N, D) each row replaced by its class mean
    cov_z = g.T @ g / len(g) - np.outer(g.mean(0), g.mean(0))
    if shrinkage:
        lw = LedoitWolf(assume_centered=False).fit(f)
        a = float(lw.shrinkage_)
        return float(np.trace(np.linalg.solve(lw.covariance_, (1.0 - a) * cov_z)))
    cov_f = f.T @ f / len(f)
    return float(np.trace(np.linalg.pinv(cov_f, rcond=1e-15) @ cov_z))


# ----------------------------------------------------------------------------- GBC


def gbc(features: Any, labels: Any, *, n_components: int | None = 64, gaussian: str = "spherical",
        seed: int = 0) -> float:
    """GBC (Pandy et al., CVPR 2022): Gaussian Bhattacharyya coefficient class separability.

    Features are reduced by PCA to ``n_components`` dimensions (at most N - 1 and D), each
    target class c is fitted with a Gaussian N(mu_c, Sigma_c) (diagonal variances, or their
    mean for ``"spherical"``, as in the authors' code; variances floored at 1e-4), and

        D_B(c, c') = 1/8 (mu_c - mu_c')^T S^-1 (mu_c - mu_c') + 1/2 log( |S| / sqrt(|Sigma_c| |Sigma_c'|) ),
        S = (Sigma_c + Sigma_c') / 2,
        GBC = - sum_c sum_{c' != c} exp(-D_B(c, c')).

    Args:
        features: ``(N, D)``; labels: ``(N,)``.
        n_components: PCA dimensions; ``None`` keeps the features as they are.
        gaussian: ``"spherical"`` (default, the authors' code) or ``"diagonal"``.
        seed: random state of the PCA solver.

    Returns:
        GBC (<= 0; 0 = classes perfectly separated; higher = better transfer).
    """
    from sklearn.decomposition import PCA

    if gaussian not in ("spherical", "diagonal"):
        raise DataError(f"argument 'gaussian' must be 'spherical' or 'diagonal'; got {gaussian!r}")
    f = features_2d(features, "features")
    codes, c = _labels(labels, f.shape[0])
    if n_components is not None:
        k = max(1, min(int(n_components), f.shape[0] - 1, f.shape[1]))
        f = PCA(n_components=k, random_state=seed).fit_transform(f)
    mus, vars_ = [], []
    for j in range(c):
        fj = f[codes == j]
        var = np.maximum(fj.var(0), 1e-4) if len(fj) > 1 else np.full(f.shape[1], 1e-4)
        if gaussian == "spherical":
            var = np.full_like(var, var.mean())
        mus.append(fj.mean(0))
        vars_.append(var)
    total = 0.0
    for a in range(c):
        for b in range(c):
            if a == b:
                continue
            s = (vars_[a] + vars_[b]) / 2.0
            db = ((mus[a] - mus[b]) ** 2 / s).sum() / 8.0 + 0.5 * (
                np.log(s).sum() - 0.5 * np.log(vars_[a]).sum() - 0.5 * np.log(vars_[b]).sum())
            total += math.exp(-db)
    return float(-total)


# ----------------------------------------------------------------------------- all at once


def score_all(
    features: Any,
    labels: Any,
    proba: Any | None = None,
    *,
    scores: Sequence[str] = SCORE_NAMES,
) -> dict[str, float]:
    """Every requested score for one candidate.

    Args:
        features: ``(N, D)`` candidate features of the labelled target images.
        labels: ``(N,)`` target labels.
        proba: ``(N, Z)`` the candidate's own output probabilities on the same images (needed
            for ``leep`` and ``nce``, which are left out as NaN without it).
        scores: names from :data:`SCORE_NAMES`.

    Returns:
        ``{name: value}``, all higher-is-better.
    """
    unknown = [s for s in scores if s not in SCORE_NAMES]
    if unknown:
        raise DataError(f"unknown score(s) {unknown}; choose from {list(SCORE_NAMES)}")
    out: dict[str, float] = {}
    for name in scores:
        if name == "logme":
            out[name] = logme(features, labels)
        elif name == "h_score":
            out[name] = h_score(features, labels)
        elif name == "gbc":
            out[name] = gbc(features, labels)
        elif proba is None:
            out[name] = math.nan
        elif name == "leep":
            out[name] = leep(proba, labels)
        else:
            out[name] = nce(proba, labels)
    return out


def rank_agreement(
    scores: Mapping[str, Sequence[float]],
    measured: Sequence[float],
) -> dict[str, float]:
    """Weighted Kendall tau (``scipy.stats.weightedtau``, hyperbolic weights) between each
    score and the measured transfer (e.g. fine-tuned target AUROC) across candidates.

    The weighting stresses agreement among the best candidates, as model selection does
    (Vigna 2015; the convention of LogME's and TLlib's tables). 1 = same order, 0 = none,
    -1 = reversed. NaN when either side is constant or has NaNs.

    Args:
        scores: ``{score name: one value per candidate}`` (higher = predicted better).
        measured: ``(n_candidates,)`` measured transfer (higher = better).
    """
    from scipy.stats import weightedtau

    truth = np.asarray(measured, dtype=float)
    if truth.ndim != 1 or len(truth) < 2:
        raise DataError("measured needs one value per candidate, at least 2 candidates")
    out: dict[str, float] = {}
    for name, vals in scores.items():
        v = np.asarray(vals, dtype=float)
        if v.shape != truth.shape:
            raise DataError(f"scores[{name!r}] has {v.size} values for {truth.size} candidates")
        if not (np.all(np.isfinite(v)) and np.all(np.isfinite(truth))) or np.ptp(v) == 0 or np.ptp(truth) == 0:
            out[name] = math.nan
            continue
        out[name] = float(weightedtau(v, truth).statistic)
    return out
