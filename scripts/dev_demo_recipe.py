"""The demo's source-only model on development data seeds, at a given number of images per site.

    python scripts/dev_demo_recipe.py SEED N_PER_DOMAIN [OUT_JSONL] [KEY=VALUE ...]

Runs the full demo recipe (``shiftkit.adapt.cli.run.demo_config``) with only ``source_only``,
data seed ``SEED`` (use development seeds only) and ``N_PER_DOMAIN`` images per site; prints
and appends one JSON line: source-test balanced accuracy, ECE, AUROC and accuracy, target
balanced accuracy and AUROC, the wall seconds, the ``train:`` settings given as ``KEY=VALUE``
(e.g. ``lr=3e-4``; read and checked by the run config, as in a YAML file)
and the OpenMP thread count.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

from shiftkit.adapt.cli.run import demo_config
from shiftkit.adapt.job.pipeline import run
from shiftkit.datasets.synth.seeds import DEV_DATA_SEEDS


def main() -> None:
    seed, n = int(sys.argv[1]), int(sys.argv[2])
    out_path = sys.argv[3] if len(sys.argv) > 3 and "=" not in sys.argv[3] else None
    train = dict(a.split("=", 1) for a in sys.argv[3:] if "=" in a)
    if seed not in DEV_DATA_SEEDS:
        raise SystemExit(f"seed {seed} is not a development data seed {DEV_DATA_SEEDS}")
    with tempfile.TemporaryDirectory() as tmp:
        c = demo_config(out_dir=Path(tmp))
        c.name = f"s{seed}-n{n}"
        c.methods = ["source_only"]
        c.data.seed = seed
        c.data.n_per_domain = n
        c.progress = False
        for key, value in train.items():
            setattr(c.train, key, value)  # the config validates and converts, as for a YAML value
        t = time.time()
        r = run(c)
        m = json.loads((r.run_dir / "metrics.json").read_text())["methods"]["source_only"]
    out = {"seed": seed, "n": n, "s": round(time.time() - t), "train": train,
           "omp_threads": os.environ.get("OMP_NUM_THREADS", "default"),
           **{f"src_{k}": round(m["source"][k], 4) for k in ("balanced_accuracy", "ece", "auroc", "accuracy")},
           **{f"tgt_{k}": round(m["target"][k], 4) for k in ("balanced_accuracy", "auroc")}}
    print(json.dumps(out))
    if out_path:
        with open(out_path, "a") as fh:
            fh.write(json.dumps(out) + "\n")


if __name__ == "__main__":
    main()
