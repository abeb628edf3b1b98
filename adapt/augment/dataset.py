"""`AugmentedDataset`: apply an `Augmenter` to every item of a shiftkit dataset.

Each item's augmentation is drawn from (augmenter seed, dataset seed, epoch token, index), so it
does not depend on DataLoader worker count or fetch order. The epoch token is `set_epoch(e)`
when you call it; otherwise `torch.initial_seed()`, which shiftkit's trainer re-seeds every
epoch (and DataLoader workers derive from the loader's seeded generator): under `trainer.train`
each epoch sees fresh, reproducible augmentations without any extra wiring.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from shiftkit.adapt.augment.pipeline import Augmenter

__all__ = ["AugmentedDataset"]


class AugmentedDataset(Dataset):
    """Wrap `source_dataset` (dict items: `image` float32 (C, H, W) in [0, 1], optional `mask`
    int64 (H, W)) so every item passes through `transform`.

    Args:
        source_dataset: any map-style dataset yielding shiftkit dict items.
        transform: an `Augmenter` (seeded per item as described above) or any callable
            item -> item.
        seed: mixed into every item's seed, so two wrappers of one augmenter differ.
        p: probability an item is augmented at all (drawn from the same per-item seed).
    """

    def __init__(self, source_dataset: Dataset, transform: Augmenter | Callable[[Mapping[str, Any]], Any], *,
                 seed: int = 0, p: float = 1.0):
        if not (0.0 <= p <= 1.0):
            raise ValueError(f"p must be in [0, 1], got {p}")
        self.dataset = source_dataset
        self.transform = transform
        self.seed = int(seed)
        self.p = float(p)
        self.epoch: int | None = None

    def set_epoch(self, epoch: int) -> None:
        """Pin the epoch token (otherwise `torch.initial_seed()` is used)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getattr__(self, name: str) -> Any:
        # Pass attribute look-ups (labels, domain, frame, ...) through to the wrapped dataset.
        if name == "dataset":
            raise AttributeError(name)
        return getattr(self.dataset, name)

    def __getitem__(self, index: int) -> Any:
        item = self.dataset[index]
        token = self.epoch if self.epoch is not None else torch.initial_seed()
        key = [self.seed, token & 0xFFFFFFFF, token >> 32 & 0xFFFFFFFF, int(index)]
        if self.p < 1.0:
            if np.random.default_rng(key + [0x5EED]).random() >= self.p:
                return item
        if isinstance(self.transform, Augmenter):
            return self.transform.apply_item(item, seed=key)
        return self.transform(item)

    def __repr__(self) -> str:
        return f"AugmentedDataset({self.dataset!r}, {self.transform!r})"
