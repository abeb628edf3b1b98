"""SHOT: source hypothesis transfer (Liang et al. 2020, ICML), source-free.

The source classifier head ("hypothesis") is frozen; the encoder is trained on unlabelled
target images only, so that target features fit the source hypothesis:

.. math::
    L = \\underbrace{-E_x \\sum_k p_k \\log p_k}_{L_{ent}}
        + \\underbrace{\\sum_k \\bar p_k \\log \\bar p_k}_{L_{div}}
        + \\beta \\, E_x\\, L_{CE}(p(x), \\hat y(x)),

with ``p = softmax(head(encoder(x)))``, ``p_bar`` the batch mean and ``y_hat`` the
self-supervised pseudo-label of deep clustering (eq. 4-6): at every epoch start, over the
whole target set,

.. math::
    c_k^{(0)} = \\frac{\\sum_x p_k(x)\\, g(x)}{\\sum_x p_k(x)}, \\quad
    \\hat y = \\arg\\min_k d_{cos}(g(x), c_k^{(0)}), \\quad
    c_k^{(1)} = \\frac{\\sum_x 1[\\hat y = k]\\, g(x)}{\\sum_x 1[\\hat y = k]}, \\quad
    \\hat y = \\arg\\min_k d_{cos}(g(x), c_k^{(1)}),

``g = encoder``. Within the epoch, a batch's pseudo-labels are its current features' nearest
centroids ``c^(1)`` (an online variant of the paper's per-epoch labels: it needs no sample
index, so any dataset or stream works). ``beta`` = 0.3 is the paper's (literature).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from shiftkit.datasets.errors import ConfigError

from ..data import as_dataset
from ..trainer import batch_to
from .alignment_losses import information_maximisation_loss
from .base import Method, Requires, TargetView

__all__ = ["SHOT", "cluster_centroids"]


@torch.no_grad()
def cluster_centroids(feats: torch.Tensor, proba: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """SHOT's two-round clustering: centroids ``(K, D)`` and labels ``(N,)`` from features ``(N, D)`` and probabilities ``(N, K)``.

    Classes no sample is assigned to in the first round keep their soft centroid.
    """
    f = F.normalize(feats.float(), dim=1)
    p = proba.float()
    c0 = (p.t() @ f) / p.sum(0)[:, None].clamp_min(1e-12)
    y = (f @ F.normalize(c0, dim=1).t()).argmax(1)
    onehot = F.one_hot(y, p.shape[1]).float()
    counts = onehot.sum(0)
    c1 = torch.where(counts[:, None] > 0, (onehot.t() @ f) / counts[:, None].clamp_min(1.0), c0)
    y = (f @ F.normalize(c1, dim=1).t()).argmax(1)
    return F.normalize(c1, dim=1), y


class SHOT(Method):
    """Source-free adaptation: frozen head, encoder trained by information maximisation + clustered pseudo-labels.

    ``fit(None, target)``: the source argument must be ``None``.

    Args:
        model: the trained source model (split protocol: ``.encoder`` and ``.head``).
        beta: weight of the pseudo-label cross-entropy (0.3, the paper's; 0 = SHOT-IM).
        diversity_weight: weight of ``L_div`` (1 in the paper).
        **kwargs: :class:`Method` arguments (epochs, lr, batch_size, optimizer, seed, ...).
    """

    requires = Requires(source="none", target="unlabelled")
    title = "SHOT (source-free)"
    recipe = "source_free"

    def __init__(self, model: str | nn.Module | tuple = "tiny", *, beta: float = 0.3, diversity_weight: float = 1.0,
                 **kwargs: Any):
        super().__init__(model, **kwargs)
        self.beta = beta
        self.diversity_weight = diversity_weight

    def check_params(self) -> list[str]:
        problems = []
        if not (isinstance(self.beta, (int, float)) and self.beta >= 0):
            problems.append(f"beta must be >= 0, got {self.beta!r}")
        if self.task == "segmentation":
            problems.append("SHOT needs a split-protocol classifier (task='classification')")
        return problems

    def _check_data(self, source: Any, target: Any, val: Any) -> tuple[Any, Any, Any]:
        if source is not None:
            raise ConfigError("SHOT", ["SHOT is source-free: call fit(None, target) or fit(target=...)"])
        if target is None:
            raise ConfigError("SHOT", ["fit() needs an unlabelled target dataset"])
        return None, TargetView(as_dataset(target, name="target")), None

    def extra_modules(self) -> dict[str, nn.Module]:
        self.centroids_: torch.Tensor | None = None
        self.epoch_seen_ = -1
        return {}

    def _fit_model(self, source: Any, target: Any, val: Any, callback: Any) -> None:
        head = list(self.model_.head.parameters())
        flags = [q.requires_grad for q in head]
        for q in head:
            q.requires_grad_(False)  # the source hypothesis stays as trained
        try:
            super()._fit_model(None, target, None, callback)  # no labelled validation data without the source
        finally:
            for q, flag in zip(head, flags, strict=True):
                q.requires_grad_(flag)

    def param_groups(self, lr: float) -> list[dict]:
        return [{"params": [q for q in self.model_.encoder.parameters() if q.requires_grad], "lr": lr}]

    @torch.no_grad()
    def _refresh(self) -> None:
        device = next(self.model_.parameters()).device
        was = self.model_.training
        self.model_.eval()
        feats, probas = [], []
        try:
            for batch in DataLoader(self.fit_target_, batch_size=self.eval_batch_size, shuffle=False):
                f = self.model_.encoder(batch_to({"image": batch["image"]}, device, False)["image"]).float()
                feats.append(f)
                probas.append(F.softmax(self.model_.head(f).float(), 1))
        finally:
            self.model_.train(was)
        self.centroids_, _ = cluster_centroids(torch.cat(feats), torch.cat(probas))

    def training_step(self, source: dict | None, target: dict | None, p: float) -> tuple[torch.Tensor, dict]:
        epoch = int(math.floor(p * self.epochs + 1e-9))
        if epoch != self.epoch_seen_ and self.beta > 0:
            self.epoch_seen_ = epoch
            self._refresh()
        f = self.model_.encoder(target["image"])
        logits = self.model_.head(f)
        loss, logs = information_maximisation_loss(logits, diversity_weight=self.diversity_weight)
        if self.beta > 0:
            with torch.no_grad():
                y = (F.normalize(f.detach().float(), dim=1) @ self.centroids_.to(f.device).t()).argmax(1)
            ce = F.cross_entropy(logits.float(), y)
            loss = loss + self.beta * ce
            logs["pseudo_ce"] = ce.detach()
            logs["train_acc"] = (logits.detach().argmax(1) == y).float().mean()  # agreement with the clusters
        return loss, logs
