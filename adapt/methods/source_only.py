"""Source-only training (the no-adaptation baseline) and the target oracle (its upper bound)."""

from __future__ import annotations

import torch

from ..losses import supervised_loss
from .base import Method, Requires

__all__ = ["SourceOnly", "TargetOracle"]


class SourceOnly(Method):
    """Supervised training on labelled source data; a target set passed to ``fit`` is not
    trained on (a source adapter may still read its images).

    >>> m = SourceOnly("tiny", num_classes=2, epochs=3).fit(source_ds, val=val_ds)  # doctest: +SKIP
    """

    requires = Requires(source="labelled", target="none")
    title = "Source only"

    def training_step(self, source: dict | None, target: dict | None, p: float) -> tuple[torch.Tensor, dict]:
        logits = self.model_(source["image"])
        loss, acc = supervised_loss(logits, source, self.task_)
        return loss, {"train_acc": acc}


class TargetOracle(Method):
    """Supervised training on *labelled target* data: the upper bound adaptation aims at.

    Not an adaptation method: it reads target labels by design, and reports say so. ``fit``
    ignores any source dataset.
    """

    requires = Requires(source="none", target="labelled")
    title = "Target oracle (uses target labels)"

    def training_step(self, source: dict | None, target: dict | None, p: float) -> tuple[torch.Tensor, dict]:
        logits = self.model_(target["image"])
        loss, acc = supervised_loss(logits, target, self.task_)
        return loss, {"train_acc": acc}
