"""Augmentation throughput on one core beside the training step's throughput.

The data side must not be what training waits on: each preset's images/s on ONE core (one
DataLoader worker) is printed next to the training step's images/s for the demo's backbone
(`resnet10`, 1-channel radiographs / `resnet10` on RGB, CPU). With w workers the data side
delivers about w times the one-core figure.

    python benchmarks/bench_augment.py [--size 64] [--n 200] [--quick]

Prints a markdown table and writes benchmarks/results/augment.json atomically.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402


def _images(channels: int, n: int, size: int) -> list[np.ndarray]:
    """Benchmark images: the embedded radiograph generator for grey; smooth RGB scenes for colour
    (the dashcam generator is used when it is installed)."""
    if channels == 1:
        from shiftkit.datasets.synth import radiograph

        return [np.ascontiguousarray(radiograph.sample("city", i, size=size)["image"].transpose(1, 2, 0))
                for i in range(n)]
    try:
        from shiftkit.datasets.synth import dashcam

        return [np.ascontiguousarray(np.asarray(dashcam.sample(dashcam.DEFAULT_SOURCE, i, size=size)["image"],
                                                np.float32).transpose(1, 2, 0)) for i in range(n)]
    except ImportError:
        rng = np.random.default_rng(0)
        yy, xx = np.mgrid[0:size, 0:size] / size
        return [np.clip(np.stack([0.5 + 0.3 * np.sin(6 * xx + rng.uniform(0, 6)) * np.cos(4 * yy + c)
                                  for c in range(3)], -1), 0, 1).astype(np.float32) for _ in range(n)]


def _throughput(fn, items: list, repeat: int = 2) -> float:
    fn(items[0])  # warm up (imports, caches)
    best = 0.0
    for _ in range(repeat):
        t = time.perf_counter()
        for it in items:
            fn(it)
        best = max(best, len(items) / (time.perf_counter() - t))
    return best


def _train_step_throughput(channels: int, size: int, batch: int, threads: int, steps: int) -> float:
    from shiftkit.adapt.models.backbones import build_classifier

    torch.set_num_threads(threads)
    model = build_classifier("resnet10", channels, 2)
    opt = torch.optim.AdamW(model.parameters(), 1e-3)
    x, y = torch.rand(batch, channels, size, size), torch.randint(0, 2, (batch,))

    def step() -> None:
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    step()
    t = time.perf_counter()
    for _ in range(steps):
        step()
    return batch * steps / (time.perf_counter() - t)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--quick", action="store_true", help="fewer images and steps (smoke run)")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "augment.json")
    args = ap.parse_args(argv)
    n = 24 if args.quick else args.n
    steps = 2 if args.quick else 8
    cv2.setNumThreads(1)
    torch.set_num_threads(1)

    from shiftkit.adapt.augment import AugmentedDataset, get_preset, target_restyle

    rows = []
    for channels, preset in ((1, "radiograph_acquisition"), (3, "driving_conditions")):
        imgs = _images(channels, n, args.size)
        pool = _images(channels, 32, args.size)
        cases = {
            f"{preset} s=0.5 (p=0.3)": get_preset(preset, 0.5, image_size=args.size),
            f"{preset} s=1.0 (p=0.3)": get_preset(preset, 1.0, image_size=args.size),
            f"{preset} s=1.0 (p=1, every family)": get_preset(preset, 1.0, p=1.0, image_size=args.size),
            "restyle mixed (FDA/HM/PDA)": target_restyle(pool, method="mixed"),
        }
        for name, aug in cases.items():
            ips = _throughput(lambda im, a=aug: a(im), imgs)
            rows.append({"channels": channels, "case": name, "img_per_s_one_core": ips})
        # through the Dataset wrapper on shiftkit items (tensor <-> numpy conversion included)
        items = [{"image": torch.from_numpy(im.transpose(2, 0, 1).copy()), "label": torch.tensor(0)} for im in imgs]
        ds = AugmentedDataset(items, get_preset(preset, 0.5, image_size=args.size))
        ips = _throughput(ds.__getitem__, list(range(len(items))))
        rows.append({"channels": channels, "case": f"AugmentedDataset[{preset} s=0.5] item", "img_per_s_one_core": ips})
        for threads in (1, 2):
            tps = _train_step_throughput(channels, args.size, 32, threads, steps)
            rows.append({"channels": channels, "case": f"training step resnet10, batch 32, {threads} thread(s)",
                         "img_per_s_one_core" if threads == 1 else "img_per_s_two_cores": tps})
    print(f"| channels | case | img/s (1 core) | img/s (2 cores) |  size {args.size} px")
    print("| --- | --- | ---: | ---: |")
    for r in rows:
        one = r.get("img_per_s_one_core")
        two = r.get("img_per_s_two_cores")
        print(f"| {r['channels']} | {r['case']} | {'' if one is None else f'{one:,.0f}'} | "
              f"{'' if two is None else f'{two:,.0f}'} |")
    # Rows in the shared schema (benchmarks/_common.py): each augmentation case on one core
    # against the training step it feeds, on one thread, same channels and size.
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _common import make_row, write_result

    step = {r["channels"]: r["img_per_s_one_core"] for r in rows if "img_per_s_one_core" in r
            and r["case"].startswith("training step")}
    step2 = {r["channels"]: r["img_per_s_two_cores"] for r in rows if "img_per_s_two_cores" in r}
    schema_rows = []
    for r in rows:
        if r["case"].startswith("training step"):
            continue
        c = r["channels"]
        schema_rows.append(make_row(
            f"data pipeline vs training: {r['case']} ({c} ch, {args.size} px), 1 core each",
            shiftkit=r["img_per_s_one_core"], baseline=step.get(c), baseline_name="training step resnet10, batch 32",
            unit="img/s", min_ratio=1.0, goal="augment img/s >= training img/s (one worker keeps up)",
            notes=(f"training step on 2 threads: {step2[c]:,.0f} img/s; " if c in step2 else "")
            + "w DataLoader workers deliver about w x the augment figure"))
    result = {
        "topic": "augment", "image_size": args.size, "n_images": n, "quick": args.quick,
        "machine": {"python": sys.version.split()[0], "platform": platform.platform(), "cpus": os.cpu_count(),
                    "torch": torch.__version__},
        "rows": rows,
    }
    write_result(args.out.stem, schema_rows, extra=result, out_dir=args.out.parent)
    return result


if __name__ == "__main__":
    main()
