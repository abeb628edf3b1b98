"""Source-only training (the no-adaptation baseline) and the target oracle (its upper bound)."""

from __future__ import annotations

from typing import Any

import torch

from shiftkit.adapt.methods.base import Method, Requires
from shiftkit.adapt.methods.losses import supervised_loss

__all__ = ["SourceOnly", "TargetOracle"]


class SourceOnly(Method):
    """Supervised training on labelled source data; a target set passed to ``fit`` is not
    trained on (a source adapter may still read its images).

    >>> m = SourceOnly("tiny", num_classes=2, epochs=3).fit(source_ds, val=val_ds)  # doctest: +SKIP
    """

    requires = Requires(source="labelled", target="none")
    title = "Source only"

    @classmethod
    def from_config(cls, context: Any) -> Method:
        """As :meth:`Method.from_config`; in a run (a context with a run config), plain
        ``source_only`` also trains with ``train.source_augment`` (ERM + strong augmentation, no
        target image read) and is temperature-scaled on source validation when ``train.calibrate``."""
        m = context.make(cls)
        config = getattr(context, "config", None)
        if cls is SourceOnly and config is not None:
            train = config.train
            m.calibrate = train.calibrate
            if train.source_augment != "none" and m.source_adapter is None:
                from shiftkit.adapt.augment.adapter import TargetStyle

                m.source_adapter = TargetStyle(restyle=None, preset=train.source_augment,
                                               preset_strength=train.source_augment_strength)
        return m

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
