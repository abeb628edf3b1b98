"""Data order of the training loop: seeded global batches, each DDP rank taking its slice.

Every epoch re-seeds its samplers from ``(seed, epoch, stream)`` (:func:`epoch_seed`), so an
epoch's batches depend only on the seed and the epoch number: what makes exact resume and
DDP-equals-single-process possible.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from shiftkit.datasets.errors import ConfigError

__all__ = ["GlobalBatchSampler", "epoch_seed", "seeded_loader"]


class GlobalBatchSampler(Sampler[list[int]]):
    """Yields this rank's slice of each global batch of a seeded permutation.

    One process with batch ``B`` and ``W`` processes with ``B / W`` each see exactly the
    same global batches, which is what makes DDP results match single-process ones.
    ``cycle=True`` draws a fresh permutation when the data run out (for the target stream).
    """

    def __init__(self, n: int, batch_size: int, seed: int, rank: int, world: int, *, drop_last: bool, cycle: bool = False,
                 n_batches: int | None = None):
        if batch_size % world:
            raise ConfigError("TrainConfig", [f"batch_size {batch_size} is not divisible by world size {world}"])
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.rank, self.world, self.local = rank, world, batch_size // world
        self.drop_last = drop_last and n >= batch_size
        self.cycle = cycle
        self.n_batches = n_batches

    def __len__(self) -> int:
        if self.n_batches is not None:
            return self.n_batches
        return self.n // self.batch_size if self.drop_last else math.ceil(self.n / self.batch_size)

    def __iter__(self) -> Iterator[list[int]]:
        g = torch.Generator().manual_seed(self.seed)
        produced = 0
        while True:
            perm = torch.randperm(self.n, generator=g).tolist()
            if self.n < self.batch_size:  # tiny data: repeat to fill one global batch
                reps = math.ceil(self.batch_size / self.n)
                perm = (perm * reps)[: self.batch_size]
            stop = len(perm) - (len(perm) % self.batch_size) if self.drop_last else len(perm)
            for start in range(0, stop, self.batch_size):
                batch = perm[start : start + self.batch_size]
                if self.world > 1:
                    if len(batch) < self.batch_size:  # ragged last batch: pad to split evenly
                        batch = (batch * self.batch_size)[: self.batch_size]
                    batch = batch[self.rank * self.local : (self.rank + 1) * self.local]
                yield batch
                produced += 1
                if self.n_batches is not None and produced >= self.n_batches:
                    return
            if not self.cycle and self.n_batches is None:
                return


def _seed_worker(_worker_id: int) -> None:
    # torch seeds each worker from the loader's generator; numpy/random used by transforms
    # (albumentations, MONAI) must follow it, or augmentation differs between runs.
    import random

    s = torch.initial_seed() % 2**32
    np.random.seed(s)
    random.seed(s)


def epoch_seed(seed: int, epoch: int, stream: int) -> int:
    return (int(seed) * 1_000_003 + int(epoch) * 7_919 + stream * 104_729) % (2**63 - 1)


def seeded_loader(ds: Dataset, sampler: Sampler, num_workers: int, seed: int, device: torch.device) -> DataLoader:
    return DataLoader(
        ds,
        batch_sampler=sampler,
        num_workers=num_workers,
        worker_init_fn=_seed_worker if num_workers else None,
        generator=torch.Generator().manual_seed(seed),
        pin_memory=device.type == "cuda",
        persistent_workers=False,
    )
