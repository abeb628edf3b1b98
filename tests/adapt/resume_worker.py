"""Worker for test_kill_resume.py: a DANN run with a checkpoint dir that can be SIGKILLed.

Usage: python resume_worker.py CKPT_DIR OUT.json PROGRESS_FILE
Each finished epoch appends its number to PROGRESS_FILE (so the test knows when to kill);
at the end the history and the trained parameters go to OUT.json.
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np
import torch


class SlowArrays(torch.utils.data.Dataset):
    """Arrays served slowly enough that a kill lands in the middle of an epoch."""

    def __init__(self, x: np.ndarray, y: np.ndarray | None):
        self.x, self.y = torch.from_numpy(x), None if y is None else torch.from_numpy(y)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict:
        time.sleep(0.002)
        return {"image": self.x[i], "label": torch.tensor(-1 if self.y is None else int(self.y[i]))}


def main(ckpt: str, out: str, progress: str) -> None:
    from shiftkit.adapt.methods.dann import DANN
    from shiftkit.adapt.models.backbones import build_mlp

    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    xs = rng.standard_normal((128, 8)).astype("f4")
    ys = (xs[:, :2].sum(1) > 0).astype(np.int64)
    xt = (rng.standard_normal((128, 8)) * 1.5 + 0.7).astype("f4")
    xv = rng.standard_normal((64, 8)).astype("f4")
    yv = (xv[:, :2].sum(1) > 0).astype(np.int64)

    def mark(epoch: int, model: torch.nn.Module) -> dict:
        with open(progress, "a") as fh:
            fh.write(f"{epoch}\n")
        return {}

    torch.manual_seed(0)
    m = DANN(build_mlp(8, [16, 16], 2), disc_hidden=(16,), epochs=6, batch_size=16, lr=1e-2, seed=5,
             checkpoint_dir=ckpt, early_stopping="val_loss", patience=10, progress=False)
    m.fit(SlowArrays(xs, ys), SlowArrays(xt, None), val=SlowArrays(xv, yv), callback=mark)
    hist = [{k: v for k, v in h.items() if k != "warnings"} for h in m.history_]
    params = {k: v.flatten().tolist() for k, v in m.model_.state_dict().items()}
    with open(out, "w") as fh:
        json.dump({"history": hist, "params": params, "resumed_from": m.result_.resumed_from_epoch}, fh)


if __name__ == "__main__":
    main(*sys.argv[1:4])
