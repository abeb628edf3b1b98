"""The efficacy table: reads the finished cells of the harness (:mod:`shiftkit.adapt.harness.efficacy`)
and writes ``table.md``, ``table.json`` and ``efficacy.png``; the label-free choice per seed.

Nothing here changes a cell's result, so this module is outside the code hash that keys the
cells (:func:`shiftkit.adapt.harness.cells.code_hash`).
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from shiftkit.adapt.harness.benchmarks import BENCHMARKS, DEFAULT_METHODS
from shiftkit.adapt.harness.efficacy import _HEALTH, _atomic_json, cell_key_of
from shiftkit.adapt.harness.grid import ORACLE, Cell, candidates_for, labelled_target
from shiftkit.adapt.methods.registry import BASELINE
from shiftkit.datasets.files import atomic_path, atomic_write_text
from shiftkit.datasets.synth.seeds import TEST_DATA_SEEDS
from shiftkit.evaluation.statistics import bootstrap_ci, gap_closed, metric_from_stats, t_interval

log = logging.getLogger("shiftkit.efficacy")

__all__ = ["plot_table", "render_markdown", "select_cells", "summarise"]



def _load(root: Path, benchmark: str, method: str, seed: int) -> tuple[dict, dict] | None:
    """A finished cell's (result, arrays), or None when absent or stale (computed by other code
    or settings than the current ones: its ``cell_key`` differs)."""
    cell = Cell(method, benchmark, seed)
    js, npz = cell.paths(root)
    if js.is_file() and not npz.is_file():
        log.warning("%s: no %s beside it; the cell is left out of the table (re-run it)", js, npz.name)
    if not (js.is_file() and npz.is_file()):
        return None
    res = json.loads(js.read_text())
    key, _ = cell_key_of(cell, quick=bool(res.get("quick")), model_seed=int(res.get("model_seed", 0)))
    if res.get("cell_key") != key:
        log.warning("%s: stale (made by other code or settings); left out of the table (re-run it)", js)
        return None
    with np.load(npz) as z:
        arrays = {k: z[k] for k in z.files}
    return res, arrays


def _stats(arrays: dict[str, np.ndarray], role: str) -> dict[str, np.ndarray]:
    p = f"{role}_"
    return {k[len(p):]: v for k, v in arrays.items() if k.startswith(p)}


def _ensemble_cell(loaded: dict[str, tuple[dict, dict]]) -> tuple[dict, dict] | None:
    """The candidates' ensemble (averaged probabilities) as a cell. Binary AUROC cells store each
    test image's positive-class probability, which averages; accuracy and segmentation cells
    store the probabilities themselves (``ens_<role>_proba``), whose average's argmax is scored
    as the cells' own predictions are. None when the cells carry neither."""
    from shiftkit.evaluation.metrics import segmentation_counts

    arrays = [a for _, a in loaded.values()]
    if not arrays:
        return None
    out: dict[str, np.ndarray] = {}
    for role in ("target", "source"):
        first = arrays[0]
        if f"{role}_score" in first:
            out[f"{role}_label"] = first[f"{role}_label"]
            out[f"{role}_score"] = np.mean([a[f"{role}_score"] for a in arrays], axis=0).astype(np.float32)
        elif f"ens_{role}_proba" in first:
            mean = np.mean([a[f"ens_{role}_proba"].astype(np.float32) for a in arrays], axis=0)
            if f"ens_{role}_mask" in first:
                out[f"{role}_counts"] = segmentation_counts(first[f"ens_{role}_mask"], mean.argmax(1), mean.shape[1])
            else:
                out[f"{role}_label"] = first[f"{role}_label"]
                out[f"{role}_pred"] = mean.argmax(1).astype(np.int8)
        else:
            return None
    t = _stats(out, "target")
    res = {"target": metric_from_stats(t), "target_ci": list(bootstrap_ci(t)),
           "source": metric_from_stats(_stats(out, "source")), "proxy_a_distance": math.nan}
    return res, out


def select_cells(root: Path, benchmark: str, seed: int, *, validator: str | None = None,
                 require_all: bool = False) -> dict[str, Any] | None:
    """See :func:`_select` (this drops the ensemble's arrays: the result is JSON)."""
    got = _select(root, benchmark, seed, validator=validator, require_all=require_all)
    return None if got is None else got[0]


def _select(root: Path, benchmark: str, seed: int, *, validator: str | None = None,
            require_all: bool = False) -> tuple[dict[str, Any], tuple[dict, dict] | None, tuple[dict, dict]] | None:
    """Label-free choice among the finished candidate cells of one (benchmark, seed): what the
    deployment policy (:data:`shiftkit.evaluation.policies.DEPLOY_POLICY`) deploys, plus each
    validator's and each policy's regret (the embedded benchmarks have target labels; the choice
    never reads them).

    Policies compared (``policies``): every validator alone and every policy of
    :data:`shiftkit.evaluation.policies.POLICIES` (the safety rule, the ensemble of all
    candidates, ensembles of the top candidates by a validator, source-only). For each: what it
    deploys, its true target score, regret (best single candidate's true score minus it) and
    gain over source-only. Returns ``(summary, ensemble of all, deployed cell)``.

    ``require_all``: None unless every candidate of the pool is finished (the table uses this,
    so a seed's `selected` row never comes from part of the pool)."""
    from shiftkit.adapt.harness.candidates import BASELINE
    from shiftkit.evaluation.policies import DEPLOY_POLICY, POLICIES, deploy_policy, deployed_label
    from shiftkit.evaluation.selection import DEFAULT_VALIDATOR, CandidateOutputs, select

    pool = candidates_for(benchmark)
    cands, truth, loaded = {}, {}, {}
    for name in pool:
        got = _load(root, benchmark, name, seed)
        if got is None:
            continue
        res, arrays = got
        loaded[name] = got
        cands[name] = CandidateOutputs.from_arrays(_stats(arrays, "sel"))
        truth[name] = res["target"]
    if len(cands) < 2 or (require_all and len(cands) < len(pool)) or BASELINE not in cands:
        return None
    sel = select(cands, validator or DEFAULT_VALIDATOR)
    ens = _ensemble_cell(loaded)
    best = max(truth.values())
    cells: dict[tuple[str, ...], tuple[dict, dict] | None] = {}

    def cell_of(members: tuple[str, ...]) -> tuple[dict, dict] | None:
        if members not in cells:
            cells[members] = loaded[members[0]] if len(members) == 1 else _ensemble_cell(
                {m: loaded[m] for m in members})
        return cells[members]

    policies = {}
    for p in (*sel.choices, *POLICIES):
        members, why = deploy_policy(p, sel, cands, baseline=BASELINE)
        got = cell_of(members)
        t = got[0]["target"] if got is not None else math.nan
        policies[p] = {"choice": deployed_label(members, list(cands)), "members": list(members), "why": why,
                       "true": t, "regret": best - t, "gain_vs_source_only": t - truth[BASELINE]}
    members, why = deploy_policy(DEPLOY_POLICY, sel, cands, baseline=BASELINE)
    deployed = cell_of(members)
    if deployed is None:  # an ensemble the cells cannot score (they predate stored probabilities)
        members, why = (sel.chosen,), f"{sel.validator}'s choice (no ensemble can be scored from these cells)"
        deployed = cell_of(members)
    return {"seed": seed, "candidates": list(cands), "true_target": truth,
            "ensemble_target": ens[0]["target"] if ens is not None else math.nan, **sel.to_dict(),
            "policy": DEPLOY_POLICY, "chosen": deployed_label(members, list(cands)), "members": list(members),
            "why": why, "proposed": sel.chosen, "safety": {"fell_back": members != (sel.chosen,), "reason": why},
            "evaluation": sel.evaluate(truth), "policies": policies}, ens, deployed


@dataclass
class _Row:
    method: str
    seeds: list[int] = field(default_factory=list)
    target: list[float] = field(default_factory=list)
    target_ci: list[list[float]] = field(default_factory=list)
    source: list[float] = field(default_factory=list)
    pad: list[float] = field(default_factory=list)
    gap_closed: list[float] = field(default_factory=list)
    diff_ci: list[list[float]] = field(default_factory=list)  # paired vs source_only, per seed
    chosen: list[str] = field(default_factory=list)
    source_scores: list[dict[str, float]] = field(default_factory=list)


def summarise(root: Path, *, methods: Sequence[str] | None = None, benchmarks: Sequence[str] | None = None,
              seeds: Sequence[int] | None = None, command: str | None = None,
              validator: str | None = None) -> dict[str, Any]:
    """Read the finished cells under ``root``; write ``table.json``, ``table.md`` and
    ``efficacy.png`` there; return the table dict."""
    from shiftkit.evaluation.selection import DEFAULT_VALIDATOR

    root = Path(root)
    benchmarks = list(benchmarks or BENCHMARKS)
    methods = list(methods or DEFAULT_METHODS)
    table: dict[str, Any] = {"command": command, "validator": validator or DEFAULT_VALIDATOR,
                             "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "benchmarks": {}}
    for b in benchmarks:
        found = sorted({int(p.stem[4:]) for p in (root / "cells" / b).glob("*/seed*.json")}) if seeds is None else list(seeds)
        rows: dict[str, _Row] = {}
        selections = []
        names = [m for m in methods if m not in ("selected", "candidates")]
        for seed in found:
            base = _load(root, b, BASELINE, seed)
            orc = _load(root, b, ORACLE, seed)
            per: dict[str, tuple[dict, dict]] = {m: got for m in names if (got := _load(root, b, m, seed))}
            if "selected" in methods:
                got_sel = _select(root, b, seed, validator=validator, require_all=True)
                if got_sel is not None:
                    s, ens, deployed = got_sel
                    selections.append(s)
                    if ens is not None:
                        per["ensemble"] = ens
                    per["selected"] = deployed
            for m, (res, arrays) in per.items():
                row = rows.setdefault(m, _Row(m))
                row.seeds.append(seed)
                row.target.append(res["target"])
                row.target_ci.append(res["target_ci"])
                row.source.append(res["source"])
                row.pad.append(res.get("proxy_a_distance", math.nan))
                row.source_scores.append(res.get("source_scores") or {})
                if m == "selected":
                    row.chosen.append(selections[-1]["chosen"])
                if base is not None and orc is not None:
                    row.gap_closed.append(gap_closed(res["target"], base[0]["target"], orc[0]["target"]))
                else:
                    row.gap_closed.append(math.nan)
                if base is not None:
                    row.diff_ci.append(list(bootstrap_ci(_stats(arrays, "target"), n_boot=200, seed=seed,
                                                         other=_stats(base[1], "target"))))
        out_rows = {}
        for m, row in rows.items():
            mean, lo, hi = t_interval(row.target)
            g_mean, g_lo, g_hi = t_interval(row.gap_closed)
            out_rows[m] = {**asdict(row), "target_mean": mean, "target_mean_ci": [lo, hi],
                           "source_mean": float(np.nanmean(row.source)),
                           "source_scores_mean": {k: float(np.nanmean([d.get(k, math.nan) for d in row.source_scores]))
                                                  for k in _HEALTH},
                           "pad_mean": float(np.nanmean(row.pad)) if np.isfinite(row.pad).any() else math.nan,
                           "gap_closed_mean": g_mean, "gap_closed_ci": [g_lo, g_hi],
                           "seeds_below_source_only": int(sum(ci[1] < 0 for ci in row.diff_ci)),
                           "max_target_ci_halfwidth": float(max((c[1] - c[0]) / 2 for c in row.target_ci))}
        sel_summary = None
        if selections:
            vals = sorted({v for s in selections for v in s["evaluation"]})
            pols = list(selections[0]["policies"])
            sel_summary = {"per_seed": selections, "validators": {
                v: {"mean_regret": float(np.mean([s["evaluation"][v]["regret"] for s in selections])),
                    "max_regret": float(np.max([s["evaluation"][v]["regret"] for s in selections])),
                    "mean_spearman": float(np.nanmean([s["evaluation"][v]["spearman"] for s in selections]))}
                for v in vals}, "policies": {
                p: {"mean_regret": float(np.mean([s["policies"][p]["regret"] for s in selections])),
                    "max_regret": float(np.max([s["policies"][p]["regret"] for s in selections])),
                    "mean_gain_vs_source_only": float(np.mean([s["policies"][p]["gain_vs_source_only"]
                                                               for s in selections])),
                    "min_gain_vs_source_only": float(np.min([s["policies"][p]["gain_vs_source_only"]
                                                             for s in selections])),
                    "seeds_below_source_only": int(sum(s["policies"][p]["gain_vs_source_only"] < 0
                                                       for s in selections)),
                    "choices": [s["policies"][p]["choice"] for s in selections]}
                for p in pols}, "fallbacks": [f"seed {s['seed']}: {s['chosen']}: {s['why']}" for s in selections]}
        spec = BENCHMARKS[b]
        table["benchmarks"][b] = {"metric": spec.metric, "seeds": found, "rows": out_rows, "selection": sel_summary}
    _atomic_json(root / "table.json", table)
    atomic_write_text(root / "table.md", render_markdown(table))
    plot_table(table, root / "efficacy.png")
    return table


def _f(x: float, nd: int = 3) -> str:
    return "-" if x is None or not np.isfinite(x) else f"{x:.{nd}f}"


def render_markdown(table: dict[str, Any]) -> str:
    """The table as markdown: one section per benchmark, then the selection report."""
    lines = ["# Efficacy table", ""]
    if table.get("command"):
        lines += [f"Made by: `{table['command']}` ({table['time']})", ""]
    for b, t in table["benchmarks"].items():
        metric = {"auroc": "AUROC", "accuracy": "accuracy"}.get(t["metric"], "mIoU")
        kind = "test data seeds" if t["seeds"] and all(x in TEST_DATA_SEEDS for x in t["seeds"]) else "data seeds"
        lines += [f"## {b} (target {metric}, {kind} {t['seeds']})", "",
                  f"| method | target {metric} mean [95 % CI over seeds] | per seed (+/- 95 % CI) | source {metric} | "
                  "gap closed mean [95 % CI] | seeds below source-only (paired CI) | proxy A-distance "
                  "| source acc / bal. acc / AUROC / ECE |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- |"]
        for m, r in t["rows"].items():
            per = ", ".join(f"{v:.3f}+/-{(c[1] - c[0]) / 2:.3f}" for v, c in zip(r["target"], r["target_ci"], strict=True))
            name = m + (f" ({', '.join(r['chosen'])})" if r.get("chosen") else "")
            name += " *" if labelled_target(m) else ""
            lines.append(f"| {name} | {_f(r['target_mean'])} [{_f(r['target_mean_ci'][0])}, {_f(r['target_mean_ci'][1])}] "
                         f"| {per} | {_f(r['source_mean'])} | {_f(r['gap_closed_mean'], 2)} "
                         f"[{_f(r['gap_closed_ci'][0], 2)}, {_f(r['gap_closed_ci'][1], 2)}] "
                         f"| {r['seeds_below_source_only']} of {len(r['seeds'])} | {_f(r['pad_mean'], 2)} "
                         f"| {' / '.join(_f(r.get('source_scores_mean', {}).get(k, math.nan)) for k in _HEALTH)} |")
        if any(labelled_target(m) for m in t["rows"]):
            lines += ["", "\\* trains on labelled target images (the only rows that do): `oracle` on as many as the "
                      "source has, `finetune[frac=f]` on the first f of them (same step budget as the other rows), "
                      "`linear_probe` (new head on the frozen source encoder) on all of them. Every other row sees "
                      "target images only."]
        sel = t.get("selection")
        if sel:
            policy = sel["per_seed"][0].get("policy", "-") if sel.get("per_seed") else "-"
            lines += ["", f"Label-free selection (`selected` deploys what the policy `{policy}` chooses; "
                      f"{table['validator']} proposes): each validator's "
                      "mean / max regret and mean Spearman with the true target metric", "",
                      "| validator | mean regret | max regret | mean Spearman | choices per seed |",
                      "| --- | --- | --- | --- | --- |"]
            for v, s in sel["validators"].items():
                choices = ", ".join(p["evaluation"][v]["choice"] for p in sel["per_seed"])
                lines.append(f"| {v} | {_f(s['mean_regret'])} | {_f(s['max_regret'])} | {_f(s['mean_spearman'], 2)} | {choices} |")
            if sel.get("policies"):
                lines += ["", "Policies (regret = best single candidate's true score minus the policy's, negative "
                          "when an ensemble beats every candidate; gain = the policy's true score minus "
                          "source-only's; `mixval>ensv_safe`: the safety rule, MixVal proposing and EnsV "
                          "agreeing by a margin, else the ensemble of all; `X_top3` / `X_top_half`: the ensemble "
                          "of the candidates validator X ranks highest; `ensv_trimmed`: EnsV's top half of its "
                          "top half)", "",
                          "| policy | mean regret | max regret | mean gain vs source-only | min gain | "
                          "seeds below source-only | choices per seed |", "| --- | --- | --- | --- | --- | --- | --- |"]
                for p, s in sel["policies"].items():
                    lines.append(f"| {p} | {_f(s['mean_regret'])} | {_f(s['max_regret'])} | "
                                 f"{_f(s['mean_gain_vs_source_only'])} | {_f(s['min_gain_vs_source_only'])} | "
                                 f"{s['seeds_below_source_only']} of {len(s['choices'])} | {', '.join(s['choices'])} |")
            for reason in sel.get("fallbacks", []):
                lines.append(f"\nDeployed: {reason}")
        lines.append("")
    return "\n".join(lines)


def plot_table(table: dict[str, Any], path: Path) -> None:
    """Per benchmark: each method's per-seed target metric with its 95 % interval (dots), the
    mean over seeds with its interval (bar), and the source metric (cross)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    bs = list(table["benchmarks"])
    fig, axes = plt.subplots(1, max(1, len(bs)), figsize=(6 * max(1, len(bs)), 4), squeeze=False)
    for ax, b in zip(axes[0], bs, strict=False):
        t = table["benchmarks"][b]
        for i, (_m, r) in enumerate(t["rows"].items()):
            xs = i + np.linspace(-0.25, 0.25, len(r["target"])) if len(r["target"]) > 1 else [i]
            err = np.array([[v - c[0], c[1] - v] for v, c in zip(r["target"], r["target_ci"], strict=True)]).T
            ax.errorbar(xs, r["target"], yerr=err, fmt="o", ms=3, color="C0", alpha=0.6, lw=1)
            lo, hi = r["target_mean_ci"]
            if np.isfinite(lo):
                ax.errorbar([i], [r["target_mean"]], yerr=[[r["target_mean"] - lo], [hi - r["target_mean"]]],
                            fmt="s", color="C3", capsize=6, ms=6)
            ax.plot([i], [r["source_mean"]], "x", color="C2", ms=8)
        ax.set_xticks(range(len(t["rows"])), list(t["rows"]), rotation=30, ha="right")
        ax.set_title(f"{b}: target {t['metric']} (dots: seeds, square: mean, x: source)")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
