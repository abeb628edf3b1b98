"""Worker for test_distributed.py: trains a small DANN; run alone or under torchrun.

Usage: python ddp_worker.py OUT.safetensors   (rank 0 writes the trained parameters)
"""

from __future__ import annotations

import sys

import numpy as np
import torch


def run(out: str) -> None:
    from safetensors.torch import save_file

    from shiftkit.adapt.methods.dann import DANN
    from shiftkit.adapt.models.backbones import build_mlp
    from shiftkit.adapt.training import distributed as du
    from shiftkit.adapt.training.data import ArrayDataset

    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    xs = rng.standard_normal((64, 6)).astype("f4")
    ys = (xs[:, 0] > 0).astype(int)
    xt = (rng.standard_normal((64, 6)) + 0.5).astype("f4")
    torch.manual_seed(0)
    net = build_mlp(6, [16], 2)
    m = DANN(net, disc_hidden=(8,), epochs=2, batch_size=16, lr=0.05, optimizer="sgd", progress=False, seed=1)
    m.fit(ArrayDataset(xs, ys), ArrayDataset(xt))
    state = {f"model.{k}": v.contiguous() for k, v in m.model_.state_dict().items()}
    state.update({f"disc.{k}": v.contiguous() for k, v in m.discriminator.state_dict().items()})
    if du.rank() == 0:
        save_file(state, out)
    du.cleanup()


if __name__ == "__main__":
    run(sys.argv[1])
