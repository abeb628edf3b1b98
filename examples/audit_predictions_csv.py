"""Bias audit of another team's predictions CSV: no model, no training code.

Someone hands you ``predictions.csv`` with one row per image: the true label, the model's
score and patient attributes, in scikit-learn's column names (``y_true``, ``y_prob``), plus
identifiers you must not copy anywhere. This script audits it by sex, age band and their
intersection, within each site, and prints the summary; with ``--out`` it also writes
``metrics.json`` and a self-contained ``report.html``. Only group-level numbers leave it.

    .venv/bin/python examples/audit_predictions_csv.py                       # a made-up CSV
    .venv/bin/python examples/audit_predictions_csv.py --csv preds.csv --sensitive sex,age_band --out audit

Without ``--csv`` it writes a synthetic one first (``runs/example_audit/predictions.csv``), in
which the model is worse for older women at site B: the audit should say so. The same job from
the shell: ``shiftkit audit predictions.csv --sensitive sex,age_band --control site``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from shiftkit.evaluation.jobs import audit_predictions


def other_teams_csv(path: Path, n: int = 2000, seed: int = 0) -> Path:
    """A predictions table as another team would export it (identifiers included)."""
    rng = np.random.default_rng(seed)
    df = pd.DataFrame({
        "patient_id": [f"P{i:07d}" for i in range(n)],
        "sex": rng.choice(["F", "M"], n),
        "age": rng.integers(18, 95, n),
        "site": rng.choice(["A", "B"], n),
    })
    df["y_true"] = (rng.random(n) < 0.35).astype(int)
    signal = np.where((df["sex"] == "F") & (df["age"] >= 60) & (df["site"] == "B"), 0.6, 2.0)
    logit = signal * (df["y_true"] - 0.5) * 2 + rng.normal(0, 1, n)
    df["y_prob"] = 1 / (1 + np.exp(-logit))
    path.parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(path, index=False)
    return path


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--csv", type=Path, default=None, help="predictions table (default: write a synthetic one)")
    ap.add_argument("--sensitive", default="sex,age_band")
    ap.add_argument("--control", default="site", help="comma-separated; '' for none")
    ap.add_argument("--n", type=int, default=2000, help="rows of the synthetic CSV")
    ap.add_argument("--n-boot", type=int, default=200)
    ap.add_argument("--out", type=Path, default=None, help="write metrics.json + report.html here")
    a = ap.parse_args(argv)

    csv = a.csv or other_teams_csv(Path("runs/example_audit/predictions.csv"), n=a.n)
    job = audit_predictions(csv, a.sensitive, control=[c for c in a.control.split(",") if c],
                            n_boot=a.n_boot, out=a.out)
    print(job.summary())
    print(f"\nreport: {job.report_path}" if job.out_dir else "\n(nothing written; --out DIR writes the report)")
    return job.metrics


if __name__ == "__main__":
    main()
