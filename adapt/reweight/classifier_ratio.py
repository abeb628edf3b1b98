"""Density ratio from a calibrated domain classifier.

A classifier trained to tell target (label 1) from source (label 0) gives, by Bayes' rule,

    w(x) = p_t(x) / p_s(x) = p(t | x) / p(s | x) * n_s / n_t

(the n_s / n_t factor undoes the class prior of unequal sample sizes). Note the direction:
target over source. (A peer returns p(s|x)/p(t|x), the inverse, which anti-correlates with
the true ratio.)

Default classifier: standardise, append the element-wise squares of the features, then
scikit-learn LogisticRegression. For two Gaussians with diagonal covariances the log ratio is
exactly a quadratic without cross terms, so this model is well specified there and costs
O(n d) to fit; any scikit-learn classifier with ``predict_proba`` can be passed instead.
Logistic regression maximises the likelihood and is calibrated as fitted; other classifiers
are wrapped in ``CalibratedClassifierCV`` (``calibration="auto"``).

The source weights ``weights_`` come from out-of-fold (cross-fitted) probabilities, so a
flexible classifier cannot memorise the training source points and inflate their ratios;
``weight(X_new)`` uses the classifier refitted on all data.
"""

from __future__ import annotations

import warnings
from typing import Any, Literal

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin, clone
from sklearn.calibration import CalibratedClassifierCV
from sklearn.linear_model import LogisticRegression, LogisticRegressionCV
from sklearn.model_selection import StratifiedKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from shiftkit.adapt.reweight.base import BaseWeighter
from shiftkit.datasets.errors import DataError


class AppendSquares(TransformerMixin, BaseEstimator):
    """Features (n, d) -> (n, 2d): [x, x**2]. Makes a linear model diagonal-quadratic."""

    def fit(self, X: np.ndarray, y: Any = None) -> AppendSquares:
        return self

    def transform(self, X: np.ndarray) -> np.ndarray:
        X = np.asarray(X, dtype=np.float64)
        return np.hstack([X, X * X])


def default_domain_classifier() -> Any:
    """StandardScaler -> [x, x^2] -> logistic regression, its L2 strength chosen by 3-fold
    cross-validated log-loss (the squares are pure noise under a mean shift, so a fixed C
    over- or under-fits depending on the shift)."""
    return make_pipeline(
        StandardScaler(), AppendSquares(), StandardScaler(),
        LogisticRegressionCV(Cs=[0.003, 0.03, 0.3, 3.0], cv=3, scoring="neg_log_loss", max_iter=2000),
    )


class ClassifierRatio(BaseWeighter):
    """Classifier-based density ratio p(t|x)/p(s|x) * n_s/n_t; inductive (``weight(X)``).

    Parameters
    ----------
    classifier: scikit-learn classifier with ``predict_proba``; default
        ``default_domain_classifier()``.
    calibration: "auto" (none for LogisticRegression/its pipelines, sigmoid otherwise),
        "sigmoid", "isotonic" or None.
    cross_fit: folds for the out-of-fold source weights (0 or 1: fit once on all data).
    prob_floor: p(s|x) is floored at this value so one confident point cannot produce an
        infinite weight; use ``clip`` to bound weights further.
    clip, normalize: post-processing (base class); normalize=True by default.
    seed: fold shuffling.

    Attributes after fit: ``weights_`` (n_s,), ``ess_``, ``classifier_`` (fitted on all data),
    ``domain_auc_`` (out-of-fold ROC AUC of source vs target: 0.5 means no detectable shift).
    """

    inductive = True

    def __init__(
        self,
        classifier: Any = None,
        *,
        calibration: Literal["auto", "sigmoid", "isotonic"] | None = "auto",
        cross_fit: int = 5,
        prob_floor: float = 1e-6,
        clip: float | None = None,
        normalize: bool = True,
        seed: int = 0,
    ) -> None:
        super().__init__(clip=clip, normalize=normalize)
        self.classifier = classifier
        self.calibration = calibration
        self.cross_fit = cross_fit
        self.prob_floor = prob_floor
        self.seed = seed

    def _make(self) -> Any:
        base = default_domain_classifier() if self.classifier is None else clone(self.classifier)
        if not hasattr(base, "predict_proba"):
            raise DataError(f"classifier: {type(base).__name__} has no predict_proba")
        method = self.calibration
        if method == "auto":
            final = base.steps[-1][1] if hasattr(base, "steps") else base
            method = None if isinstance(final, (LogisticRegression, LogisticRegressionCV)) else "sigmoid"
        if method is None:
            return base
        if method not in ("sigmoid", "isotonic"):
            raise DataError(f"calibration: expected 'auto', 'sigmoid', 'isotonic' or None, got {method!r}")
        return CalibratedClassifierCV(base, method=method, cv=3)

    def _fit_one(self, X: np.ndarray, y: np.ndarray) -> Any:
        with warnings.catch_warnings():
            # scikit-learn 1.8+ announces LogisticRegressionCV API changes that do not affect us.
            warnings.simplefilter("ignore", FutureWarning)
            return self._make().fit(X, y)

    def _ratio(self, p_target: np.ndarray) -> np.ndarray:
        p_t = np.clip(p_target, 0.0, 1.0)
        p_s = np.maximum(1.0 - p_t, self.prob_floor)
        return p_t / p_s * (self.n_source_ / self.n_target_)

    def _fit(self, xs: np.ndarray, xt: np.ndarray) -> np.ndarray:
        from shiftkit.evaluation.metrics import binary_auroc

        X = np.vstack([xs, xt])
        y = np.r_[np.zeros(xs.shape[0], dtype=int), np.ones(xt.shape[0], dtype=int)]
        self.classifier_ = self._fit_one(X, y)
        if self.cross_fit and self.cross_fit > 1:
            oof = np.empty(X.shape[0])
            folds = StratifiedKFold(n_splits=self.cross_fit, shuffle=True, random_state=self.seed)
            for train, test in folds.split(X, y):
                oof[test] = self._fit_one(X[train], y[train]).predict_proba(X[test])[:, 1]
        else:
            oof = self.classifier_.predict_proba(X)[:, 1]
        self.domain_auc_ = binary_auroc(y, oof)
        return self._ratio(oof[: xs.shape[0]])

    def _raw_weight(self, x: np.ndarray) -> np.ndarray:
        return self._ratio(self.classifier_.predict_proba(x)[:, 1])
