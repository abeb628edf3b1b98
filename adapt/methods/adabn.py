"""AdaBN (Li et al. 2016): re-estimate BatchNorm statistics on the target domain.

The weights stay as trained on the source; only each BatchNorm layer's running mean and
variance are replaced by their values on target data, which removes first- and
second-order shifts of every normalised activation without any labels.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from shiftkit.adapt.methods.base import Requires, TargetView
from shiftkit.adapt.methods.source_only import SourceOnly
from shiftkit.adapt.training.data import as_dataset
from shiftkit.adapt.training.inference import batch_to, resolve_device
from shiftkit.datasets.errors import ConfigError

__all__ = ["AdaBN", "recompute_bn_stats"]


@torch.no_grad()
def recompute_bn_stats(model: nn.Module, data: Dataset, *, batch_size: int = 64, device: str | torch.device = "cpu") -> int:
    """Replace every BatchNorm layer's running statistics by their exact average over ``data``.

    Uses cumulative averaging (``momentum=None``) over all batches, then restores each
    layer's momentum. Returns the number of BatchNorm layers updated. Raises
    :class:`ConfigError` when the model has none.
    """
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not bns:
        raise ConfigError("AdaBN", [f"{type(model).__name__} has no BatchNorm layers; AdaBN cannot change it"])
    device = torch.device(device)
    was = model.training
    momenta = [m.momentum for m in bns]
    model.to(device).eval()
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average = exact mean over batches
        m.train()
    try:
        for batch in DataLoader(data, batch_size=batch_size, shuffle=False):
            model(batch_to(batch, device, False)["image"])
    finally:
        for m, mom in zip(bns, momenta, strict=True):
            m.momentum = mom
        model.train(was)
    return len(bns)


class AdaBN(SourceOnly):
    """Source training (unless ``train_source=False``), then target BatchNorm statistics.

    Args:
        model: backbone name or split-protocol module (already trained when
            ``train_source=False``; it is copied, not changed).
        train_source: run source-only training first.
        bn_batch_size: batch size of the statistics pass.
        **kwargs: :class:`Method` arguments.

    After ``fit``: ``n_bn_layers_``, the number of BatchNorm layers re-estimated.
    """

    # The unlabelled target is needed for the statistics pass, not by the training steps.
    requires = Requires(source="labelled", target="unlabelled", target_batches=False)
    title = "AdaBN"

    def __init__(self, model: str | nn.Module | tuple = "tiny", *, train_source: bool = True, bn_batch_size: int = 64,
                 **kwargs: Any):
        super().__init__(model, **kwargs)
        self.train_source = train_source
        self.bn_batch_size = bn_batch_size

    @classmethod
    def from_config(cls, context: Any) -> AdaBN:
        """As every method; when the context hands over an already trained source model (the
        efficacy harness), only the target statistics are re-estimated (``train_source=False``)."""
        if context.starts_trained:
            return context.make(cls, train_source=False)
        return context.make(cls)

    def check_params(self) -> list[str]:
        if not self.train_source and isinstance(self.model, str):
            return ["train_source=False needs a trained model (a module), not a backbone name"]
        return []

    def _check_data(self, source: Any, target: Any, val: Any) -> tuple[Any, Any, Any]:
        if self.train_source:
            return super()._check_data(source, target, val)
        if target is None:  # nothing is trained: only the target is read
            raise ConfigError("AdaBN", ["fit() needs an unlabelled target dataset"])
        return None, TargetView(as_dataset(target, name="target")), None

    def _fit_model(self, source: Dataset | None, target: Dataset | None, val: Dataset | None, callback: Any) -> None:
        if self.train_source:
            super()._fit_model(source, target, val, callback)  # source-only steps
        else:
            self._set_result(None)
        self.n_bn_layers_ = recompute_bn_stats(self.model_, target, batch_size=self.bn_batch_size,
                                               device=resolve_device(self.device))
