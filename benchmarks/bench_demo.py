"""Benchmark: ``shiftkit demo --quick`` end to end - wall time, CPU time and peak memory.

Each repeat runs the real command in a subprocess with a fresh output folder (so the
benchmark export, both fits, evaluation and the HTML report are all counted) and measures
the whole process tree: wall seconds, user+system CPU seconds, and peak RSS (see
``_common.measure_subprocess``: ``getrusage(RUSAGE_CHILDREN).ru_maxrss`` from a fresh
wrapper, and the summed RSS of the live tree sampled from /proc; the larger is reported).

Goal (issue 8): peak memory under 2 GB. Wall time has no goal of its own; the CLI promises
"about a minute on 2 cores". CPU seconds are reported next to it because, on a shared
machine, they move much less than wall time when other processes compete for the cores.

    .venv/bin/python benchmarks/bench_demo.py [--repeat 2] [--keep DIR]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import REPO_ROOT, make_row, markdown_table, measure_subprocess, write_result  # noqa: E402

GOAL_PEAK_GB = 2.0


def demo_command(out_dir: Path) -> list[str]:
    exe = Path(sys.executable).with_name("shiftkit")
    base = [str(exe)] if exe.exists() else [sys.executable, "-c", "from shiftkit.adapt.cli import main; main()"]
    return [*base, "demo", "--quick", "--out", str(out_dir)]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="time and measure `shiftkit demo --quick`")
    ap.add_argument("--repeat", type=int, default=2, help="runs; medians of wall/CPU, max of peak RSS")
    ap.add_argument("--timeout", type=float, default=420.0, help="seconds per run")
    ap.add_argument("--keep", type=Path, default=None, help="keep the run folders under this folder")
    args = ap.parse_args(argv)

    walls, cpus, peaks, failures = [], [], [], []
    for i in range(max(1, args.repeat)):
        parent = Path(tempfile.mkdtemp(prefix="shiftkit-bench-demo-"))
        try:
            stats = measure_subprocess(demo_command(parent / "runs"), timeout=args.timeout,
                                       env={"MPLBACKEND": "Agg", "NO_ALBUMENTATIONS_UPDATE": "1"}, cwd=REPO_ROOT)
            ok = stats.returncode == 0 and not stats.timed_out and (parent / "runs" / "demo-quick" / "metrics.json").exists()
            print(f"run {i + 1}: exit {stats.returncode}{' (timed out)' if stats.timed_out else ''}, "
                  f"wall {stats.wall_s:.1f} s, CPU {stats.cpu_s or float('nan'):.1f} s, "
                  f"peak RSS {stats.peak_rss_gb or float('nan'):.3f} GB", flush=True)
            if ok:
                walls.append(stats.wall_s)
                cpus.append(stats.cpu_s)
                peaks.append(stats.peak_rss_gb)
            else:
                tail = " / ".join(ln for ln in stats.stderr.strip().splitlines()[-3:])
                failures.append(f"run {i + 1}: exit {stats.returncode}, timed_out={stats.timed_out}: {tail[-300:]}")
            if args.keep:
                args.keep.mkdir(parents=True, exist_ok=True)
                shutil.copytree(parent / "runs", args.keep / f"run{i + 1}", dirs_exist_ok=True)
        finally:
            shutil.rmtree(parent, ignore_errors=True)

    n = len(walls)
    fail_note = ("; FAILED " + " | ".join(failures)) if failures else ""
    wall = statistics.median(walls) if walls else None
    cpu = statistics.median([c for c in cpus if c is not None]) if any(c is not None for c in cpus) else None
    peak = max(p for p in peaks if p is not None) if any(p is not None for p in peaks) else None
    rows = [
        make_row(
            "`shiftkit demo --quick` wall time (export, source-only + DANN fits, evaluation, report)",
            shiftkit=wall, unit="s",
            notes=(f"median of {n} run(s): " + ", ".join(f"{w:.1f}" for w in walls)
                   + (f"; CPU (user+sys) median {cpu:.1f} s" if cpu is not None else "") + fail_note),
        ),
        make_row(
            "`shiftkit demo --quick` peak memory (RSS, whole process tree)",
            shiftkit=peak, unit="GB", max_value=GOAL_PEAK_GB,
            notes=f"max over {n} run(s)" + fail_note,
        ),
    ]
    print(markdown_table(rows, with_machine=False))
    path = write_result("demo", rows, extra={"wall_s": walls, "cpu_s": cpus, "peak_rss_gb": peaks,
                                             "failures": failures})
    print(f"wrote {path}")
    return 0 if walls else 1


if __name__ == "__main__":
    raise SystemExit(main())
