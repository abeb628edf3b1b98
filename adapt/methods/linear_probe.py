"""Linear probe: a new linear head on a frozen encoder."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from shiftkit.adapt.methods.finetune import FineTune

__all__ = ["LinearProbe"]


class LinearProbe(FineTune):
    """Train only the head (optionally re-initialised) on labelled target images.

    The encoder is frozen and kept in eval mode (its BatchNorm statistics do not move), so
    the probe measures how linearly separable the target classes are in the encoder's
    feature space.

    Args:
        model: trained split-protocol module (copied, not changed).
        freeze: parameter-name prefixes kept fixed (default the whole encoder).
        reset_head: re-initialise the head's linear layers before training.
        **kwargs: :class:`FineTune` / :class:`Method` arguments.
    """

    title = "Linear probe (uses target labels)"
    labelled_fraction = 1.0  # all labelled target images: a head-only counterpart of the oracle

    def __init__(self, model: str | nn.Module | tuple = "tiny", *, freeze: Sequence[str] = ("encoder",),
                 reset_head: bool = False, **kwargs: Any):
        super().__init__(model, freeze=freeze, **kwargs)
        self.reset_head = reset_head

    def check_params(self) -> list[str]:
        problems = super().check_params()
        if self.task == "segmentation":
            # A segmenter is one network with no separate linear head: a "probe" there would be
            # another method.
            problems.append("LinearProbe needs a split (encoder, linear head) classifier (task='classification')")
        return problems

    def _apply_freeze(self) -> list[nn.Module]:
        frozen = super()._apply_freeze()
        if self.reset_head:
            torch.manual_seed(self.seed)
            for m in self.model_.head.modules():
                if isinstance(m, nn.Linear):
                    m.reset_parameters()
        # Dropout in the encoder would add noise to fixed features: evaluate it fully.
        return frozen + [m for m in self.model_.encoder.modules() if isinstance(m, nn.Dropout)]
