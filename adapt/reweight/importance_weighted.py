"""Importance-weighted training: IW-ERM and importance-weighted DANN.

Under covariate shift (p(y|x) shared, p(x) differs) the target risk is E_s[w(x) l(x, y)] with
w = p_t / p_s. :class:`ImportanceWeighted` minimises that on the source data, either

- ``mode="loss"``: per-sample weights in the loss, mean_i(w_i * l_i) over each batch (weights
  normalised to mean 1 over the source set, so the loss stays an unbiased target-risk
  estimate and keeps the unweighted loss's scale), or
- ``mode="resample"``: the source set is resampled with probabilities proportional to w
  (importance resampling) and trained on unweighted: lower gradient variance when a few
  weights are large. The draw is the same on every DDP rank (it is seeded), and the trainer's
  rank-sliced batches then split it, so it is DDP-safe.

:class:`WeightedDANN` is DANN whose source terms (classification AND the source half of the
domain loss) carry the weights, so the discriminator aligns the re-weighted source with the
target (the importance-weighted adversarial nets idea, Zhang et al. CVPR 2018; Combes et al.
NeurIPS 2020 for label shift). This matters when the domains' supports or mixes differ:
plain DANN would force features of over-represented source groups onto too few target ones.

The weights come from ``weights=`` (n_s,) or are estimated with ``estimator=`` (any of
:class:`KMM`, :class:`KLIEP`, :class:`ClassifierRatio`) on ``featurize(source)`` vs
``featurize(target)`` (default: 8 x 8 average-pooled pixels; pass e.g. patient attributes or
a frozen encoder's features instead).

Trainer hook used: none beyond the public ``Method.training_step``. The weight reaches the
step as ``batch["weight"]`` because the source dataset is wrapped (:class:`WeightedSource`),
so the shared trainer needed no change.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset, Subset

from shiftkit.datasets.errors import ConfigError, DataError

from ..data import as_dataset
from ..grl import grad_reverse
from ..methods.base import Method
from ..methods.dann import DANN
from .base import BaseWeighter, clip_and_normalize, effective_sample_size
from .sampler import DistributedWeightedSampler

__all__ = ["ImportanceWeighted", "WeightedDANN", "WeightedSource", "pooled_pixels", "dataset_features"]

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


class _WeightsMixin:
    """Weight estimation and dataset wrapping shared by the weighted methods.

    Keyword args (the rest go to the method it is mixed into): ``weights``, ``estimator``,
    ``featurize``, ``clip``, ``mode`` as in :class:`ImportanceWeighted`.
    """

    def __init__(self, model: Any = "tiny", *, weights: Any = None, estimator: BaseWeighter | None = None,
                 featurize: Featurize | None = None, clip: float | None = None,
                 mode: Literal["loss", "resample"] = "loss", **kwargs: Any) -> None:
        super().__init__(model, **kwargs)
        self._init_weights(weights, estimator, featurize, clip, mode)

    def fit(self, source: Dataset, target: Dataset | None = None, *, val: Dataset | None = None,
            callback: Any = None) -> Any:
        source = as_dataset(source, name="source")
        target = as_dataset(target, name="target") if target is not None else None
        return super().fit(self._weighted_source(source, target), target, val=val, callback=callback)


    def _init_weights(self, weights: Any, estimator: BaseWeighter | None, featurize: Featurize | None,
                      clip: float | None, mode: str) -> None:
        if mode not in ("loss", "resample"):
            raise ConfigError(type(self).__name__, [f"mode: expected 'loss' or 'resample', got {mode!r}"])
        if weights is None and estimator is None:
            raise ConfigError(type(self).__name__, ["pass weights=(n_s,) or estimator=KMM()/KLIEP()/ClassifierRatio()"])
        self.given_weights = weights
        self.estimator = estimator
        self.featurize = featurize or pooled_pixels
        self.clip = clip
        self.mode = mode

    def _weighted_source(self, source: Dataset, target: Dataset | None) -> Dataset:
        if self.given_weights is not None:
            w = np.asarray(self.given_weights.detach().cpu() if isinstance(self.given_weights, torch.Tensor)
                           else self.given_weights, dtype=np.float64).ravel()
        else:
            if target is None:
                raise ConfigError(type(self).__name__, ["estimating weights needs the unlabelled target dataset"])
            self.estimator.fit(self.featurize(source), self.featurize(target))
            w = np.asarray(self.estimator.weights_, dtype=np.float64)
        if w.shape[0] != len(source) or not np.all(np.isfinite(w)) or np.any(w < 0):
            raise DataError(f"weights: need {len(source)} finite non-negative values, got shape {w.shape}")
        w, _ = clip_and_normalize(w, clip=self.clip, normalize=True)
        self.weights_ = w
        self.ess_ = effective_sample_size(w)
        if self.mode == "resample":
            # One seeded draw, identical on every rank; the trainer's batch sampler slices it.
            idx = list(DistributedWeightedSampler(w, num_samples=len(source), num_replicas=1, rank=0,
                                                  seed=self.config.seed))
            return WeightedSource(Subset(source, idx), np.ones(len(idx)))
        return WeightedSource(source, w)


def _weighted_supervised_loss(logits: torch.Tensor, batch: dict, task: str) -> tuple[torch.Tensor, torch.Tensor]:
    """mean_i w_i * CE_i (segmentation: CE averaged over each image's valid pixels first)."""
    w = batch["weight"].float()
    if task == "segmentation":
        y = batch["mask"].long()
        ce = F.cross_entropy(logits.float(), y, ignore_index=-1, reduction="none")  # (N, H, W)
        valid = (y >= 0).float()
        per = (ce * valid).sum((1, 2)) / valid.sum((1, 2)).clamp_min(1.0)
        acc = (logits.detach().argmax(1)[y >= 0] == y[y >= 0]).float().mean()
        return (w * per).mean(), acc
    y = batch["label"].long()
    if (y < 0).any():
        raise DataError("a source batch holds unlabelled items (label -1); source data must be labelled")
    ce = F.cross_entropy(logits.float(), y, reduction="none")
    acc = (logits.detach().argmax(1) == y).float().mean()
    return (w * ce).mean(), acc


class ImportanceWeighted(_WeightsMixin, Method):
    """Importance-weighted empirical risk minimisation (Shimodaira 2000; Sugiyama et al. 2007).

    Args:
        model: backbone name or split-protocol module (see :class:`Method`).
        weights: (n_s,) weights of the source items (numpy/torch), or None to estimate.
        estimator: a weighter (KMM/KLIEP/ClassifierRatio) used when ``weights`` is None.
        featurize: dataset -> (n, d) features for the estimator (default ``pooled_pixels``).
        clip: upper clip of the (mean-1) weights; None = no clip.
        mode: "loss" or "resample" (module docstring).
        **kwargs: :class:`Method` / TrainConfig arguments.

    After ``fit``: ``weights_`` (n_s,) mean-1 weights used, ``ess_``, plus the Method attributes.
    """

    uses_target = False

    def training_step(self, source: dict, target: dict | None, p: float) -> tuple[torch.Tensor, dict]:
        logits = self.model_(source["image"])
        loss, acc = _weighted_supervised_loss(logits, source, self.task)
        return loss, {"train_acc": acc}


class WeightedDANN(_WeightsMixin, DANN):
    """DANN with importance-weighted source terms (classification and domain loss).

    Args: as :class:`DANN`, plus ``weights``, ``estimator``, ``featurize``, ``clip``, ``mode``
    as in :class:`ImportanceWeighted`.
    """

    def training_step(self, source: dict, target: dict | None, p: float) -> tuple[torch.Tensor, dict]:
        ns = source["image"].shape[0]
        x = torch.cat([source["image"], target["image"]], 0)
        f, logits = self._features_and_logits(x)
        cls, acc = _weighted_supervised_loss(logits[:ns], source, self.task)
        lam = self.current_lambda(p)
        d = self.discriminator(grad_reverse(f, lam)).squeeze(1).float()
        dom = torch.zeros_like(d)
        dom[ns:] = 1.0
        per = F.binary_cross_entropy_with_logits(d, dom, reduction="none")
        # Source half weighted (mean-1 weights), target half as is: each half keeps its scale.
        dloss = 0.5 * ((source["weight"].float() * per[:ns]).mean() + per[ns:].mean())
        with torch.no_grad():
            dacc = ((d > 0).float() == dom).float().mean()
            std = d.std() if d.numel() > 1 else torch.zeros((), device=d.device)
        logs = {"domain_loss": dloss.detach(), "disc_acc": dacc, "disc_logit_std": std,
                "train_acc": acc, "cls_loss": cls.detach(), "lambda": lam}
        return cls + dloss, logs
