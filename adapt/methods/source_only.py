"""Source-only training: the no-adaptation baseline (and source pre-training)."""

from __future__ import annotations

import torch

from .base import Method, supervised_loss

__all__ = ["SourceOnly"]


class SourceOnly(Method):
    """Supervised training on labelled source data; the target set is not used for training.

    >>> m = SourceOnly("tiny", num_classes=2, epochs=3).fit(source_ds, val=val_ds)  # doctest: +SKIP
    """

    uses_target = False

    def training_step(self, source: dict, target: dict | None, p: float) -> tuple[torch.Tensor, dict]:
        logits = self.model_(source["image"])
        loss, acc = supervised_loss(logits, source, self.task)
        return loss, {"train_acc": acc}
