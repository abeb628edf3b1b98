"""How well do transferability scores rank the radiograph candidate zoo for the rural site?

For each target data seed: score every zoo candidate on a few labelled rural images
(split "train"), fine-tune every candidate on those same images (FineTune, several model
seeds) and measure AUROC on held-out rural images (split "test"); then the weighted Kendall
tau between each score and the measured AUROC across candidates. Label-free columns (entropy,
SND) are computed on the unlabelled target images and oriented higher-is-better for tau.

Development seeds choose the project's default score; test seeds only report:

    .venv/bin/python examples/transferability_study.py --seeds dev  --out runs/transfer_dev.json
    .venv/bin/python examples/transferability_study.py --seeds test --out runs/transfer_test.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np


class _Tagged:
    """Items of several datasets with a ``split`` key (what rank_candidates reads)."""

    def __init__(self, parts):
        self.items = [dict(ds[i], split=sp) for ds, sp in parts for i in range(len(ds))]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        return self.items[i]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", choices=("dev", "test"), required=True)
    ap.add_argument("--n-data-seeds", type=int, default=3)
    ap.add_argument("--zoo", default="runs/radiograph_zoo")
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--n-train", type=int, default=300, help="source images per site for the zoo")
    ap.add_argument("--n-labelled", type=int, default=40, help="labelled target images (scoring + fine-tuning)")
    ap.add_argument("--n-eval", type=int, default=300, help="held-out labelled target images (measuring)")
    ap.add_argument("--model-seeds", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=10, help="fine-tuning epochs")
    ap.add_argument("--target", default="rural")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    from shiftkit.adapt.harness.rank import LABEL_FREE, rank_candidates
    from shiftkit.adapt.harness.zoo import DEFAULT_ZOO, build_radiograph_zoo
    from shiftkit.adapt.training.data import CachedDataset
    from shiftkit.datasets.synth import radiograph
    from shiftkit.datasets.synth.seeds import DEV_DATA_SEEDS, TEST_DATA_SEEDS
    from shiftkit.evaluation.transferability import SCORE_NAMES

    t0 = time.perf_counter()
    paths = build_radiograph_zoo(args.zoo, DEFAULT_ZOO, size=args.size, n_train=args.n_train)
    print(f"zoo: {len(paths)} candidates in {args.zoo} ({time.perf_counter() - t0:.0f} s)", flush=True)
    seeds = (DEV_DATA_SEEDS if args.seeds == "dev" else TEST_DATA_SEEDS)[: args.n_data_seeds]
    per_seed = []
    for s in seeds:
        fit = CachedDataset(radiograph.SynthDataset(args.target, args.n_labelled, seed=s, split="train", size=args.size))
        ev = CachedDataset(radiograph.SynthDataset(args.target, args.n_eval, seed=s, split="test", size=args.size))
        res = rank_candidates(paths, _Tagged([(fit, "train"), (ev, "test")]), verify=len(paths),
                              verify_seeds=tuple(range(args.model_seeds)), verify_epochs=args.epochs)
        table = res.table
        per_seed.append({"data_seed": s, "agreement": res.agreement,
                         "table": json.loads(table.to_json(orient="records"))})
        print(f"data seed {s} ({time.perf_counter() - t0:.0f} s): "
              + ", ".join(f"{k} {v:+.2f}" for k, v in res.agreement.items()), flush=True)
        print(table[["candidate", *SCORE_NAMES, "measured_auroc"]].to_string(index=False), flush=True)
    names = [*SCORE_NAMES, *LABEL_FREE]
    summary = {}
    for k in names:
        vals = np.array([p["agreement"].get(k, np.nan) for p in per_seed], dtype=float)
        if np.isfinite(vals).any():
            summary[k] = {"mean": float(np.nanmean(vals)), "sd": float(np.nanstd(vals)),
                          "per_seed": [None if not np.isfinite(v) else float(v) for v in vals]}
    print("\nweighted Kendall tau with fine-tuned target AUROC (mean over data seeds):")
    for k, v in sorted(summary.items(), key=lambda kv: -kv[1]["mean"]):
        print(f"  {k:8s} {v['mean']:+.3f} +- {v['sd']:.3f}  per seed {v['per_seed']}")
    doc = {"command": "python examples/transferability_study.py " + " ".join(argv if argv is not None else sys.argv[1:]),
           "seeds": args.seeds, "data_seeds": list(seeds), "settings": vars(args), "summary": summary,
           "per_seed": per_seed, "wall_s": round(time.perf_counter() - t0, 1)}
    if args.out:
        from shiftkit.datasets import atomic_write_text

        atomic_write_text(Path(args.out), json.dumps(doc, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
