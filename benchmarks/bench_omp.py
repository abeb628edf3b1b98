"""Benchmark: torch CPU training step with ``OMP_WAIT_POLICY=PASSIVE`` (the shiftkit CLI's default)
against libgomp's default (threads spin while waiting), same machine, same run.

One subprocess per policy (the policy is read when libgomp loads, so it cannot change inside
a process), alternating, each timing forward + backward of the ``tiny`` backbone on a batch of
32 images of 32 px - the step `shiftkit demo --quick` repeats - with torch's default thread
count. On an idle machine spinning is faster (this step: 0.030 s vs 0.055 s); on a busy one
spinning threads take the CPU their partners need (0.183 s vs 1.23 s at load 9). So the CLI
picks PASSIVE only when the load average is at least the number of cores (docs/performance.md).

    .venv/bin/python benchmarks/bench_omp.py [--repeat 2] [--steps 6]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import describe_machine, make_row, markdown_table, write_result  # noqa: E402

_CHILD = r"""
import json, statistics, sys, time, torch
from shiftkit.adapt.models.backbones import build_classifier
torch.manual_seed(0)
m = build_classifier("tiny", 1, 2)
x = torch.randn(32, 1, 32, 32)
for _ in range(2):
    m(x).sum().backward()
w, c = [], []
for _ in range(int(sys.argv[1])):
    t, p = time.perf_counter(), time.process_time()
    m(x).sum().backward()
    w.append(time.perf_counter() - t); c.append(time.process_time() - p)
print(json.dumps({"wall": statistics.median(w), "cpu": statistics.median(c), "threads": torch.get_num_threads()}))
"""


def run_child(policy: str | None, steps: int) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if policy:
        env["OMP_WAIT_POLICY"] = policy
    out = subprocess.run([sys.executable, "-c", _CHILD, str(steps)], capture_output=True, text=True, env=env,
                         timeout=600, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=2, help="subprocess pairs; medians reported")
    ap.add_argument("--steps", type=int, default=6, help="timed steps per subprocess (median taken)")
    args = ap.parse_args(argv)
    machine = describe_machine()
    res: dict[str, list[dict]] = {"passive": [], "default": []}
    for _ in range(args.repeat):
        res["passive"].append(run_child("PASSIVE", args.steps))
        res["default"].append(run_child(None, args.steps))
    med = {k: {m: statistics.median(r[m] for r in v) for m in ("wall", "cpu")} for k, v in res.items()}
    threads = res["passive"][0]["threads"]
    load = machine.get("load_avg_1m")
    # The CLI sets PASSIVE only on a busy machine (load >= the number of cores, adapt/cli/__init__.py); the goal
    # is that this choice is never slower than libgomp's default where it is made.
    busy = load is not None and load >= (os.cpu_count() or 1)
    goal = "ratio <= 1.1 where the CLI picks PASSIVE (load >= the number of cores)"
    where = ("busy: the CLI picks PASSIVE" if busy
             else "idle: the CLI keeps libgomp's default, so PASSIVE's ratio is shown but not judged")
    rows = [
        make_row(f"torch CPU step (tiny, batch 32, 32 px, {threads} threads): OMP_WAIT_POLICY=PASSIVE vs default, wall",
                 shiftkit=med["passive"]["wall"], baseline=med["default"]["wall"], baseline_name="libgomp default",
                 unit="s/step", max_ratio=1.1 if busy else None, goal=goal,
                 notes=f"medians of {args.repeat} process pairs x {args.steps} steps; load average {load} at start; "
                       + where),
        make_row(f"torch CPU step (tiny, batch 32, 32 px, {threads} threads): OMP_WAIT_POLICY=PASSIVE vs default, CPU",
                 shiftkit=med["passive"]["cpu"], baseline=med["default"]["cpu"], baseline_name="libgomp default",
                 unit="CPU s/step", max_ratio=1.1 if busy else None, goal=goal,
                 notes="process CPU time (all threads) per step; " + where),
    ]
    print(markdown_table(rows, with_machine=False))
    print(f"wrote {write_result('omp', rows, machine=machine, extra=res)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
