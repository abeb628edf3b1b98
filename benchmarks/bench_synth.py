"""Generation speed of the procedural benchmarks on one core.

Goals (issue 3): radiograph 128 x 128 >= 500 images/s; dashcam 128 x 256 >= 200 images/s.

Figures are images per CPU-second of this process (``time.process_time``), with one thread
(``OMP_NUM_THREADS=1``, ``cv2.setNumThreads(1)``, ``torch`` not involved), so other processes
on a shared machine inflate them less than wall time would; wall-clock rates are kept in the
notes, with the 1-minute load average before and after each case. Median of ``--repeat`` runs
over all domains of each benchmark.

    .venv/bin/python benchmarks/bench_synth.py [--n 300] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import make_row, markdown_table, write_result  # noqa: E402


def _rate(sample, domains, n: int, size) -> tuple[float, float]:
    """(images per CPU second, images per wall second) generating n images per domain."""
    c0, w0 = time.process_time(), time.perf_counter()
    for d in domains:
        for i in range(n):
            sample(d, i, size=size)
    cpu, wall = time.process_time() - c0, time.perf_counter() - w0
    total = n * len(domains)
    return total / cpu, total / wall


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=300, help="images per domain per repeat")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args(argv)

    import cv2

    cv2.setNumThreads(1)
    from shiftkit.datasets.synth import dashcam, radiograph

    rows, extra = [], {}
    cases = [
        ("radiograph", radiograph.sample, radiograph.DOMAINS, 128, 500.0),
        ("dashcam", dashcam.sample, ("urban_day", "rural_day", "urban_night", "rural_fog", "urban_rain"),
         (128, 256), 200.0),
    ]
    for name, sample, domains, size, goal in cases:
        sample(domains[0], 0, size=size)  # warm caches (grids, noise bank, glyphs)
        load0 = os.getloadavg()[0]
        runs = [_rate(sample, domains, max(1, args.n // len(domains)), size) for _ in range(args.repeat)]
        cpu_rate = statistics.median(r[0] for r in runs)
        wall_rate = statistics.median(r[1] for r in runs)
        load1 = os.getloadavg()[0]
        label = f"{size}x{size}" if isinstance(size, int) else f"{size[0]}x{size[1]}"
        print(f"{name} {label}: {cpu_rate:.0f} img/CPU-s, {wall_rate:.0f} img/wall-s", flush=True)
        extra[name] = {"cpu_rates": [r[0] for r in runs], "wall_rates": [r[1] for r in runs], "domains": list(domains),
                       "load_avg_1m": [load0, load1]}
        rows.append(make_row(f"synth {name} generation {label}, 1 core", shiftkit=cpu_rate, unit="img/s",
                             min_value=goal, notes=f"per CPU-second; wall {wall_rate:.0f} img/s; median of "
                                                   f"{args.repeat}, all listed domains; load {load0:.1f} -> {load1:.1f}"))
    print(markdown_table(rows))
    print(f"wrote {write_result('synth', rows, extra=extra)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
