"""Resident memory over a 50-epoch run stays flat (no per-epoch leak).

Trains DANN (tiny backbone, 32 px radiographs exported to PNG + manifest and read back through
`ManifestDataset`, checkpoint written every epoch, source validation every epoch) and reads
the process's resident set size after every epoch from ``/proc/self/statm`` (no psutil), via
the trainer's per-epoch callback, after ``gc.collect()`` and glibc ``malloc_trim(0)`` (the raw
reading before them is kept too). The first epochs warm up allocators and caches; the figure
of merit is the least-squares slope of RSS over the last 40 epochs, in MiB per epoch.

Usage::

    OMP_NUM_THREADS=1 .venv/bin/python scripts/memory_soak.py --json benchmarks/results/memory.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np


def rss_mib() -> float:
    """Resident set size of this process in MiB (Linux ``/proc/self/statm``, field 2 = pages)."""
    with open("/proc/self/statm") as fh:
        pages = int(fh.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def release_free_memory() -> None:
    """Collect garbage and hand freed heap pages back to the OS (glibc ``malloc_trim``).

    Without it RSS also tracks allocator high-water marks and fragmentation, which move in
    steps unrelated to leaks; after it RSS follows live memory, where a leak shows as a slope.
    """
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: raw RSS only
        pass


def soak(epochs: int = 50, *, n_per_domain: int = 60, size: int = 32, tail: int = 40,
         work: Path | None = None) -> dict[str, Any]:
    """Run the soak; returns RSS per epoch (MiB) and the slope over the last ``tail`` epochs."""
    import torch

    from shiftkit.adapt.methods import DANN
    from shiftkit.datasets import ManifestDataset, load_manifest
    from shiftkit.datasets.synth import radiograph

    torch.set_num_threads(1)
    work = Path(work or tempfile.mkdtemp(prefix="shiftkit-soak-"))
    manifest = radiograph.export(work / "data", ["city", "rural"], n_per_domain, seed=0, size=size)
    frame = load_manifest(manifest)
    source = ManifestDataset(frame, domains="city", split="train")
    val = ManifestDataset(frame, domains="city", split="val")
    target = ManifestDataset(frame.drop(columns=["label"]), domains="rural", split="train")
    rss: list[float] = []
    raw: list[float] = []

    def per_epoch(epoch: int, model: torch.nn.Module) -> None:
        raw.append(round(rss_mib(), 3))
        release_free_memory()
        rss.append(round(rss_mib(), 3))

    started = time.perf_counter()
    method = DANN("tiny", num_classes=2, epochs=epochs, batch_size=8, lr=1e-3, progress=False, device="cpu",
                  checkpoint_dir=str(work / "ckpt"), resume=False, disc_hidden=(64, 64))
    method.fit(source, target, val=val, callback=per_epoch)
    seconds = time.perf_counter() - started
    tail = min(tail, len(rss))
    x = np.arange(len(rss) - tail, len(rss))
    slope = float(np.polyfit(x, np.asarray(rss[-tail:]), 1)[0]) if tail >= 2 else float("nan")
    return {
        "epochs": epochs,
        "steps_per_epoch": len(source) // 8,
        "rss_mib": rss,
        "rss_raw_mib": raw,
        "raw_slope_mib_per_epoch": round(float(np.polyfit(x, np.asarray(raw[-tail:]), 1)[0]), 5) if tail >= 2 else None,
        "rss_first_mib": rss[0],
        "rss_last_mib": rss[-1],
        "rss_max_mib": max(rss),
        "tail_epochs": tail,
        "slope_mib_per_epoch": round(slope, 5),
        "growth_over_tail_mib": round(slope * (tail - 1), 3),
        "median_step_mib": round(float(np.median(np.diff(rss[-tail:]))), 5) if tail >= 2 else None,
        "largest_step_mib": round(float(np.max(np.diff(rss))), 3) if len(rss) > 1 else None,
        "largest_step_epoch": int(np.argmax(np.diff(rss))) + 2 if len(rss) > 1 else None,
        "first_warning_epoch": next((h["epoch"] for h in method.history_ if h.get("warnings")), None),
        "seconds": round(seconds, 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    out = soak(args.epochs)
    print("| epochs | RSS first / last / max (MiB) | slope, last 40 epochs (MiB/epoch) | growth over them (MiB) |")
    print("| --- | --- | --- | --- |")
    print(f"| {out['epochs']} | {out['rss_first_mib']:.1f} / {out['rss_last_mib']:.1f} / {out['rss_max_mib']:.1f} "
          f"| {out['slope_mib_per_epoch']:+.4f} | {out['growth_over_tail_mib']:+.2f} |")
    if args.json:
        from shiftkit.datasets.files import atomic_write_text

        atomic_write_text(args.json, json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
