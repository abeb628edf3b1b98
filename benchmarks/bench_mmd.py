"""Benchmark: shiftkit's MMD permutation test against torchdrift's `kernel_mmd`.

Headline: 5,000 vs 5,000 points, d = 512, 1,000 permutations, 2 CPU threads; goal <= 5 s.
torchdrift (0.1.0.post1) re-indexes the whole N x N kernel matrix for every permutation
(`k[pi][:, pi]`), so 1,000 permutations at N = 10,000 take many minutes. It is therefore timed in
the same run on the same input with few permutations, as t(P) = t_kernel + P * t_perm, and
extrapolated to 1,000 permutations (said so in the row). A second row compares both directly,
without extrapolation, on 1,000 vs 1,000 points with 200 permutations.

Wall time and CPU time are both recorded: on a shared machine (load average in the JSON) wall
time is inflated by other processes, CPU time much less.

    .venv/bin/python benchmarks/bench_mmd.py [--n 5000] [--dim 512] [--perms 1000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import describe_machine, make_row, markdown_table, write_result  # noqa: E402

GOAL_S = 5.0


def _timed(fn):
    w0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    return time.perf_counter() - w0, time.process_time() - c0, out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=5000, help="points per side")
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--perms", type=int, default=1000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--td-perms", type=int, default=5, help="torchdrift permutations actually run at full size")
    args = ap.parse_args(argv)

    import torch

    from shiftkit.evaluation.gap import mmd_test

    torch.set_num_threads(args.threads)
    machine = describe_machine()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(args.n, args.dim, generator=g)
    y = torch.randn(args.n, args.dim, generator=g) + 0.02  # a small shift
    mmd_test(x[:500], y[:500], n_permutations=50)  # warm-up (thread pool, allocator)

    walls, cpus = [], []
    res = None
    for _ in range(args.repeat):
        w, c, res = _timed(lambda: mmd_test(x, y, n_permutations=args.perms, seed=0))
        walls.append(w)
        cpus.append(c)
    sk_wall, sk_cpu = statistics.median(walls), statistics.median(cpus)
    print(f"shiftkit mmd_test: wall {sk_wall:.2f} s (runs {[round(v, 2) for v in walls]}), cpu {sk_cpu:.2f} s, "
          f"mmd2 {res.mmd2:.3g}, p {res.p_value:.4f}", flush=True)

    rows = []
    extra: dict = {"shiftkit_wall_s": walls, "shiftkit_cpu_s": cpus, "mmd2": res.mmd2, "p_value": res.p_value,
                   "n": args.n, "dim": args.dim, "permutations": args.perms, "threads": args.threads}
    task = f"MMD test {args.n:,} vs {args.n:,}, d={args.dim}, {args.perms:,} perms (CPU, {args.threads} threads)"
    td_note = ""
    try:
        from torchdrift.detectors.mmd import kernel_mmd
    except Exception as exc:  # noqa: BLE001 - any import failure means "not measured"
        kernel_mmd = None
        td_note = f"torchdrift not importable ({type(exc).__name__}: {exc})"
    td_full = None
    if kernel_mmd is not None:
        torch.manual_seed(0)
        t0, _, _ = _timed(lambda: kernel_mmd(x, y, n_perm=None))  # kernel matrix only
        tp, _, _ = _timed(lambda: kernel_mmd(x, y, n_perm=args.td_perms))
        per_perm = max(tp - t0, 0.0) / args.td_perms
        td_full = t0 + args.perms * per_perm
        extra.update(torchdrift_kernel_s=t0, torchdrift_per_perm_s=per_perm, torchdrift_perms_run=args.td_perms,
                     torchdrift_extrapolated_s=td_full)
        td_note = (f"torchdrift 0.1.0.post1 timed on the same input with {args.td_perms} perms "
                   f"(kernel {t0:.2f} s + {per_perm:.3f} s/perm), extrapolated to {args.perms:,}")
        print(f"torchdrift kernel_mmd: kernel {t0:.2f} s, {per_perm:.3f} s/perm -> {td_full:.1f} s extrapolated",
              flush=True)
    rows.append(make_row(task, shiftkit=sk_wall, unit="s", baseline=td_full, baseline_name="torchdrift kernel_mmd",
                         max_value=GOAL_S, goal=f"<= {GOAL_S:g} s",
                         notes=f"median of {args.repeat} (wall; CPU {sk_cpu:.2f} s; load avg "
                               f"{machine.get('load_avg_1m', '?')}); {td_note}"))

    # Direct comparison, no extrapolation.
    n2, p2 = min(1000, args.n), 200
    xs, ys = x[:n2], y[:n2]
    w_sk, _, _ = _timed(lambda: mmd_test(xs, ys, n_permutations=p2, seed=0))
    w_td = None
    if kernel_mmd is not None:
        torch.manual_seed(0)
        w_td, _, (mmd_td, p_td) = _timed(lambda: kernel_mmd(xs, ys, n_perm=p2))
        extra.update(small_torchdrift_p=float(p_td), small_torchdrift_mmd=float(mmd_td))
    print(f"direct {n2} vs {n2}, {p2} perms: shiftkit {w_sk:.3f} s, torchdrift {w_td if w_td is None else round(w_td, 3)} s",
          flush=True)
    rows.append(make_row(f"MMD test {n2:,} vs {n2:,}, d={args.dim}, {p2} perms (both measured fully)",
                         shiftkit=w_sk, unit="s", baseline=w_td, baseline_name="torchdrift kernel_mmd",
                         max_ratio=1.0, notes="single run each, same input"))
    print(markdown_table(rows))
    path = write_result("mmd", rows, machine=machine, extra=extra)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
