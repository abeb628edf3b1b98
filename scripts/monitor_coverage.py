"""How often the 95 % intervals of the label-free estimates contain the batch's true value, on
no-shift batches of the embedded benchmarks; and which way each estimate errs under shift.

Per benchmark and data seed, one small model is trained once and cached (``--cache``):

- radiograph: ``SourceOnly("tiny")`` on 400 city training images at 32 px (2 classes);
- dashcam: ``SourceOnly("tiny-unet")`` on 300 urban-day training images at 32 x 64 px (9 classes,
  pixel accuracy over 256 sampled pixels per image, as :mod:`shiftkit.adapt.deploy.monitoring` samples).

The model's outputs on a pool of in-domain test-split images (radiograph 3,000, dashcam 2,000) are
computed once through the saved model (:func:`shiftkit.adapt.deploy.monitoring.forward`). Each
replicate draws, without replacement, a labelled reference (400 / 200 images) and, from the rest,
no-shift batches of 32, 128 and 1,024 images; the estimators are fitted on the reference and
read only the batch's outputs. Coverage = share of (reference, batch) pairs whose interval
contains the batch's true accuracy (pixel accuracy on the sampled pixels; for the priors, the
batch's share of class 1). Under shift (whole shifted sites, batches of 128) the script records
the mean error and how often each estimate lies above the truth.

Design on development data seeds, report on test data seeds (never change the design after):

    nice -n 10 .venv/bin/python scripts/monitor_coverage.py --seeds dev      # runs/monitor_coverage_dev.json
    nice -n 10 .venv/bin/python scripts/monitor_coverage.py --seeds test     # benchmarks/results/monitor_coverage.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

SIZES = (32, 128, 1024)
LEVEL = 0.95
BENCH = {
    "radiograph": {"source": "city", "shifted": ("rural", "teaching", "icu"), "pool": 3000, "n_ref": 400,
                   "size": 32, "classes": 2, "n_train": 400, "refs": 100, "batches": 3},
    "dashcam": {"source": "urban_day", "shifted": ("urban_rain", "urban_fog", "urban_dusk", "urban_night", "rural_day"),
                "pool": 2000, "n_ref": 200, "size": (32, 64), "classes": 9, "n_train": 300,
                "refs": 8, "batches": 25},  # fewer reference draws: a pixel-row fit costs ~10x more
}
N_SHIFTED = 256  # images per shifted site


def _module(bench: str) -> Any:
    from shiftkit.datasets.synth import dashcam, radiograph

    return radiograph if bench == "radiograph" else dashcam


def _model(bench: str, seed: int, cache: Path) -> Any:
    """The cached saved model of (benchmark, data seed), trained on first use."""
    import torch

    from shiftkit.adapt import load
    from shiftkit.adapt.deploy.saving import save_model
    from shiftkit.adapt.methods.source_only import SourceOnly
    from shiftkit.adapt.training.data import CachedDataset

    cfg, mod = BENCH[bench], _module(bench)
    folder = cache / f"{bench}_{seed}" / "model"
    if not (folder / "model.safetensors").exists():
        torch.manual_seed(0)
        train = CachedDataset(mod.SynthDataset(cfg["source"], cfg["n_train"], split="train", seed=seed,
                                               size=cfg["size"]))
        if bench == "radiograph":
            m = SourceOnly("tiny", num_classes=2, epochs=3, batch_size=32, lr=3e-3, progress=False, seed=0).fit(train)
            save_model(m, folder, class_names=["no_finding", "finding"], image_size=(32, 32), in_channels=1)
        else:
            m = SourceOnly("tiny-unet", num_classes=9, task="segmentation", epochs=3, batch_size=16, lr=3e-3,
                           progress=False, seed=0).fit(train)
            save_model(m, folder, image_size=cfg["size"])
    return load(folder)


def _outputs(bench: str, seed: int, domain: str, n: int, cache: Path) -> dict[str, np.ndarray]:
    """Cached outputs on ``n`` test-split images of ``domain``: ``proba`` + ``labels`` per image
    (radiograph) or ``proba`` / ``labels`` / ``groups`` per sampled pixel (dashcam)."""
    from shiftkit.adapt.deploy.monitoring import _pixel_labels, forward

    path = cache / f"{bench}_{seed}" / f"{domain}_{n}.npz"
    if path.exists():
        return dict(np.load(path))
    pred = _model(bench, seed, cache)
    cfg, mod = BENCH[bench], _module(bench)
    items = [mod.sample(domain, i, seed=seed, size=cfg["size"], split="test") for i in range(n)]
    x = np.stack([s["image"] for s in items])
    if bench == "radiograph":
        out = forward(pred, x)
        arrays = {"proba": out["proba"].astype(np.float32), "labels": np.array([s["label"] for s in items])}
    else:
        out = forward(pred, x, pixels=True, seed=seed)
        lab = _pixel_labels(np.stack([s["mask"] for s in items]), out["pixel_index"], out["mask_shape"])
        arrays = {"proba": out["pixel_proba"].astype(np.float32), "labels": lab,
                  "groups": np.repeat(np.arange(n), out["pixel_index"].shape[1])}
    np.savez_compressed(path, **arrays)
    return arrays


def _rows(d: dict[str, np.ndarray], images: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Rows of the chosen images: ``(proba, labels, groups)``."""
    if "groups" not in d:
        return d["proba"][images].astype(np.float64), d["labels"][images], None
    per = int(np.sum(d["groups"] == 0))
    rows = (images[:, None] * per + np.arange(per)[None, :]).reshape(-1)
    return d["proba"][rows].astype(np.float64), d["labels"][rows], d["groups"][rows]


def run_seed(bench: str, seed: int, *, refs: int, batches: int, cache: Path) -> dict[str, Any]:
    from shiftkit.evaluation.performance_estimation import PerformanceEstimator
    from shiftkit.evaluation.prevalence import PriorShiftEstimator

    cfg = BENCH[bench]
    seg = bench == "dashcam"
    pool = _outputs(bench, seed, cfg["source"], cfg["pool"], cache)
    rng = np.random.default_rng(seed)
    hits: dict[str, dict[int, list[bool]]] = {}
    widths: dict[str, dict[int, list[float]]] = {}
    none_why: dict[str, str] = {}

    def record(name: str, n: int, iv: Any, truth: float, why: str = "") -> None:
        if iv is None:
            none_why[name] = why
            return
        hits.setdefault(name, {}).setdefault(n, []).append(bool(iv[0] <= truth <= iv[1]))
        widths.setdefault(name, {}).setdefault(n, []).append(float(iv[1] - iv[0]))

    first: tuple[Any, Any] | None = None
    for _ in range(refs):
        perm = rng.permutation(cfg["pool"])
        ref, rest = perm[:cfg["n_ref"]], perm[cfg["n_ref"]:]
        rp, ry, rg = _rows(pool, ref)
        pe = PerformanceEstimator(level=LEVEL, metric="pixel_accuracy" if seg else "accuracy").fit(rp, ry, groups=rg)
        prior = None if seg else PriorShiftEstimator(level=LEVEL).fit(rp, ry)
        first = first or (pe, prior)
        for n in SIZES:
            for _ in range(batches):
                bp, by, bg = _rows(pool, rng.choice(rest, n, replace=False))
                true_acc = float((bp.argmax(1) == by).mean())
                for name, e in pe.estimate(bp, groups=bg).items():
                    if e.metric != "auroc":
                        record(name, n, e.interval, true_acc, e.why)
                if prior is not None:
                    r = prior.estimate(bp)
                    share = float((by == 1).mean())
                    record("em", n, None if r.interval is None else r.interval[1], share, r.why)
                    record("bbse", n, None if r.bbse_interval is None else r.bbse_interval[1], share,
                           prior.bbse_problem_ or r.why)
    coverage = {m: {str(n): float(np.mean(v)) for n, v in d.items()} for m, d in hits.items()}
    width = {m: {str(n): float(np.mean(v)) for n, v in d.items()} for m, d in widths.items()}
    # direction of the error under shift: the first reference's estimators, batches of 128
    assert first is not None
    shifted: dict[str, Any] = {}
    for dom in cfg["shifted"]:
        d = _outputs(bench, seed, dom, N_SHIFTED, cache)
        errs: dict[str, list[float]] = {}
        for i in range(0, N_SHIFTED - 127, 128):
            bp, by, bg = _rows(d, np.arange(i, i + 128))
            truth = float((bp.argmax(1) == by).mean())
            for name, e in first[0].estimate(bp, groups=bg).items():
                if e.metric != "auroc":
                    errs.setdefault(name, []).append(e.value - truth)
        shifted[dom] = {m: {"mean_error": float(np.mean(v)), "share_above_truth": float(np.mean(np.array(v) > 0))}
                        for m, v in errs.items()}
    return {"coverage": coverage, "mean_width": width, "batches_per_size": refs * batches,
            "no_interval": none_why, "shifted": shifted,
            "reference_accuracy": float(first[0].accuracy_)}


def table(results: dict[str, dict[str, Any]]) -> str:
    """Markdown: estimator x batch size x benchmark, coverage pooled over seeds (per-seed range)."""
    lines = ["| benchmark | estimator | batch | coverage (mean over seeds) | per-seed min-max | mean width |",
             "| --- | --- | --- | --- | --- | --- |"]
    for bench, per_seed in results.items():
        names = sorted({m for r in per_seed.values() for m in r["coverage"]},
                       key=lambda m: ["atc", "doc", "cbpe", "em", "bbse"].index(m))
        for m in names:
            for n in SIZES:
                have = [r for r in per_seed.values() if str(n) in r["coverage"].get(m, {})]
                if not have:
                    continue
                cov = [r["coverage"][m][str(n)] for r in have]
                wid = [r["mean_width"][m][str(n)] for r in have]
                seeds = "" if len(have) == len(per_seed) else f" ({len(have)} of {len(per_seed)} seeds)"
                lines.append(f"| {bench} | {m} | {n} | {np.mean(cov):.3f}{seeds} | {min(cov):.3f}-{max(cov):.3f} | "
                             f"{np.mean(wid):.3f} |")
        for seed, r in per_seed.items():
            for m, why in sorted(r["no_interval"].items()):
                lines.append(f"| {bench} | {m} | seed {seed} | no interval in some draws: {why} | | |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from shiftkit.datasets.synth.seeds import DEV_DATA_SEEDS, TEST_DATA_SEEDS

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", choices=("dev", "test"), default="dev")
    ap.add_argument("--n-seeds", type=int, default=5)
    ap.add_argument("--benchmarks", default="radiograph,dashcam")
    ap.add_argument("--seed-slice", default=None, help="start:stop of the chosen seeds (to run them in parallel)")
    ap.add_argument("--refs", type=int, default=None, help="reference draws per seed (default per benchmark)")
    ap.add_argument("--batches", type=int, default=None,
                    help="batches per reference draw and batch size (default per benchmark)")
    ap.add_argument("--cache", type=Path, default=Path("runs/monitor_coverage_cache"))
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--merge", nargs="*", type=Path, default=[],
                    help="only merge these earlier outputs (e.g. one per benchmark) into --out")
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(1)
    seeds = (DEV_DATA_SEEDS if args.seeds == "dev" else TEST_DATA_SEEDS)[: args.n_seeds]
    if args.seed_slice:
        a, b = (int(v) if v else None for v in args.seed_slice.split(":"))
        seeds = seeds[a:b]
    out = args.out or (Path("runs/monitor_coverage_dev.json") if args.seeds == "dev"
                       else Path("benchmarks/results/monitor_coverage.json"))
    results: dict[str, dict[str, Any]] = {}
    t0 = time.perf_counter()
    commands = []
    merged_seeds: list[int] = []
    for path in args.merge:
        doc = json.loads(path.read_text())
        for bench, per_seed in doc["results"].items():
            results.setdefault(bench, {}).update(per_seed)
        commands.append(doc["command"])
        merged_seeds += doc["seeds"]
    if args.merge:
        seeds = tuple(sorted(set(merged_seeds)))
    for bench in ([] if args.merge else [b.strip() for b in args.benchmarks.split(",") if b.strip()]):
        results[bench] = {}
        for seed in seeds:
            args.cache.mkdir(parents=True, exist_ok=True)
            r = run_seed(bench, int(seed), refs=args.refs or BENCH[bench]["refs"],
                         batches=args.batches or BENCH[bench]["batches"], cache=args.cache)
            results[bench][str(seed)] = r
            print(bench, seed, json.dumps(r["coverage"]), f"{time.perf_counter() - t0:.0f} s", flush=True)
    md = table(results)
    print(md)
    from shiftkit.datasets.files import atomic_write_text

    cmd = "nice -n 10 .venv/bin/python scripts/monitor_coverage.py " + " ".join(argv or sys.argv[1:])
    doc = {"command": " && ".join([*commands, cmd]),
           "seeds": [int(s) for s in seeds], "level": LEVEL, "sizes": list(SIZES),
           "setup": {b: {k: v for k, v in c.items()} for b, c in BENCH.items()},
           "table": md.splitlines(), "results": results, "seconds": round(time.perf_counter() - t0, 1)}
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, json.dumps(doc, indent=1) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
