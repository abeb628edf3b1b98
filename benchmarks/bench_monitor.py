"""Benchmark: what monitoring a deployed model costs per batch, and how close the label-free
accuracy estimates come on the embedded shifts, side by side with NannyML's CBPE.

Rows:

1. Monitor cost per 64-image batch beyond the model's forward pass: drift tests (MMD with 500
   permutations + BBSD KS, CUSUM), ATC / DoC / CBPE with bootstrap intervals and the EM prior
   estimate, against the forward pass of the same batch through the model (tiny backbone,
   64 px radiographs, CPU). Goal: the monitor adds at most the forward pass itself (ratio <= 1).
2. Accuracy-estimate MAE over the radiograph sites (a source-only model trained on city,
   64 px, the quick demo's budget; reference = labelled city validation; 512 test images per
   site) for CBPE / ATC / DoC, and NannyML's CBPE on the same arrays when it is installed.
3. Pixel-accuracy estimate MAE over dashcam conditions (tiny U-Net trained on urban day,
   32 x 64 px; pixel rows subsampled 256 per image), shiftkit only.
4. ``Predictor.estimate_performance`` on a batch of 32 for a 10-class model (tiny backbone,
   64 px): its cost beyond the forward pass it runs (drift test for the trust verdict,
   ATC / DoC / CBPE with intervals, EM + BBSE prior with the batch bootstrap) against that
   forward pass, timed alternately in one run. Goal: ratio <= 1. ``--cost-only`` runs just this
   row and writes ``results/monitor_estimate_cost.json``.

The coverage of the intervals is measured by ``scripts/monitor_coverage.py`` (results in
``results/monitor_coverage.json``).

Data: development data seeds only (no claims are tuned here; the figures are reported).

    .venv/bin/python benchmarks/bench_monitor.py [--quick]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import describe_machine, make_row, markdown_table, write_result  # noqa: E402

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")


_NANNYML_SCRIPT = """
import json, sys, warnings
import numpy as np, pandas as pd, nannyml as nml
warnings.filterwarnings("ignore")
d = np.load(sys.argv[1])
ref = pd.DataFrame({"p": d["ref_p"][:, 1], "pred": d["ref_p"].argmax(1), "y": d["ref_y"]})
out = {}
for k in d.files:
    if k.startswith("t_"):
        est = nml.CBPE(y_pred_proba="p", y_pred="pred", y_true="y", metrics=["accuracy"],
                       problem_type="classification_binary", chunk_number=1).fit(ref)
        df = est.estimate(pd.DataFrame({"p": d[k][:, 1], "pred": d[k].argmax(1)})).filter(period="analysis").to_df()
        out[k[2:]] = float(df[("accuracy", "value")].iloc[0])
print(json.dumps({"version": nml.__version__, "estimates": out}))
"""


def _nannyml_cbpe(ref_p, ref_y, targets: dict, python: str | None) -> tuple[dict | None, str]:
    """NannyML CBPE accuracy estimate per target, run by ``python`` (an interpreter that has
    nannyml; default: this one), or (None, why)."""
    import json
    import subprocess
    import tempfile

    import numpy as np

    exe = python or sys.executable
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "in.npz"
        np.savez(path, ref_p=ref_p, ref_y=ref_y, **{f"t_{k}": v for k, v in targets.items()})
        proc = subprocess.run([exe, "-c", _NANNYML_SCRIPT, str(path)], capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["?"])[-1][:200]
        return None, f"NannyML CBPE not measured ({exe}: {last})"
    doc = json.loads(proc.stdout.strip().splitlines()[-1])
    return doc["estimates"], f"NannyML {doc['version']} CBPE run by {Path(exe).name} beside the same arrays"


def estimate_cost_row(repeat: int, machine: dict) -> tuple[dict, dict]:
    """Row 4: ``estimate_performance`` at batch 32, 10-class model, against its forward pass."""
    import tempfile

    import numpy as np
    import torch

    from shiftkit.adapt import load
    from shiftkit.adapt.deploy.monitoring import forward
    from shiftkit.adapt.deploy.saving import save_model
    from shiftkit.adapt.models.backbones import build_classifier
    from shiftkit.datasets.synth import radiograph
    from shiftkit.datasets.synth.seeds import DEV_DATA_SEEDS

    seed = DEV_DATA_SEEDS[0]
    torch.manual_seed(0)
    tmp = Path(tempfile.mkdtemp(prefix="bench_monitor_cost_"))
    save_model(build_classifier("tiny", 1, 10), tmp, class_names=[f"c{i}" for i in range(10)], image_size=(64, 64),
               in_channels=1)
    pred = load(tmp)
    ref = np.stack([radiograph.sample("city", i, seed=seed, size=64, split="val")["image"] for i in range(500)])
    rng = np.random.default_rng(seed)
    # labels: the model's own prediction 70 % of the time, else random, so every class occurs
    own = forward(pred, ref)["proba"].argmax(1)
    labels = np.where(rng.random(len(ref)) < 0.7, own, rng.integers(0, 10, len(ref)))
    pred.set_reference(ref, labels)
    batch = np.stack([radiograph.sample("city", i, seed=seed, size=64, split="test")["image"] for i in range(32)])
    pred.estimate_performance(batch)  # warm-up
    forward(pred, batch)
    fw, est = [], []
    for _ in range(max(repeat, 9)):  # alternate, so both see the same load
        t = time.perf_counter()
        forward(pred, batch)
        fw.append(time.perf_counter() - t)
        t = time.perf_counter()
        pred.estimate_performance(batch)
        est.append(time.perf_counter() - t)
    f, e = statistics.median(fw) * 1e3, statistics.median(est) * 1e3
    print(f"estimate_performance at batch 32, 10 classes: {e:.1f} ms total, forward {f:.1f} ms, beyond the forward "
          f"{e - f:.1f} ms (ratio {(e - f) / f:.2f})", flush=True)
    row = make_row("estimate_performance beyond its forward pass, batch 32, 10-class tiny model, 64 px (CPU)",
                   shiftkit=e - f, unit="ms", baseline=f, baseline_name="forward pass of the batch", max_ratio=1.0,
                   notes=f"total {e:.1f} ms = {e / f:.2f} x the forward pass; drift test (MMD 500 perms + 10 KS) + "
                         f"ATC/DoC/CBPE + EM/BBSE with 64-resample batch bootstrap; median of {len(fw)} alternating "
                         f"repeats; load {machine.get('load_avg_1m', '?')}")
    return row, {"forward_ms": [v * 1e3 for v in fw], "estimate_performance_ms": [v * 1e3 for v in est]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer images and epochs (a smoke run)")
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--cost-only", action="store_true", help="only row 4 (estimate_performance cost at batch 32)")
    ap.add_argument("--nannyml-python", default=os.environ.get("SHIFTKIT_NANNYML_PYTHON"),
                    help="interpreter with nannyml installed (it pulls ~70 packages, so it is kept out of the "
                         "project venv; default: this interpreter)")
    args = ap.parse_args(argv)

    import numpy as np
    import torch

    from shiftkit.adapt.deploy.loading import load
    from shiftkit.adapt.deploy.saving import save_model
    from shiftkit.adapt.methods.source_only import SourceOnly
    from shiftkit.adapt.training.data import CachedDataset
    from shiftkit.datasets.synth import dashcam, radiograph
    from shiftkit.datasets.synth.seeds import DEV_DATA_SEEDS
    from shiftkit.evaluation.performance_estimation import PerformanceEstimator

    torch.set_num_threads(2)
    machine = describe_machine()
    if args.cost_only:
        row, info = estimate_cost_row(args.repeat, machine)
        print(markdown_table([row]))
        path = write_result("monitor_estimate_cost", [row], machine=machine, extra=info,
                            command=".venv/bin/python benchmarks/bench_monitor.py --cost-only")
        print(f"wrote {path}")
        return 0
    seed = DEV_DATA_SEEDS[0]
    n_train, epochs, n_test = (200, 2, 128) if args.quick else (400, 4, 256)
    rows, extra = [], {"seed": seed, "quick": args.quick}

    # ---------------------------------------------------------------- radiograph model
    t0 = time.perf_counter()
    train = CachedDataset(radiograph.SynthDataset("city", n_train, split="train", seed=seed, size=64))
    model = SourceOnly("tiny", num_classes=2, epochs=epochs, batch_size=32, lr=3e-3, progress=False, seed=0).fit(train)
    import tempfile

    tmp = Path(tempfile.mkdtemp(prefix="bench_monitor_"))
    save_model(model, tmp, class_names=["no_finding", "finding"], image_size=(64, 64), in_channels=1)
    pred = load(tmp)
    val = radiograph.SynthDataset("city", 400 if not args.quick else 160, split="val", seed=seed, size=64)
    val_items = [val.sample(i) for i in range(len(val))]
    vx = np.stack([s["image"] for s in val_items])
    vy = np.array([s["label"] for s in val_items])
    state = pred.set_reference(vx, vy)
    print(f"model + reference: {time.perf_counter() - t0:.1f} s", flush=True)

    # ---------------------------------------------------------------- row 1: cost per batch
    from shiftkit.adapt.deploy.monitoring import forward

    batch = np.stack([radiograph.sample("rural", i, seed=seed, size=64, split="test")["image"] for i in range(64)])
    forward(pred, batch)  # warm-up
    fw_times, mon_times = [], []
    for _ in range(args.repeat):
        t = time.perf_counter()
        out = forward(pred, batch)
        fw_times.append(time.perf_counter() - t)
        t = time.perf_counter()
        state.drift.update(out["features"], out["proba"])
        state.performance.estimate(out["proba"])
        state.prior.estimate(out["proba"])
        mon_times.append(time.perf_counter() - t)
    fw, mon = statistics.median(fw_times) * 1e3, statistics.median(mon_times) * 1e3
    print(f"per 64-image batch: forward {fw:.1f} ms, monitor {mon:.1f} ms", flush=True)
    extra.update(forward_ms=fw_times, monitor_ms=mon_times)
    rows.append(make_row("monitor cost per 64-image batch beyond the forward pass (tiny, 64 px, CPU)",
                         shiftkit=mon, unit="ms", baseline=fw, baseline_name="forward pass of the batch",
                         max_ratio=1.0, notes="MMD 500 perms + KS + CUSUM + ATC/DoC/CBPE (200 bootstraps) + EM prior "
                                              f"(100 bootstraps); median of {args.repeat} repeats; load "
                                              f"{machine.get('load_avg_1m', '?')}"))

    # ---------------------------------------------------------------- row 2: radiograph sites
    per_site, targets = {}, {}
    for site in radiograph.DOMAINS:
        items = [radiograph.sample(site, i, seed=seed, size=64, split="test") for i in range(n_test)]
        x = np.stack([s["image"] for s in items])
        y = np.array([s["label"] for s in items])
        p = forward(pred, x)["proba"]
        est = state.performance.estimate(p)
        acc = float((p.argmax(1) == y).mean())
        targets[site] = p
        per_site[site] = {"true": acc, **{m: est[m].value for m in ("cbpe", "atc", "doc")},
                          "drift_flag_rate": float(np.mean([state.drift.test(
                              forward(pred, x[i:i + 64])["features"], p[i:i + 64]).drift
                              for i in range(0, len(x) - 63, 64)]))}
        print(site, {k: round(v, 3) for k, v in per_site[site].items()}, flush=True)
    nml, nml_note = _nannyml_cbpe(state.proba, state.labels, targets, args.nannyml_python)
    if nml:
        for site, v in nml.items():
            per_site[site]["nannyml_cbpe"] = v
    extra["radiograph_sites"] = per_site
    mae = {m: float(np.mean([abs(r[m] - r["true"]) for r in per_site.values()])) for m in ("cbpe", "atc", "doc")}
    nml_mae = (float(np.mean([abs(r["nannyml_cbpe"] - r["true"]) for r in per_site.values()])) if nml else None)
    rows.append(make_row("accuracy-estimate MAE over radiograph sites (source-only city model, 64 px)",
                         shiftkit=mae["cbpe"], unit="abs. error", baseline=nml_mae, baseline_name="NannyML CBPE",
                         max_value=0.03,
                         notes=f"CBPE {mae['cbpe']:.3f}, ATC {mae['atc']:.3f}, DoC {mae['doc']:.3f}; per site in "
                               f"results/monitor.json; {nml_note}"))

    # ---------------------------------------------------------------- row 3: dashcam conditions
    size = (32, 64)
    dtrain = CachedDataset(dashcam.SynthDataset("urban_day", 150 if args.quick else 300, split="train", seed=seed,
                                                size=size))
    seg = SourceOnly("tiny-unet", num_classes=9, task="segmentation", epochs=2 if args.quick else 4, batch_size=16,
                     lr=3e-3, progress=False, seed=0).fit(dtrain)
    dv = [dashcam.sample("urban_day", i, seed=seed, size=size, split="val") for i in range(128)]
    pv = seg.predict_proba(np.stack([s["image"] for s in dv]))  # (N, K, H, W)
    rng = np.random.default_rng(0)

    def pixels(p, masks):
        flat = p.transpose(0, 2, 3, 1).reshape(-1, p.shape[1])
        idx = rng.choice(flat.shape[0], min(flat.shape[0], 256 * p.shape[0]), replace=False)
        return flat[idx] / flat[idx].sum(1, keepdims=True), masks.reshape(-1)[idx]

    rp, ry = pixels(pv, np.stack([s["mask"] for s in dv]))
    pe = PerformanceEstimator().fit(rp, ry)
    per_cond = {}
    for dom in ("urban_day", "urban_dusk", "urban_fog", "urban_rain", "urban_night", "rural_day"):
        items = [dashcam.sample(dom, i, seed=seed, size=size, split="test") for i in range(n_test // 2)]
        p = seg.predict_proba(np.stack([s["image"] for s in items]))
        tp, ty = pixels(p, np.stack([s["mask"] for s in items]))
        est = pe.estimate(tp)
        per_cond[dom] = {"true": float((tp.argmax(1) == ty).mean()), **{m: est[m].value for m in ("cbpe", "atc", "doc")}}
        print(dom, {k: round(v, 3) for k, v in per_cond[dom].items()}, flush=True)
    extra["dashcam_conditions"] = per_cond
    dmae = {m: float(np.mean([abs(r[m] - r["true"]) for r in per_cond.values()])) for m in ("cbpe", "atc", "doc")}
    rows.append(make_row("pixel-accuracy estimate MAE over dashcam conditions (tiny U-Net, urban day source)",
                         shiftkit=dmae["cbpe"], unit="abs. error", max_value=0.03,
                         notes=f"CBPE {dmae['cbpe']:.3f}, ATC {dmae['atc']:.3f}, DoC {dmae['doc']:.3f}; NannyML "
                               "not run on 9-class pixel rows"))
    row, info = estimate_cost_row(args.repeat, machine)
    rows.append(row)
    extra["estimate_cost"] = info
    print(markdown_table(rows))
    path = write_result("monitor", rows, machine=machine, extra=extra,
                        command=".venv/bin/python benchmarks/bench_monitor.py" + (" --quick" if args.quick else ""))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
