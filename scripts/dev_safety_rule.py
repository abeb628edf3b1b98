"""Every safety-rule setting on the development cells of an efficacy folder (JSON lines to stdout).

    python scripts/dev_safety_rule.py benchmarks/efficacy/dev > rule.jsonl

Per (benchmark, data seed) with every candidate finished: for each proposing validator,
committee, margin and fallback, what the rule deploys, its regret and its gain over source-only
(benchmarks/efficacy/dev/safety_rule.md aggregates them). Development data only: the folder's
seeds must be DEV_DATA_SEEDS.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import shiftkit.adapt.harness.efficacy  # noqa: F401  (loads the harness before its table module)
from shiftkit.adapt.harness.efficacy import candidates_for
from shiftkit.adapt.harness.table import _load, _stats, select_cells
from shiftkit.datasets.synth.seeds import DEV_DATA_SEEDS
from shiftkit.evaluation.selection import CandidateOutputs, safe_choice, select

COMMITTEES = {"entropy+mixval+ensv": ("entropy", "mixval", "ensv"), "mixval+ensv": ("mixval", "ensv"),
              "ensv": ("ensv",), "all_but_density": ("entropy", "snd", "ensv", "mixval")}


def main(root: Path) -> None:
    for b in ("radiograph", "dashcam"):
        for seed in sorted({int(p.stem[4:]) for p in (root / "cells" / b).glob("*/seed*.json")}):
            if seed not in DEV_DATA_SEEDS:
                raise SystemExit(f"{b} seed {seed} is not a development data seed")
            res = select_cells(root, b, seed, require_all=True)
            if res is None:
                continue
            truth, ens_t = res["true_target"], res["ensemble_target"]
            best = max(truth.values())
            cands = {n: CandidateOutputs.from_arrays(_stats(_load(root, b, n, seed)[1], "sel")) for n in candidates_for(b)}
            for prop in ("ensv", "mixval", "entropy"):
                sel = select(cands, prop)
                for cname, com in COMMITTEES.items():
                    for margin in (0.0, 0.1):
                        for fb in ("source_only", "ensemble"):
                            sc = safe_choice(sel, "source_only", fallback=fb, committee=com, margin=margin)
                            t = ens_t if sc.chosen == "ensemble" else truth[sc.chosen]
                            if t != t:  # no ensemble on segmentation: the baseline
                                t = truth["source_only"]
                            print(json.dumps({"b": b, "seed": seed, "prop": prop, "com": cname, "margin": margin,
                                              "fb": fb, "chosen": sc.chosen, "regret": best - t,
                                              "gain": t - truth["source_only"]}))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
