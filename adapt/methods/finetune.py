"""Fine-tuning on a few labelled target images, with layer freezing and a smaller encoder lr."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from shiftkit.datasets.errors import ConfigError, DataError

from ..data import as_dataset
from ..trainer import train
from .base import Method, supervised_loss

__all__ = ["FineTune", "labelled_count"]


def labelled_count(ds: Dataset, task: str) -> int:
    """Number of items carrying a label (classification) or a mask (segmentation)."""
    if task == "segmentation":
        return sum(1 for i in range(len(ds)) if "mask" in ds[i])
    return sum(1 for i in range(len(ds)) if int(ds[i]["label"]) >= 0)


class FineTune(Method):
    """Continue training a (source-trained) model on labelled target images.

    ``fit(source, target)`` trains on the labelled ``target`` items (this method uses target
    labels by design: it is the few-shot supervised baseline, not unsupervised adaptation);
    with ``source_weight > 0`` each step adds ``source_weight`` x the source loss so the
    model does not forget the source domain.

    Args:
        model: a trained split-protocol module (typically ``SourceOnly(...).model_``) or a
            backbone name.
        freeze: parameter-name prefixes whose parameters stay fixed, e.g. ``("encoder",)``
            or ``("encoder.net.features.denseblock1", ...)``. Frozen BatchNorm layers keep
            their running statistics.
        encoder_lr_mult: learning-rate multiplier for unfrozen encoder parameters
            (fine-tuning usually moves the encoder less than the head).
        source_weight: weight of a source supervised loss term (0 = target only).
        **kwargs: :class:`Method` / :class:`TrainConfig` arguments.
    """

    uses_target = False

    def __init__(
        self,
        model: str | nn.Module | tuple = "tiny",
        *,
        freeze: Sequence[str] = (),
        encoder_lr_mult: float = 0.1,
        source_weight: float = 0.0,
        **kwargs: Any,
    ):
        super().__init__(model, **kwargs)
        self.freeze = tuple(freeze)
        self.encoder_lr_mult = float(encoder_lr_mult)
        self.source_weight = float(source_weight)

    def _apply_freeze(self) -> list[nn.Module]:
        frozen_modules = []
        names = dict(self.model_.named_parameters())
        for prefix in self.freeze:
            if not any(n == prefix or n.startswith(prefix + ".") for n in names):
                raise ConfigError(type(self).__name__, [f"freeze prefix {prefix!r} matches no parameter"])
        for n, p in names.items():
            if any(n == f or n.startswith(f + ".") for f in self.freeze):
                p.requires_grad_(False)
        for n, m in self.model_.named_modules():
            if any(n == f or n.startswith(f + ".") for f in self.freeze) and isinstance(m, nn.modules.batchnorm._BatchNorm):
                frozen_modules.append(m)
        return frozen_modules

    def param_groups(self, lr: float) -> list[dict]:
        enc, rest = [], []
        for n, p in self.model_.named_parameters():
            if not p.requires_grad:
                continue
            (enc if n.startswith("encoder.") or n.startswith("net.") else rest).append(p)
        groups = [g for g in ({"params": enc, "lr": lr * self.encoder_lr_mult}, {"params": rest, "lr": lr}) if g["params"]]
        if not groups:
            raise ConfigError(type(self).__name__, ["every parameter is frozen; nothing to train"])
        return groups

    def training_step(self, source: dict, target: dict | None, p: float) -> tuple[torch.Tensor, dict]:
        for m in self._frozen_bn:
            m.eval()  # frozen layers keep their statistics too
        # `source` here is the labelled target stream (see fit); `target` the optional source.
        logits = self.model_(source["image"])
        loss, acc = supervised_loss(logits, source, self.task)
        logs = {"train_acc": acc}
        if target is not None and self.source_weight > 0:
            sl, _ = supervised_loss(self.model_(target["image"]), target, self.task)
            loss = loss + self.source_weight * sl
            logs["source_loss"] = sl.detach()
        return loss, logs

    def _labelled_data(self, source: Dataset | None, target: Dataset | None) -> Dataset:
        if target is None:
            raise ConfigError(type(self).__name__, ["fit() needs labelled target images (target=...)"])
        n = labelled_count(target, self.task)
        if n < len(target):
            raise DataError(
                f"{type(self).__name__}: {len(target) - n} of {len(target)} target items have no label/mask; "
                "pass only the labelled target subset"
            )
        return target

    def fit(self, source: Dataset | None = None, target: Dataset | None = None, *, val: Dataset | None = None,
            callback: Any = None) -> FineTune:
        """Fine-tune on labelled ``target`` (plus ``source`` when ``source_weight > 0``)."""
        target = as_dataset(target, name="target") if target is not None else None
        if source is not None:
            source = as_dataset(source, name="source")
        labelled = self._labelled_data(source, target)
        if val is not None:
            val = as_dataset(val, name="val")
        self._build(labelled)
        self.fit_source_, self.fit_target_ = source, labelled
        self._frozen_bn = self._apply_freeze()
        self._extra = {}
        use_source = self.source_weight > 0 and source is not None
        self.uses_target = use_source
        # The labelled target set drives the epochs; the source (if mixed in) is cycled.
        result = train(self, labelled, source if use_source else None, val, self.config, callback=callback)
        self.result_, self.history_, self.warnings_ = result, result.history, result.warnings
        return self
