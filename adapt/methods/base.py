"""The interface every adaptation method shares.

``fit(source, target=None, *, val=None, callback=None) -> self``,
``predict_proba(data) -> (N, K)`` (segmentation: ``(N, K, H, W)``), ``predict(data)``,
``features(data) -> (N, D)``, and after fitting ``history_`` (per-epoch dicts), ``warnings_``
(str list) and ``model_`` (the trained ``nn.Module``).

A method wraps a model, never forks it: pass a backbone name (built with ``pretrained=False``)
or your own module following the split protocol of :mod:`shiftkit.adapt.backbones`; a
module you pass is trained in place.

Subclasses override :meth:`Method.training_step` (and :meth:`Method.extra_modules`,
:meth:`Method.lr_factor`, :meth:`Method.param_groups`, :meth:`Method.epoch_warnings` when
needed); :func:`shiftkit.adapt.trainer.train` does the rest.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from shiftkit.datasets.errors import ConfigError, DataError

from ..backbones import SegModel, as_split_model, build_classifier, build_segmenter
from ..data import as_dataset, check_compatible
from ..trainer import TrainConfig, TrainResult, predict_loader, resolve_device, train

__all__ = ["Method", "supervised_loss"]


def supervised_loss(logits: torch.Tensor, batch: dict, task: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Cross-entropy and accuracy of ``logits`` against the batch's labels.

    Classification: ``logits (N, K)`` vs ``batch["label"] (N,)``. Segmentation:
    ``logits (N, K, H, W)`` vs ``batch["mask"] (N, H, W)``; pixels < 0 are ignored.
    Returns ``(loss, accuracy)`` as 0-d tensors (accuracy detached).
    """
    if task == "segmentation":
        if "mask" not in batch:
            raise DataError("segmentation training needs a 'mask' (H, W) int64 in every source item")
        y = batch["mask"].long()
        loss = F.cross_entropy(logits.float(), y, ignore_index=-1)
        valid = y >= 0
        acc = (logits.detach().argmax(1)[valid] == y[valid]).float().mean()
        return loss, acc
    y = batch["label"].long()
    if (y < 0).any():
        raise DataError("a source batch holds unlabelled items (label -1); source data must be labelled")
    loss = F.cross_entropy(logits.float(), y)
    acc = (logits.detach().argmax(1) == y).float().mean()
    return loss, acc


class Method:
    """Base class: builds/wraps the model, runs :func:`train`, predicts.

    Args:
        model: a backbone name (``"tiny"``, ``"densenet121"``, ``"resnet18"``,
            ``"tiny-unet"``, ``"flexibleunet-resnet34"``, ...), a split-protocol module or an
            ``(encoder, head)`` pair.
        num_classes: ``K`` (used when ``model`` is a name).
        in_channels: ``C``; ``None`` = read from the first source image.
        task: ``"classification"`` or ``"segmentation"``; ``None`` = segmentation for
            :class:`SegModel` models and segmenter names.
        **train_kwargs: any :class:`TrainConfig` field (epochs, lr, batch_size, seed, ...).
    """

    uses_target: bool = False

    def __init__(
        self,
        model: str | nn.Module | tuple[nn.Module, nn.Module] = "tiny",
        *,
        num_classes: int = 2,
        in_channels: int | None = None,
        task: str | None = None,
        **train_kwargs: Any,
    ):
        unknown = set(train_kwargs) - set(TrainConfig.__dataclass_fields__)
        if unknown:
            raise ConfigError(
                type(self).__name__,
                [f"unknown argument {k!r}; training options are {sorted(TrainConfig.__dataclass_fields__)}"
                 for k in sorted(unknown)],
            )
        self.model_spec = model
        self.num_classes = num_classes
        self.in_channels = in_channels
        self._task = task
        self.config = TrainConfig(**train_kwargs)
        self.model_: nn.Module | None = None
        self.history_: list[dict] = []
        self.warnings_: list[str] = []
        self.result_: TrainResult | None = None
        self.fit_source_: Dataset | None = None
        self.fit_target_: Dataset | None = None
        self._extra: dict[str, nn.Module] = {}
        if isinstance(model, (nn.Module, tuple, list)):
            self.model_ = as_split_model(model)

    # ---------------------------------------------------------------- model building
    @property
    def task(self) -> str:
        if self._task is not None:
            return self._task
        if isinstance(self.model_, SegModel):
            return "segmentation"
        if isinstance(self.model_spec, str) and ("unet" in self.model_spec.lower() or "segresnet" in self.model_spec.lower()):
            return "segmentation"
        return "classification"

    def _build(self, source: Dataset) -> None:
        if self.model_ is not None:
            return
        spec = self.model_spec
        c = self.in_channels or int(source[0]["image"].shape[0])
        # Model init follows the run's seed so repeated fits are reproducible.
        torch.manual_seed(self.config.seed)
        if self.task == "segmentation":
            self.model_ = build_segmenter(spec, c, self.num_classes)
        else:
            self.model_ = build_classifier(spec, c, self.num_classes)

    def extra_modules(self) -> dict[str, nn.Module]:
        """Modules besides the model that train with it (e.g. a domain discriminator)."""
        return {}

    @property
    def modules(self) -> dict[str, nn.Module]:
        return {"model": self.model_, **self._extra}

    @property
    def model(self) -> nn.Module:
        return self.model_

    # ---------------------------------------------------------------- training hooks
    def param_groups(self, lr: float) -> list[dict]:
        params = [p for m in self.modules.values() for p in m.parameters() if p.requires_grad]
        return [{"params": params, "lr": lr}]

    def lr_factor(self, p: float) -> float:
        return 1.0

    def training_step(self, source: dict, target: dict | None, p: float) -> tuple[torch.Tensor, dict]:
        raise NotImplementedError

    def epoch_warnings(self, epoch_logs: dict[str, float]) -> list[str]:
        return []

    # ---------------------------------------------------------------- public API
    def fit(self, source: Dataset, target: Dataset | None = None, *, val: Dataset | None = None,
            callback: Any = None) -> Method:
        """Train on labelled ``source`` and (for adaptive methods) unlabelled ``target``.

        ``val`` is labelled source-domain validation data. ``callback(epoch, model)`` may
        return extra metrics for the history (see :func:`shiftkit.adapt.trainer.train`).
        Target labels are never read.
        """
        source = as_dataset(source, name="source")
        if target is not None:
            target = as_dataset(target, name="target")
        if val is not None:
            val = as_dataset(val, name="val")
        check_compatible(source, target, val)  # channels and size agree, before any model is built
        if self.uses_target and target is None:
            raise ConfigError(type(self).__name__, ["fit() needs an unlabelled target dataset"])
        self._build(source)
        # Kept (by reference) so save_model can summarise the data and store target statistics.
        self.fit_source_, self.fit_target_ = source, target
        self._extra = self.extra_modules()
        result = train(self, source, target, val, self.config, callback=callback)
        self.result_ = result
        self.history_ = result.history
        self.warnings_ = result.warnings
        return self

    def _check_fitted(self) -> None:
        if self.model_ is None:
            raise ConfigError(type(self).__name__, ["call fit() first (or pass a model)"])

    def _predict(self, data: Any, want: tuple[str, ...], batch_size: int | None) -> dict[str, np.ndarray]:
        self._check_fitted()
        ds = as_dataset(data)
        device = resolve_device(self.config.device)
        self.model_.to(device)
        loader = DataLoader(ds, batch_size=batch_size or self.config.eval_batch_size, shuffle=False)
        amp = self.config.amp if self.config.amp is not None else device.type == "cuda"
        return predict_loader(self.model_, loader, device, amp=amp, want=want)

    def predict_proba(self, data: Any, *, batch_size: int | None = None) -> np.ndarray:
        """Class probabilities: ``(N, K)`` float32, or ``(N, K, H, W)`` for segmentation.

        ``data``: a dict-yielding Dataset or images ``(N, C, H, W)`` (array or tensor).
        """
        return self._predict(data, ("proba",), batch_size)["proba"]

    def predict(self, data: Any, *, batch_size: int | None = None) -> np.ndarray:
        """Class indices ``(N,)`` (segmentation: ``(N, H, W)``), int64."""
        return self.predict_proba(data, batch_size=batch_size).argmax(1)

    def predict_proba_and_features(self, data: Any, *, batch_size: int | None = None
                                   ) -> tuple[np.ndarray, np.ndarray]:
        """Probabilities and encoder features from one pass: ``((N, K[, H, W]), (N, D))``."""
        out = self._predict(data, ("proba", "features"), batch_size)
        return out["proba"], out["features"]

    def features(self, data: Any, *, batch_size: int | None = None) -> np.ndarray:
        """Encoder features ``(N, D)`` float32 (segmenters: pooled bottleneck)."""
        return self._predict(data, ("features",), batch_size)["features"]
