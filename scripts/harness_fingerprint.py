"""Fingerprint of the efficacy harness: a fixed quick grid (every kind of row, both benchmarks,
dev data seed 100), to show a refactor changes no result.

    python scripts/harness_fingerprint.py run OUT        # writes OUT/cells/... and OUT/summary.json
    python scripts/harness_fingerprint.py compare A B    # per-cell target/source, max difference

Run it on the commit before a change and on the change; ``compare`` lists every cell and the
largest difference over every stored array (target scores, counts, selection outputs).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

RADIOGRAPH = ["source_only", "dann", "dann[lambda_max=0.3]", "dann[lr_mult=1]", "augment",
              "augment[restyle_strength=0.5]", "adabn", "importance_weighted", "cdan", "cdan[mcc_weight=0.1]", "mcc",
              "deep_coral", "self_training", "tent", "shot", "finetune[frac=0.1]", "linear_probe", "oracle"]
DASHCAM = ["source_only", "dann", "augment[restyle_strength=0.5]", "adabn", "importance_weighted", "self_training",
           "tent", "finetune[frac=0.1]", "oracle"]


def run(out: Path) -> None:
    from shiftkit.adapt.harness import efficacy as E

    cells = E.grid(RADIOGRAPH, ["radiograph"], [100]) + E.grid(DASHCAM, ["dashcam"], [100])
    res = E.run_grid(cells, out, quick=True, mode="dev", progress=False)
    summary = {f"{c.benchmark}/{c.method}": {k: r[k] for k in ("target", "source", "target_ci", "proxy_a_distance")}
               for c, r in zip(cells, res, strict=True)}
    (out / "summary.json").write_text(json.dumps(summary, indent=1))


def compare(a: Path, b: Path) -> None:
    sa, sb = json.loads((a / "summary.json").read_text()), json.loads((b / "summary.json").read_text())
    worst = 0.0
    for k, va in sa.items():
        vb = sb.get(k)
        if vb is None:
            print(f"{k}: missing in {b}")
            continue
        d = max(abs(va[f] - vb[f]) for f in ("target", "source", "proxy_a_distance"))
        worst = max(worst, d)
        print(f"{k:42s} target {va['target']:.6f} -> {vb['target']:.6f}  source {va['source']:.6f} -> "
              f"{vb['source']:.6f}  max diff {d:.1e}")
    arrays = 0.0
    for npz in sorted(a.glob("cells/*/*/*.npz")):
        with np.load(npz) as za, np.load(b / npz.relative_to(a)) as zb:
            for key in za.files:
                x, y = za[key].astype(float), zb[key].astype(float)
                if x.size:
                    arrays = max(arrays, float(np.nanmax(np.abs(x - y))))
    print(f"{len(sa)} cells; largest scalar difference {worst:.1e}; largest stored-array difference {arrays:.1e}")


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "run":
        run(Path(sys.argv[2]))
    elif len(sys.argv) == 4 and sys.argv[1] == "compare":
        compare(Path(sys.argv[2]), Path(sys.argv[3]))
    else:
        raise SystemExit(__doc__)
