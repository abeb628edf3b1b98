"""Small dataset helpers: wrap arrays as the dict-yielding datasets the methods consume."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from shiftkit.datasets.errors import DataError

__all__ = ["ArrayDataset", "CachedDataset", "as_dataset"]


class ArrayDataset(Dataset):
    """Items ``{"image": float32 (C, H, W) or (F,), "label": int64 scalar, "index": int}``.

    Args:
        images: array/tensor ``(N, C, H, W)`` (or ``(N, F)`` for vectors) of floats.
        labels: optional ``(N,)`` integers; ``-1`` is stored when absent (unlabelled).
        masks: optional ``(N, H, W)`` integer masks, stored under ``"mask"``.
        domain: domain name stored under ``"domain"``.
    """

    def __init__(
        self,
        images: np.ndarray | torch.Tensor,
        labels: np.ndarray | torch.Tensor | Sequence[int] | None = None,
        masks: np.ndarray | torch.Tensor | None = None,
        domain: str = "",
    ):
        x = torch.as_tensor(np.asarray(images) if not isinstance(images, torch.Tensor) else images)
        if x.dim() < 2:
            raise DataError(f"images: expected (N, C, H, W) or (N, F), got shape {tuple(x.shape)}")
        self.images = x.float()
        n = self.images.shape[0]
        if labels is None:
            self.labels = torch.full((n,), -1, dtype=torch.int64)
        else:
            self.labels = torch.as_tensor(np.asarray(labels)).long().reshape(-1)
            if self.labels.shape[0] != n:
                raise DataError(f"labels: {self.labels.shape[0]} labels for {n} images")
        self.masks = None
        if masks is not None:
            self.masks = torch.as_tensor(np.asarray(masks)).long()
            if self.masks.shape[0] != n:
                raise DataError(f"masks: {self.masks.shape[0]} masks for {n} images")
        self.domain = domain

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def __getitem__(self, i: int) -> dict:
        item = {"image": self.images[i], "label": self.labels[i], "index": int(i), "domain": self.domain}
        if self.masks is not None:
            item["mask"] = self.masks[i]
        return item


def as_dataset(data: Dataset | np.ndarray | torch.Tensor, *, name: str = "data") -> Dataset:
    """Accept a dict-yielding Dataset, or an array/tensor of images ``(N, C, H, W)``."""
    if isinstance(data, (np.ndarray, torch.Tensor)):
        return ArrayDataset(data)
    if isinstance(data, Dataset) or (hasattr(data, "__getitem__") and hasattr(data, "__len__")):
        if len(data) == 0:
            raise DataError(f"{name}: the dataset is empty")
        first = data[0]
        if not isinstance(first, dict) or "image" not in first:
            raise DataError(
                f"{name}: items must be dicts with an 'image' tensor (C, H, W); got {type(first).__name__}"
            )
        return data
    raise DataError(f"{name}: expected a torch Dataset or an array of images, got {type(data).__name__}")


class CachedDataset(Dataset):
    """Materialise every item of ``base`` once (procedural generators are slow per item).

    Use for small datasets trained over many epochs; memory is ``len(base)`` items. Random
    transforms of ``base`` are frozen by caching, so cache before augmenting.
    """

    def __init__(self, base: Dataset, *, progress: bool = False):
        from shiftkit.datasets.progress import progress_bar

        self.items = [base[i] for i in progress_bar(range(len(base)), desc="cache", enabled=progress)]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        return self.items[i]
