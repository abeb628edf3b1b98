"""Weighted sampling that also works under DistributedDataParallel.

``torch.utils.data.WeightedRandomSampler`` has no notion of ranks: under DDP every process
would draw its own independent sample (or, with one seed, the same one). Here every rank
draws the SAME global sample of ``num_samples * num_replicas`` indices from one generator
seeded with (seed, epoch) and keeps its own stride of it, so the ranks together see exactly
one weighted draw, with no overlap in positions, and the draw changes with ``set_epoch``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import Sampler

from shiftkit.adapt.reweight.base import ArrayLike
from shiftkit.datasets.errors import DataError


class DistributedWeightedSampler(Sampler[int]):
    """Draw dataset indices with probability proportional to ``weights``, split across ranks.

    Args:
        weights: (n,) non-negative sample weights (e.g. ``KLIEP().fit(...).weights_``).
        num_samples: indices per rank and epoch; default ceil(n / num_replicas).
        replacement: with replacement (the usual importance-resampling); without it,
            ``num_samples * num_replicas`` must not exceed the number of positive weights.
        num_replicas, rank: default from ``torch.distributed`` when initialised, else 1 and 0.
        seed: base seed; call ``set_epoch(epoch)`` each epoch for a fresh draw.
    """

    def __init__(
        self,
        weights: ArrayLike,
        num_samples: int | None = None,
        *,
        replacement: bool = True,
        num_replicas: int | None = None,
        rank: int | None = None,
        seed: int = 0,
    ) -> None:
        if isinstance(weights, torch.Tensor):
            weights = weights.detach().cpu().numpy()
        w = np.asarray(weights, dtype=np.float64).ravel()
        if w.size == 0 or not np.all(np.isfinite(w)) or np.any(w < 0) or w.sum() <= 0:
            raise DataError("weights: need a non-empty, finite, non-negative vector with a positive sum")
        if num_replicas is None or rank is None:
            dist = torch.distributed.is_available() and torch.distributed.is_initialized()
            num_replicas = num_replicas if num_replicas is not None else (torch.distributed.get_world_size() if dist else 1)
            rank = rank if rank is not None else (torch.distributed.get_rank() if dist else 0)
        if not 0 <= rank < num_replicas:
            raise DataError(f"rank: must be in [0, {num_replicas}), got {rank}")
        self.weights = torch.from_numpy(w)
        self.num_replicas, self.rank = int(num_replicas), int(rank)
        self.num_samples = int(num_samples) if num_samples is not None else math.ceil(w.size / self.num_replicas)
        if self.num_samples < 1:
            raise DataError(f"num_samples: must be >= 1, got {num_samples}")
        self.replacement = replacement
        if not replacement and self.num_samples * self.num_replicas > int((w > 0).sum()):
            raise DataError(
                f"num_samples: {self.num_samples} x {self.num_replicas} ranks without replacement exceeds the "
                f"{int((w > 0).sum())} positive weights"
            )
        self.seed = int(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Make the next iteration draw a fresh sample (same on every rank)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.num_samples

    def __iter__(self) -> Iterator[int]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        total = self.num_samples * self.num_replicas
        draw = torch.multinomial(self.weights, total, replacement=self.replacement, generator=g)
        return iter(draw[self.rank :: self.num_replicas].tolist())
