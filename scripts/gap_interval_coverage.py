"""How often a 95 % bootstrap interval of a between-group gap covers the true gap (simulation).

Each replication draws a fresh audit data set whose per-group metrics are known exactly:
``n`` rows per group, label ~ Bernoulli(1/2), score = sigmoid(x) with x ~ N(mu_g, 1) for
positives and N(delta_g, 1) for negatives, threshold 0.5. Then, per group,
AUROC = Phi((mu_g - delta_g) / sqrt(2)), FPR = Phi(delta_g), FNR = Phi(-mu_g). The audit's own
code computes each group's metrics under ``--n-boot`` whole-data resamples
(``bias._bootstrap_weights`` + ``bias._weighted_group_metrics``) and the gap interval
(``bias.difference_interval``). Coverage is the share of replications whose interval contains the
true difference of the two groups it names; "old" is the percentile interval of the resampled
max - min (what audits reported before), judged against the true max - min.

    .venv/bin/python scripts/gap_interval_coverage.py --reps 1000
    .venv/bin/python scripts/gap_interval_coverage.py --reps 500 --mu=1,1,1 --delta=-1,-1,-1
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from scipy.stats import norm

from shiftkit.evaluation.bias import _bootstrap_weights, _weighted_group_metrics, difference_interval

METRICS = ("auroc", "fpr", "fnr")


def simulate(reps: int, *, mu: tuple[float, ...] = (1.0, 1.5), delta: tuple[float, ...] = (-1.0, -1.0),
             n_per_group: int = 300, n_boot: int = 200, seed: int = 0) -> dict[str, dict[str, float]]:
    """Coverage per metric: ``{metric: {"true_gap", "coverage", "old_coverage", "contains_point"}}``."""
    rng = np.random.default_rng(seed)
    k = len(mu)
    true = {"auroc": norm.cdf((np.array(mu) - np.array(delta)) / np.sqrt(2)),
            "fpr": norm.cdf(np.array(delta)), "fnr": norm.cdf(-np.array(mu))}
    hit = dict.fromkeys(METRICS, 0)
    old = dict.fromkeys(METRICS, 0)
    contains = dict.fromkeys(METRICS, 0)
    g = np.repeat(np.arange(k), n_per_group)
    ones = np.ones((1, n_per_group))
    for _ in range(reps):
        y = rng.integers(0, 2, size=len(g))
        x = np.where(y == 1, np.take(mu, g), np.take(delta, g)) + rng.standard_normal(len(g))
        s = 1.0 / (1.0 + np.exp(-x))
        w = next(_bootstrap_weights(len(g), n_boot, rng, chunk=n_boot))
        res = [(_weighted_group_metrics(y[g == j], s[g == j], ones, 0.5),
                _weighted_group_metrics(y[g == j], s[g == j], w[:, g == j], 0.5)) for j in range(k)]
        for m in METRICS:
            pt = np.array([res[j][0][m][0] for j in range(k)])
            bt = np.stack([res[j][1][m] for j in range(k)], axis=1)
            gi = difference_interval(pt, bt)
            i, j = gi["pair"]
            lo, hi = gi["difference_ci"]
            hit[m] += lo <= true[m][i] - true[m][j] <= hi
            contains[m] += lo <= pt[i] - pt[j] <= hi
            q = np.quantile(bt.max(1) - bt.min(1), [0.025, 0.975])
            old[m] += q[0] <= true[m].max() - true[m].min() <= q[1]
    return {m: {"true_gap": float(true[m].max() - true[m].min()), "coverage": hit[m] / reps,
                "old_coverage": old[m] / reps, "contains_point": contains[m] / reps} for m in METRICS}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reps", type=int, default=1000)
    ap.add_argument("--n-per-group", type=int, default=300)
    ap.add_argument("--n-boot", type=int, default=200)
    ap.add_argument("--mu", default="1.0,1.5", help="positives' mean logit per group")
    ap.add_argument("--delta", default="-1.0,-1.0", help="negatives' mean logit per group")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    mu = tuple(float(v) for v in a.mu.split(","))
    delta = tuple(float(v) for v in a.delta.split(","))
    t = time.perf_counter()
    res = simulate(a.reps, mu=mu, delta=delta, n_per_group=a.n_per_group, n_boot=a.n_boot, seed=a.seed)
    print(f"{len(mu)} groups x {a.n_per_group} rows, {a.n_boot} resamples, {a.reps} replications "
          f"({time.perf_counter() - t:.0f} s)")
    print("| metric | true gap | coverage (pair difference) | old: max - min percentile | interval holds the estimate |")
    print("| --- | --- | --- | --- | --- |")
    for m, r in res.items():
        print(f"| {m} | {r['true_gap']:.3f} | {r['coverage']:.3f} | {r['old_coverage']:.3f} | {r['contains_point']:.3f} |")


if __name__ == "__main__":
    main()
