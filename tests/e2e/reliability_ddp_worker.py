"""Worker for test_reliability_ddp.py: under torchrun, rank 1 dies mid-training.

Usage: torchrun --nproc_per_node 2 reliability_ddp_worker.py DIE_AFTER_ITEMS
Rank 1 calls os._exit(1) (no cleanup, like an OOM kill) after reading DIE_AFTER_ITEMS samples;
rank 0 would otherwise train for minutes, blocked in the next all-reduce.
"""

from __future__ import annotations

import os
import sys

import numpy as np
import torch
from torch.utils.data import Dataset


class DyingData(Dataset):
    def __init__(self, x: np.ndarray, y: np.ndarray, die_after: int):
        self.x, self.y, self.die_after, self.seen = torch.from_numpy(x), torch.from_numpy(y), die_after, 0

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict:
        self.seen += 1
        if os.environ.get("RANK") == "1" and self.seen > self.die_after:
            print("rank 1: dying now", flush=True)
            os._exit(1)
        return {"image": self.x[i], "label": self.y[i], "index": i}


def main(die_after: int) -> None:
    from shiftkit.adapt.methods import SourceOnly
    from shiftkit.adapt.models.backbones import build_mlp

    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((256, 6)).astype("f4")
    y = (x[:, 0] > 0).astype("i8")
    torch.manual_seed(0)
    m = SourceOnly(build_mlp(6, [16], 2), epochs=100_000, batch_size=16, lr=0.01, progress=False)
    m.fit(DyingData(x, y, die_after))
    print("training finished (should never happen)", flush=True)


if __name__ == "__main__":
    main(int(sys.argv[1]))
