"""Shared machinery of the importance-weight estimators.

Every estimator follows one style::

    est = KMM(B=5).fit(Xs, Xt)    # Xs: (n_s, d) source features, Xt: (n_t, d) target features
    est.weights_                  # (n_s,) float64 weights of the source samples
    est.ess_                      # effective sample size (sum w)^2 / sum w^2, in samples
    est.weight(X_new)             # (n,) weights of new points (inductive estimators only)

Inputs may be numpy arrays or torch tensors (raw covariates or backbone features, any
device; they are copied to CPU). A 1-D input is read as n samples of one feature.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from sklearn.base import BaseEstimator

from shiftkit.datasets.errors import DataError

ArrayLike = Any  # numpy array, torch tensor, or anything np.asarray accepts


def as_features(
    x: ArrayLike, name: str, *, n_features: int | None = None, min_samples: int = 2
) -> np.ndarray:
    """Validate features and return a float64 C-contiguous array of shape (n, d).

    Raises DataError naming ``name`` (the argument) and the first bad row.
    """
    if isinstance(x, torch.Tensor):
        x = x.detach().to("cpu", torch.float64).numpy()
    try:
        arr = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise DataError(f"{name}: cannot be read as a numeric array ({exc})") from exc
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2:
        raise DataError(f"{name}: expected shape (n_samples, n_features), got {arr.shape}")
    if arr.shape[0] < min_samples:
        raise DataError(f"{name}: need at least {min_samples} samples, got {arr.shape[0]}")
    if n_features is not None and arr.shape[1] != n_features:
        raise DataError(f"{name}: has {arr.shape[1]} features, the fitted data had {n_features}")
    bad = ~np.isfinite(arr).all(axis=1)
    if bad.any():
        rows = np.flatnonzero(bad)
        raise DataError(f"{name}: non-finite values (NaN/inf) in {rows.size} row(s), first at row {rows[0]}")
    return np.ascontiguousarray(arr)


def effective_sample_size(weights: ArrayLike) -> float:
    """Kish's effective sample size (sum w)^2 / sum w^2, in samples (n for uniform weights)."""
    w = np.asarray(weights, dtype=np.float64).ravel()
    denom = float(np.sum(w * w))
    return float(np.sum(w) ** 2 / denom) if denom > 0 else 0.0


def clip_and_normalize(
    w: np.ndarray, *, clip: float | None, normalize: bool
) -> tuple[np.ndarray, float]:
    """Apply an upper clip and/or rescale to mean 1, honouring both exactly.

    Plain "clip then rescale" can push weights back above the clip. Instead find the scale
    s >= 0 with mean(min(s * w, clip)) == 1 (a monotone function of s, solved by bisection),
    so the result has mean 1 AND max <= clip. Returns (weights, scale); the scale is kept so
    ``weight(X_new)`` maps new points the same way.
    """
    w = np.asarray(w, dtype=np.float64)
    if clip is not None and clip <= 0:
        raise DataError(f"clip: must be > 0, got {clip}")
    if not normalize:
        return (np.minimum(w, clip) if clip is not None else w), 1.0
    mean = float(w.mean())
    if mean <= 0:
        raise DataError("weights: all estimated weights are zero; cannot normalise to mean 1")
    if clip is None:
        return w / mean, 1.0 / mean
    if clip < 1.0:
        raise DataError(f"clip: a mean of 1 needs clip >= 1, got {clip}")
    if float((w > 0).mean()) * clip < 1.0:
        raise DataError(
            f"clip: only {(w > 0).sum()} of {w.size} weights are positive; clip={clip} cannot reach mean 1"
        )
    lo, hi = 0.0, 1.0 / mean
    while float(np.minimum(hi * w, clip).mean()) < 1.0:
        hi *= 2.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if float(np.minimum(mid * w, clip).mean()) < 1.0:
            lo = mid
        else:
            hi = mid
        if hi - lo <= 1e-15 * hi:
            break
    return np.minimum(hi * w, clip), hi


class BaseWeighter(BaseEstimator):
    """Base class: input checks, clipping/normalisation and the effective sample size.

    A scikit-learn estimator as far as parameters go (``__init__`` stores them as given), so
    ``get_params``/``set_params`` and ``sklearn.base.clone`` work on every weighter.

    Subclasses implement ``_fit(xs, xt) -> raw source weights`` and, when inductive,
    ``_raw_weight(x) -> raw weights``. Attributes after ``fit``: ``weights_`` (n_s,),
    ``raw_weights_`` (n_s,) before clipping/normalising, ``ess_`` (samples),
    ``n_features_in_``.
    """

    inductive: bool = False

    def __init__(self, *, clip: float | None = None, normalize: bool = True) -> None:
        self.clip = clip
        self.normalize = normalize

    def fit(self, Xs: ArrayLike, Xt: ArrayLike) -> BaseWeighter:
        """Estimate weights of the source samples Xs (n_s, d) towards the target Xt (n_t, d)."""
        xs = as_features(Xs, "Xs")
        xt = as_features(Xt, "Xt", n_features=xs.shape[1])
        self.n_features_in_ = xs.shape[1]
        self.n_source_, self.n_target_ = xs.shape[0], xt.shape[0]
        raw = np.asarray(self._fit(xs, xt), dtype=np.float64)
        self.raw_weights_ = raw
        self.weights_, self.scale_ = clip_and_normalize(raw, clip=self.clip, normalize=self.normalize)
        self.ess_ = effective_sample_size(self.weights_)
        return self

    def weight(self, X: ArrayLike) -> np.ndarray:
        """Weights (n,) of new points, with the clip and the scale learned in ``fit``."""
        if not self.inductive:
            raise NotImplementedError(f"{type(self).__name__} is transductive: use weights_ of the fitted source")
        if not hasattr(self, "weights_"):
            raise RuntimeError(f"{type(self).__name__}.weight called before fit")
        x = as_features(X, "X", n_features=self.n_features_in_, min_samples=1)
        w = np.asarray(self._raw_weight(x), dtype=np.float64) * self.scale_
        return np.minimum(w, self.clip) if self.clip is not None else w

    # -- to override --------------------------------------------------------------------
    def _fit(self, xs: np.ndarray, xt: np.ndarray) -> np.ndarray:  # pragma: no cover
        raise NotImplementedError

    def _raw_weight(self, x: np.ndarray) -> np.ndarray:  # pragma: no cover
        raise NotImplementedError
