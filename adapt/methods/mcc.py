"""MCC: minimum class confusion (Jin et al. 2020, "Minimum Class Confusion for Versatile Domain Adaptation", ECCV).

A non-adversarial method: besides the source cross-entropy, each step lowers the confusion
between classes in the target predictions of the batch,

.. math::
    \\min_{F, G} \\; E_{(x, y) \\sim S} L_{CE}(G(F(x)), y) + \\mu \\, L_{MCC}(G(F(X_t)))

with ``L_MCC`` the column-normalised, uncertainty-weighted class-correlation matrix's
off-diagonal mass (equations in :func:`~shiftkit.adapt.methods.alignment_losses.mcc_loss`).
It needs no discriminator (cheap) and adds to any adversarial method: ``CDAN(mcc_weight=...)``.
"""

from __future__ import annotations

import torch
from torch import nn

from shiftkit.adapt.methods.alignment_losses import mcc_loss
from shiftkit.adapt.methods.base import Method, Requires
from shiftkit.adapt.methods.losses import supervised_loss

__all__ = ["MCC"]


class MCC(Method):
    """Source cross-entropy plus ``mcc_weight`` x MCC on each unlabelled target batch.

    Args:
        model: backbone name or split-protocol module.
        mcc_weight: ``mu``; 1.0 is the paper's value for every benchmark (literature).
        temperature: ``T`` of the rescaled softmax; 2.5 is the paper's (literature).
        **kwargs: :class:`Method` arguments (training options, ``source_adapter``, ...).
    """

    requires = Requires(source="labelled", target="unlabelled")
    title = "MCC"
    recipe = "adapt"

    def __init__(self, model: str | nn.Module | tuple = "tiny", *, mcc_weight: float = 1.0,
                 temperature: float = 2.5, **kwargs):
        super().__init__(model, **kwargs)
        self.mcc_weight = mcc_weight
        self.temperature = temperature

    def check_params(self) -> list[str]:
        problems = []
        if not (isinstance(self.mcc_weight, (int, float)) and self.mcc_weight >= 0):
            problems.append(f"mcc_weight must be >= 0, got {self.mcc_weight!r}")
        if not (isinstance(self.temperature, (int, float)) and self.temperature > 0):
            problems.append(f"temperature must be > 0, got {self.temperature!r}")
        if self.task == "segmentation":
            problems.append("MCC is defined on class predictions of a classifier (task='classification')")
        return problems

    def training_step(self, source: dict, target: dict | None, p: float) -> tuple[torch.Tensor, dict]:
        ns = source["image"].shape[0]
        logits = self.model_(torch.cat([source["image"], target["image"]], 0))
        cls, acc = supervised_loss(logits[:ns], source, self.task_)
        mcc = mcc_loss(logits[ns:], temperature=self.temperature)
        return cls + self.mcc_weight * mcc, {"train_acc": acc, "cls_loss": cls.detach(), "mcc_loss": mcc.detach()}
