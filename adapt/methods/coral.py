"""Deep CORAL: correlation alignment of encoder features (Sun & Saenko 2016, ECCV workshops).

Each step matches the second-order statistics of the source and target feature batches:

.. math::
    \\min_{F, G} \\; E_{(x, y) \\sim S} L_{CE}(G(F(x)), y) + \\lambda \\, \\ell_{CORAL}, \\qquad
    \\ell_{CORAL} = \\frac{1}{4 d^2} \\lVert C_S - C_T \\rVert_F^2,

    C_S = \\frac{1}{n_S - 1} \\Big( D_S^\\top D_S - \\frac{1}{n_S} (1^\\top D_S)^\\top (1^\\top D_S) \\Big)

(likewise ``C_T``), ``d`` the feature width. No discriminator and no schedule: a cheap,
stable baseline that cannot see a pure mean shift (AdaBN or DANN can) - use it where the
domains differ by contrast, texture or correlation between features.
"""

from __future__ import annotations

import torch
from torch import nn

from shiftkit.adapt.methods.alignment_losses import coral_loss
from shiftkit.adapt.methods.base import Method, Requires
from shiftkit.adapt.methods.losses import supervised_loss

__all__ = ["DeepCORAL"]


class DeepCORAL(Method):
    """Source cross-entropy plus ``coral_weight`` x the CORAL loss on encoder features.

    Args:
        model: backbone name or split-protocol module (needs ``.encoder`` / ``.head``).
        coral_weight: ``lambda``. The paper picks it so the two losses are of similar size at
            the end of training; 1.0 is its value for Office-31 (literature).
        **kwargs: :class:`Method` arguments (training options, ``source_adapter``, ...).
    """

    requires = Requires(source="labelled", target="unlabelled")
    title = "Deep CORAL"
    recipe = "adapt"

    def __init__(self, model: str | nn.Module | tuple = "tiny", *, coral_weight: float = 1.0, **kwargs):
        super().__init__(model, **kwargs)
        self.coral_weight = coral_weight

    def check_params(self) -> list[str]:
        problems = []
        if not (isinstance(self.coral_weight, (int, float)) and self.coral_weight >= 0):
            problems.append(f"coral_weight must be >= 0, got {self.coral_weight!r}")
        if self.task == "segmentation":
            problems.append("DeepCORAL needs a split-protocol classifier (task='classification')")
        return problems

    def training_step(self, source: dict, target: dict | None, p: float) -> tuple[torch.Tensor, dict]:
        ns = source["image"].shape[0]
        f = self.model_.encoder(torch.cat([source["image"], target["image"]], 0))
        logits = self.model_.head(f[:ns])
        cls, acc = supervised_loss(logits, source, self.task_)
        # A source adapter's weights are frequency weights of the source covariance.
        coral = coral_loss(f[:ns], f[ns:], w_s=source.get("weight"))
        return cls + self.coral_weight * coral, {"train_acc": acc, "cls_loss": cls.detach(), "coral_loss": coral.detach()}
