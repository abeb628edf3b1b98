"""Distances between two feature sets other than MMD: the proxy A-distance (a domain
classifier's held-out error), Frechet, CORAL and mean distances. Shapes: ``xs`` (n, D),
``xt`` (m, D)."""

from __future__ import annotations

from typing import Any

import numpy as np

from shiftkit.datasets.errors import DataError

from .._arrays import features_2d, same_width

__all__ = ["coral_distance", "frechet_distance", "mean_distance", "proxy_a_distance"]


def proxy_a_distance(
    xs: Any, xt: Any, *, test_size: float = 0.5, seed: int = 0, C: float = 1.0,
    classifier: str = "linear",
) -> dict[str, float]:
    """Proxy A-distance 2 (1 - 2 err) (Ben-David et al. 2007) from a held-out domain classifier.

    A standardised domain classifier learns source-vs-target on a stratified `1 - test_size`
    share and is scored on the rest: `classifier="linear"` (logistic regression, as in the
    paper) or `"rbf"` (an RBF-kernel SVM, `gamma="scale"` on the standardised features), for domains that differ
    along curved directions a linear classifier cannot see (two rotated moons have a linear
    PAD near 0 but an RBF PAD near 1); err is the balanced error (so unequal domain sizes do not
    inflate it). Returns {"proxy_a_distance", "domain_error", "domain_auroc"}: 0 = domains
    indistinguishable (err 0.5; values below 0 are clipped), 2 = perfectly separable.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import balanced_accuracy_score
    from sklearn.model_selection import train_test_split
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from ..metrics import binary_auroc

    a = features_2d(xs, "xs", min_rows=4)
    b = features_2d(xt, "xt", min_rows=4)
    same_width(a, b, "xs", "xt")
    z = np.concatenate([a, b])
    d = np.r_[np.zeros(len(a), dtype=int), np.ones(len(b), dtype=int)]
    z_tr, z_te, d_tr, d_te = train_test_split(z, d, test_size=test_size, stratify=d, random_state=seed)
    if classifier == "linear":
        model = LogisticRegression(C=C, max_iter=2000)
    elif classifier == "rbf":
        from sklearn.svm import SVC

        model = SVC(C=C, kernel="rbf", gamma="scale")
    else:
        raise DataError(f"argument 'classifier' must be 'linear' or 'rbf'; got {classifier!r}")
    clf = make_pipeline(StandardScaler(), model)
    clf.fit(z_tr, d_tr)
    err = 1.0 - balanced_accuracy_score(d_te, clf.predict(z_te))
    auc = binary_auroc(d_te, clf.decision_function(z_te))
    return {
        "proxy_a_distance": float(max(0.0, 2.0 * (1.0 - 2.0 * err))),
        "domain_error": float(err),
        "domain_auroc": float(auc),
    }


def _mean_cov(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return a.mean(0), np.atleast_2d(np.cov(a, rowvar=False))


def _sqrtm_psd(c: np.ndarray) -> np.ndarray:
    """Square root of a symmetric PSD matrix by eigen-decomposition (negative round-off
    eigenvalues clipped to 0). Unlike scipy.linalg.sqrtm this never returns complex values
    or NaN for the rank-deficient covariances that n < D feature sets produce."""
    w, v = np.linalg.eigh((c + c.T) / 2.0)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def frechet_distance(xs: Any, xt: Any) -> float:
    """Frechet (2-Wasserstein between fitted Gaussians) distance, in squared feature units:
    |mu_s - mu_t|^2 + Tr(C_s + C_t - 2 (C_s^1/2 C_t C_s^1/2)^1/2).

    The cross term uses sqrt(C_s) C_t sqrt(C_s), which is symmetric PSD, so its trace square
    root is the sum of square roots of its (clipped) eigenvalues: stable where sqrtm of the
    non-symmetric product C_s C_t is not.
    """
    a = features_2d(xs, "xs")
    b = features_2d(xt, "xt")
    same_width(a, b, "xs", "xt")
    mu_a, c_a = _mean_cov(a)
    mu_b, c_b = _mean_cov(b)
    s_a = _sqrtm_psd(c_a)
    mid = s_a @ c_b @ s_a
    w = np.linalg.eigvalsh((mid + mid.T) / 2.0)
    tr_cross = float(np.sqrt(np.clip(w, 0.0, None)).sum())
    val = float(((mu_a - mu_b) ** 2).sum() + np.trace(c_a) + np.trace(c_b) - 2.0 * tr_cross)
    return max(0.0, val)


def coral_distance(xs: Any, xt: Any) -> float:
    """CORAL distance |C_s - C_t|_F^2 / (4 D^2) (Sun & Saenko 2016), squared feature units.

    Covariances only: blind to a pure mean shift by construction. Use it beside
    `mean_distance`, `frechet_distance` or `mmd_test`, never alone (see `gap_summary`).
    """
    a = features_2d(xs, "xs")
    b = features_2d(xt, "xt")
    same_width(a, b, "xs", "xt")
    d = a.shape[1]
    diff = _mean_cov(a)[1] - _mean_cov(b)[1]
    return float((diff**2).sum() / (4.0 * d * d))


def mean_distance(xs: Any, xt: Any) -> float:
    """Euclidean distance between the domain means, in feature units."""
    a = features_2d(xs, "xs", min_rows=1)
    b = features_2d(xt, "xt", min_rows=1)
    same_width(a, b, "xs", "xt")
    return float(np.linalg.norm(a.mean(0) - b.mean(0)))
