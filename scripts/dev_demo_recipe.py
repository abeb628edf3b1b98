"""The demo's source-only model on development data seeds, at a given number of images per site.

    python scripts/dev_demo_recipe.py SEED N_PER_DOMAIN [OUT_JSONL]

Runs the full demo recipe (``shiftkit.adapt.cli.run.demo_config``) with only ``source_only``,
data seed ``SEED`` (use development seeds only) and ``N_PER_DOMAIN`` images per site; prints
and appends one JSON line: source-test balanced accuracy, ECE, AUROC and accuracy, target
balanced accuracy and AUROC, and the wall seconds.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

from shiftkit.adapt.cli.run import demo_config
from shiftkit.adapt.job.pipeline import run
from shiftkit.datasets.synth.seeds import DEV_DATA_SEEDS


def main() -> None:
    seed, n = int(sys.argv[1]), int(sys.argv[2])
    if seed not in DEV_DATA_SEEDS:
        raise SystemExit(f"seed {seed} is not a development data seed {DEV_DATA_SEEDS}")
    with tempfile.TemporaryDirectory() as tmp:
        c = demo_config(out_dir=Path(tmp))
        c.name = f"s{seed}-n{n}"
        c.methods = ["source_only"]
        c.data.seed = seed
        c.data.n_per_domain = n
        c.progress = False
        t = time.time()
        r = run(c)
        m = json.loads((r.run_dir / "metrics.json").read_text())["methods"]["source_only"]
    out = {"seed": seed, "n": n, "s": round(time.time() - t),
           **{f"src_{k}": round(m["source"][k], 4) for k in ("balanced_accuracy", "ece", "auroc", "accuracy")},
           **{f"tgt_{k}": round(m["target"][k], 4) for k in ("balanced_accuracy", "auroc")}}
    print(json.dumps(out))
    if len(sys.argv) > 3:
        with open(sys.argv[3], "a") as fh:
            fh.write(json.dumps(out) + "\n")


if __name__ == "__main__":
    main()
