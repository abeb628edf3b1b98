"""Fine-tuning on a few labelled target images, with layer freezing and a smaller encoder lr."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from shiftkit.adapt.methods.base import Method, Requires, labelled_count
from shiftkit.adapt.methods.losses import supervised_loss
from shiftkit.adapt.training.trainer import train
from shiftkit.datasets.errors import ConfigError

__all__ = ["FineTune", "labelled_count"]


class FineTune(Method):
    """Continue training a (source-trained) model on labelled target images.

    ``fit(source, target)`` trains on the labelled ``target`` items (this method uses target
    labels by design: it is the few-shot supervised baseline, not unsupervised adaptation);
    with ``source_weight > 0`` each step adds ``source_weight`` x the loss on a source batch
    so the model does not forget the source domain (``source`` is then needed).

    Args:
        model: a trained split-protocol module (typically ``SourceOnly(...).model_``; it is
            copied, not changed) or a backbone name.
        freeze: parameter-name prefixes whose parameters stay fixed, e.g. ``("encoder",)``
            or ``("encoder.net.features.denseblock1", ...)``. Frozen BatchNorm layers keep
            their running statistics.
        encoder_lr_mult: learning-rate multiplier for unfrozen encoder parameters
            (fine-tuning usually moves the encoder less than the head).
        source_weight: weight of a source supervised loss term (0 = target only).
        **kwargs: :class:`Method` arguments.
    """

    requires = Requires(source="optional", target="labelled")
    title = "Fine-tune (uses target labels)"
    labelled_fraction = None  # the harness's cell names how many labelled target images: finetune[frac=f]

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
        self.freeze = freeze
        self.encoder_lr_mult = encoder_lr_mult
        self.source_weight = source_weight

    def check_params(self) -> list[str]:
        if isinstance(self.freeze, str):
            return [f"freeze: expected a list of parameter-name prefixes, got the string {self.freeze!r}"]
        return []

    def _apply_freeze(self) -> list[nn.Module]:
        frozen_modules = []
        names = dict(self.model_.named_parameters())
        prefixes = tuple(self.freeze)
        for prefix in prefixes:
            if not any(n == prefix or n.startswith(prefix + ".") for n in names):
                raise ConfigError(type(self).__name__, [f"freeze prefix {prefix!r} matches no parameter"])
        for n, p in names.items():
            if any(n == f or n.startswith(f + ".") for f in prefixes):
                p.requires_grad_(False)
        for n, m in self.model_.named_modules():
            if any(n == f or n.startswith(f + ".") for f in prefixes) and isinstance(m, nn.modules.batchnorm._BatchNorm):
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

    def training_step(self, source: dict | None, target: dict | None, p: float) -> tuple[torch.Tensor, dict]:
        for m in self.frozen_modules_:
            m.eval()  # frozen layers keep their statistics too
        logits = self.model_(target["image"])
        loss, acc = supervised_loss(logits, target, self.task_)
        logs = {"train_acc": acc}
        if source is not None and self.source_weight > 0:
            sl, _ = supervised_loss(self.model_(source["image"]), source, self.task_)
            loss = loss + self.source_weight * sl
            logs["source_loss"] = sl.detach()
        return loss, logs

    def _fit_model(self, source: Dataset | None, target: Dataset | None, val: Dataset | None, callback: Any) -> None:
        self.frozen_modules_ = self._apply_freeze()
        if self.source_weight > 0 and source is None:
            raise ConfigError(type(self).__name__, ["source_weight > 0 needs the labelled source: fit(source, target)"])
        # The labelled target set drives the epochs; the source (if mixed in) is cycled beside it.
        use_source = source if self.source_weight > 0 else None
        self._set_result(train(self, use_source, target, val, self.config_, callback=callback))
