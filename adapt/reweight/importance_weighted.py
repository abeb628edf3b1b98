"""Importance weighting as a source adapter, and IW-ERM as a registered method.

Under covariate shift (p(y|x) shared, p(x) differs) the target risk is E_s[w(x) l(x, y)] with
w = p_t / p_s. :class:`ImportanceWeighting` is a source adapter: it estimates (or takes) the
weights and hands the method a source set whose items carry ``"weight"``, either

- ``mode="loss"``: per-sample weights in the loss, mean_i(w_i * l_i) over each batch (weights
  normalised to mean 1 over the source set, so the loss stays an unbiased target-risk
  estimate and keeps the unweighted loss's scale), or
- ``mode="resample"``: the source set is resampled with probabilities proportional to w
  (importance resampling) and trained on unweighted: lower gradient variance when a few
  weights are large. The draw is the same on every DDP rank (it is seeded), and the trainer's
  rank-sliced batches then split it, so it is DDP-safe.

Any method takes it: ``SourceOnly(..., source_adapter=ImportanceWeighting(KLIEP()))`` is IW-ERM
(registered as :class:`ImportanceWeighted`), and ``DANN(...,
source_adapter=ImportanceWeighting(ClassifierRatio()))`` weights the source rows of both the
classification and the domain loss, so the discriminator aligns the re-weighted source with
the target (the importance-weighted adversarial nets idea, Zhang et al. CVPR 2018; Combes et
al. NeurIPS 2020 for label shift). This matters when the domains' supports or mixes differ:
plain DANN would force features of over-represented source groups onto too few target ones.

The weights come from ``weights=`` (n_s,) or are estimated with ``estimator`` (any of
:class:`KMM`, :class:`KLIEP`, :class:`ClassifierRatio`; default ``ClassifierRatio()``) on
``featurize(source)`` vs ``featurize(target)`` (default: 8 x 8 average-pooled pixels; pass e.g.
patient attributes or a frozen encoder's features instead).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.base import clone
from torch.utils.data import Dataset, Subset

from shiftkit.adapt.methods.adapters import SourceAdapter
from shiftkit.adapt.methods.source_only import SourceOnly
from shiftkit.adapt.reweight.base import BaseWeighter, clip_and_normalize, effective_sample_size
from shiftkit.adapt.reweight.sampler import DistributedWeightedSampler
from shiftkit.datasets.errors import ConfigError, DataError

__all__ = ["ImportanceWeighted", "ImportanceWeighting", "WeightedSource", "dataset_features", "pooled_pixels"]

Featurize = Callable[[Dataset], np.ndarray]


class WeightedSource(Dataset):
    """A source dataset whose items also carry ``"weight"``: float32 scalar tensor."""

    def __init__(self, base: Dataset, weights: np.ndarray):
        if len(weights) != len(base):
            raise DataError(f"weights: {len(weights)} weights for a source set of {len(base)} items")
        self.base = base
        self.weights = torch.as_tensor(np.asarray(weights, dtype=np.float32))

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int) -> dict:
        item = dict(self.base[i])
        item["weight"] = self.weights[i]
        return item


def pooled_pixels(ds: Dataset, size: int = 8) -> np.ndarray:
    """Features (n, C * size * size): each image average-pooled to size x size."""
    feats = []
    for i in range(len(ds)):
        img = torch.as_tensor(ds[i]["image"]).float()
        if img.dim() == 1:  # vector "images" (n, F)
            feats.append(img.numpy())
            continue
        feats.append(F.adaptive_avg_pool2d(img[None], size).reshape(-1).numpy())
    return np.stack(feats).astype(np.float64)


def dataset_features(ds: Dataset, keys: list[str]) -> np.ndarray:
    """Features (n, len(keys)) from item attributes, e.g. ["age", "sex"]; strings are
    mapped to 0/1/... in sorted order of the values seen (so "F" -> 0, "M" -> 1)."""
    cols = [[ds[i][k] for i in range(len(ds))] for k in keys]
    out = []
    for k, col in zip(keys, cols, strict=True):
        if isinstance(col[0], str):
            levels = {v: j for j, v in enumerate(sorted(set(col)))}
            out.append([levels[v] for v in col])
        else:
            try:
                out.append([float(v) for v in col])
            except (TypeError, ValueError) as exc:
                raise DataError(f"attribute {k!r}: not numeric or string ({exc})") from exc
    return np.asarray(out, dtype=np.float64).T


class ImportanceWeighting(SourceAdapter):
    """Source adapter: every source item gets its importance weight ``w(x) = p_t(x) / p_s(x)``.

    Args:
        estimator: a weighter (:class:`KMM`/:class:`KLIEP`/:class:`ClassifierRatio`) fitted on
            ``featurize(source)`` vs ``featurize(target)``; ``None`` = ``ClassifierRatio()``
            (a calibrated domain classifier: needs no kernel width). Cloned, never fitted in place.
        weights: (n_s,) weights of the source items (numpy/torch) instead of an estimate.
        featurize: dataset -> (n, d) features for the estimator (default :func:`pooled_pixels`).
        clip: upper clip of the (mean-1) weights; None = no clip.
        mode: ``"loss"`` or ``"resample"`` (module docstring).

    After the method's ``fit``, its ``source_adapter_[i]`` holds ``weights_`` (n_s,) mean-1
    weights used, ``ess_`` (effective sample size) and ``estimator_``.

    >>> DANN("tiny", source_adapter=ImportanceWeighting(ClassifierRatio())).fit(src, tgt)  # doctest: +SKIP
    """

    def __init__(self, estimator: BaseWeighter | None = None, *, weights: Any = None,
                 featurize: Featurize | None = None, clip: float | None = None,
                 mode: Literal["loss", "resample"] = "loss"):
        self.estimator = estimator
        self.weights = weights
        self.featurize = featurize
        self.clip = clip
        self.mode = mode

    def needs_target(self) -> bool:
        return self.weights is None

    def fit_transform(self, source: Dataset, target: Dataset | None = None, *, seed: int = 0) -> Dataset:
        if self.mode not in ("loss", "resample"):
            raise ConfigError("ImportanceWeighting", [f"mode: expected 'loss' or 'resample', got {self.mode!r}"])
        if self.weights is not None:
            given = self.weights
            w = np.asarray(given.detach().cpu() if isinstance(given, torch.Tensor) else given, dtype=np.float64).ravel()
        else:
            if target is None:
                raise ConfigError("ImportanceWeighting", ["estimating weights needs the unlabelled target dataset"])
            from shiftkit.adapt.reweight.classifier_ratio import ClassifierRatio

            featurize = self.featurize or pooled_pixels
            self.estimator_ = clone(self.estimator) if self.estimator is not None else ClassifierRatio()
            self.estimator_.fit(featurize(source), featurize(target))
            w = np.asarray(self.estimator_.weights_, dtype=np.float64)
        if w.shape[0] != len(source) or not np.all(np.isfinite(w)) or np.any(w < 0):
            raise DataError(f"weights: need {len(source)} finite non-negative values, got shape {w.shape}")
        w, _ = clip_and_normalize(w, clip=self.clip, normalize=True)
        self.weights_ = w
        self.ess_ = effective_sample_size(w)
        if self.mode == "resample":
            # One seeded draw, identical on every rank; the trainer's batch sampler slices it.
            idx = list(DistributedWeightedSampler(w, num_samples=len(source), num_replicas=1, rank=0, seed=seed))
            return WeightedSource(Subset(source, idx), np.ones(len(idx)))
        return WeightedSource(source, w)


class ImportanceWeighted(SourceOnly):
    """Importance-weighted empirical risk minimisation (Shimodaira 2000; Sugiyama et al. 2007).

    :class:`SourceOnly` whose source adapter defaults to ``ImportanceWeighting()``
    (``ClassifierRatio`` on pooled pixels): the weighted supervised loss
    ``mean_i(w_i * CE_i)`` estimates the target risk. Pass ``source_adapter=`` to choose the
    estimator, given weights or resampling.

    Args:
        model: backbone name or split-protocol module (see :class:`Method`).
        source_adapter: an :class:`ImportanceWeighting` (or any adapter list); ``None`` =
            ``ImportanceWeighting()``.
        **kwargs: :class:`Method` arguments.

    After ``fit``: ``weights_`` (n_s,) mean-1 weights used and ``ess_``, plus the Method attributes.
    """

    # requires: as SourceOnly. The default adapter reads the target images for its estimate
    # (fit(source, target)); given weights need no target.
    title = "Importance weighted"

    def default_source_adapter(self) -> ImportanceWeighting:
        return ImportanceWeighting()

    def _fit_model(self, source: Dataset | None, target: Dataset | None, val: Dataset | None, callback: Any) -> None:
        weighting = [a for a in self.source_adapter_ if hasattr(a, "weights_")]
        if weighting:
            self.weights_, self.ess_ = weighting[-1].weights_, weighting[-1].ess_
        super()._fit_model(source, target, val, callback)
