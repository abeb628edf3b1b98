"""Label-free deployment policies on the development cells of efficacy folders (a markdown table).

    python scripts/dev_policies.py benchmarks/efficacy/dev [more folders] > benchmarks/efficacy/dev/policies.md

Per (benchmark, data seed) with every candidate of the pool finished: what each policy deploys
(one candidate, or an ensemble of averaged probabilities over a subset of the candidates), its
true target score, its regret (best single candidate's true score minus the policy's; negative
when an ensemble beats every candidate) and its gain over source-only; the gap closed against
each oracle row present. Target labels are read only to score the policies, never by them.
Development data only: every seed must be one of DEV_DATA_SEEDS. Cells are read whatever code
made them (a policy only reads stored outputs), but a (benchmark, seed) is left out unless
every candidate carries the restyled source-validation score.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np

import shiftkit.adapt.harness.efficacy  # noqa: F401  (loads the harness before its table module)
from shiftkit.adapt.harness.efficacy import Cell, candidates_for
from shiftkit.adapt.harness.table import _ensemble_cell, _stats
from shiftkit.datasets.synth.seeds import DEV_DATA_SEEDS
from shiftkit.evaluation.policies import POLICIES, deploy_policy
from shiftkit.evaluation.selection import CandidateOutputs, select

EXTRA = ("ensv", "mixval", "entropy", "restyled_val", "source_val", "snd", "dev")


def _read(root: Path, b: str, method: str, seed: int) -> tuple[dict, dict] | None:
    js, npz = Cell(method, b, seed).paths(root)
    if not (js.is_file() and npz.is_file()):
        return None
    with np.load(npz) as z:
        return json.loads(js.read_text()), {k: z[k] for k in z.files}


def rows(roots: list[Path]):
    for root in roots:
        for b in ("radiograph", "dashcam", "digits"):
            if not (root / "cells" / b).is_dir():
                continue
            seeds = sorted({int(p.stem[4:]) for p in (root / "cells" / b).glob("*/seed*.json")})
            for seed in seeds:
                if seed not in DEV_DATA_SEEDS:
                    raise SystemExit(f"{root}: {b} seed {seed} is not a development data seed")
                pool = candidates_for(b)
                got = {m: _read(root, b, m, seed) for m in pool}
                if any(v is None or "sel_restyled_val_score" not in v[1] for v in got.values()):
                    continue  # unfinished, or made before the pseudo-target score existed
                truth = {m: v[0]["target"] for m, v in got.items()}
                cands = {m: CandidateOutputs.from_arrays(_stats(v[1], "sel")) for m, v in got.items()}
                oracles = {o: r[0]["target"] for o in ("oracle", "oracle[start=source]")
                           if (r := _read(root, b, o, seed)) is not None}

                def true_of(members: tuple[str, ...], truth: dict = truth, got: dict = got) -> float:
                    if len(members) == 1:
                        return truth[members[0]]
                    ens = _ensemble_cell({m: got[m] for m in members})
                    return math.nan if ens is None else ens[0]["target"]

                sel = select(cands, "mixval")
                best = max(truth.values())
                for policy in (*POLICIES, *EXTRA):
                    members, why = deploy_policy(policy, sel, cands, baseline="source_only")
                    t = true_of(members)
                    if math.isnan(t):
                        continue
                    yield {"root": str(root), "b": b, "seed": seed, "policy": policy, "members": members,
                           "true": t, "regret": best - t, "gain": t - truth["source_only"],
                           "gap": {o: (t - truth["source_only"]) / (v - truth["source_only"])
                                   for o, v in oracles.items()}, "why": why}


def main(roots: list[Path]) -> None:
    out = list(rows(roots))
    print(f"# Deployment policies on development data seeds\n\nMade by `python scripts/dev_policies.py "
          f"{' '.join(map(str, roots))}`. Regret: best single candidate's true target score minus the "
          "policy's (negative when an ensemble beats every candidate); gain: over source-only; gap closed: "
          "of the source-only -> oracle gap, per seed, then averaged. An `oracle` cell that records no `start` "
          "setting was trained from scratch (the default before `start=source`).\n")
    for b in ("radiograph", "dashcam", "digits"):
        sub = [r for r in out if r["b"] == b]
        if not sub:
            continue
        seeds = sorted({(r["root"], r["seed"]) for r in sub})
        print(f"## {b} ({len(seeds)} seeds: {', '.join(str(s) for _, s in seeds)})\n")
        print("| policy | mean true | mean regret | max regret | mean gain | min gain | below source-only "
              "| gap closed (oracle) | gap closed (oracle[start=source]) |")
        print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
        for p in dict.fromkeys(r["policy"] for r in sub):
            rs = [r for r in sub if r["policy"] == p]
            g = {o: [r["gap"][o] for r in rs if o in r["gap"]] for o in ("oracle", "oracle[start=source]")}
            gs = {o: f"{np.mean(v):.2f} (n={len(v)})" if v else "-" for o, v in g.items()}
            print(f"| {p} | {np.mean([r['true'] for r in rs]):.3f} | {np.mean([r['regret'] for r in rs]):.3f} "
                  f"| {max(r['regret'] for r in rs):.3f} | {np.mean([r['gain'] for r in rs]):+.3f} "
                  f"| {min(r['gain'] for r in rs):+.3f} | {sum(r['gain'] < 0 for r in rs)} of {len(rs)} "
                  f"| {gs['oracle']} | {gs['oracle[start=source]']} |")
        print()


if __name__ == "__main__":
    main([Path(p) for p in sys.argv[1:]])
