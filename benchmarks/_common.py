"""Shared helpers of the benchmark scripts: machine description, the JSON row schema,
timing with medians, peak memory of a subprocess, and writing results.

Every ``benchmarks/bench_<topic>.py`` prints a markdown table and writes
``benchmarks/results/<topic>.json`` shaped as :func:`result_document` returns::

    {
      "topic": "dann_step",
      "schema": 1,
      "command": "python benchmarks/bench_dann_step.py",
      "machine": {... describe_machine() ...},
      "rows": [ROW, ...],
      "extra": {...anything else the script wants to keep...}
    }

and each ``ROW`` (built with :func:`make_row`) is::

    {
      "task": "DANN step vs plain step (CPU, tiny, 64 px)",   # what was measured
      "shiftkit": 0.123,            # shiftkit's figure, in ``unit`` (None when it failed)
      "baseline": 0.110,            # the peer / baseline figure measured in the same run
      "baseline_name": "plain step",
      "unit": "s/step",
      "ratio": 1.118,               # shiftkit / baseline (None without a baseline)
      "goal": "ratio <= 1.15",      # human-readable goal
      "met": true,                  # None when there is no goal or nothing was measured
      "notes": "median of 5 repeats",
      "machine": "AMD EPYC, 2 cores, 23 GB, torch 2.13.0+cpu"
    }

``benchmarks/run_all.py`` collects the rows of every script into the table of
``benchmarks/README.md``. This module only uses the standard library (plus torch when it is
importable, to describe the machine), so a benchmark can import it before anything heavy.
"""

from __future__ import annotations

import json
import math
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "BENCH_DIR",
    "RESULTS_DIR",
    "REPO_ROOT",
    "ROW_KEYS",
    "SCHEMA_VERSION",
    "SubprocessStats",
    "describe_machine",
    "machine_line",
    "make_row",
    "markdown_table",
    "measure_subprocess",
    "median_time",
    "normalise_row",
    "result_document",
    "write_result",
]

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"
SCHEMA_VERSION = 1
#: Keys of one result row, in table order.
ROW_KEYS = ("task", "shiftkit", "baseline", "baseline_name", "unit", "ratio", "goal", "met", "notes", "machine")


# --------------------------------------------------------------------------------------
# Machine
# --------------------------------------------------------------------------------------


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _ram_gb() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024**2, 1)
    except OSError:
        pass
    return None


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS / Windows
        return os.cpu_count() or 1


def describe_machine() -> dict[str, Any]:
    """What the figures were measured on, including the load when measuring started.

    The load average matters: on a shared 2-core box a load above 2 means other processes
    competed for the CPUs and wall-clock figures are inflated.
    """
    info: dict[str, Any] = {
        "cpu": _cpu_model(),
        "cores": _cores(),
        "ram_gb": _ram_gb(),
        "python": platform.python_version(),
        "platform": platform.platform(terse=True),
        "load_avg_1m": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    if "torch" in sys.modules or os.environ.get("SHIFTKIT_BENCH_DESCRIBE_TORCH", "1") == "1":
        try:
            import torch

            info["torch"] = torch.__version__
            info["torch_threads"] = torch.get_num_threads()
            if torch.cuda.is_available():
                info["gpu"] = torch.cuda.get_device_name(0)
                info["cuda"] = torch.version.cuda
        except Exception:  # torch missing or broken: describe the rest
            pass
    return info


def machine_line(info: Mapping[str, Any] | None = None) -> str:
    """One short line for a table cell, e.g. ``AMD EPYC, 2 cores, 23.4 GB, torch 2.13.0+cpu``."""
    m = dict(info or describe_machine())
    parts = [str(m.get("gpu") or m.get("cpu") or "?")]
    if m.get("gpu"):
        parts.append(f"CPU {m.get('cpu')}")
    parts.append(f"{m.get('cores')} cores")
    if m.get("ram_gb"):
        parts.append(f"{m['ram_gb']} GB")
    if m.get("torch"):
        parts.append(f"torch {m['torch']}")
    return ", ".join(parts)


# --------------------------------------------------------------------------------------
# Rows
# --------------------------------------------------------------------------------------


def _finite(x: Any) -> float | None:
    if x is None:
        return None
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def make_row(
    task: str,
    *,
    shiftkit: float | None,
    unit: str,
    baseline: float | None = None,
    baseline_name: str | None = None,
    ratio: float | None = None,
    goal: str | None = None,
    max_ratio: float | None = None,
    min_ratio: float | None = None,
    max_value: float | None = None,
    min_value: float | None = None,
    met: bool | None = None,
    notes: str = "",
    machine: str | None = None,
) -> dict[str, Any]:
    """Build one result row (see the module docstring for the schema).

    ``ratio`` defaults to ``shiftkit / baseline``. The goal is checked from ``max_ratio`` /
    ``min_ratio`` (on the ratio) or ``max_value`` / ``min_value`` (on shiftkit's own figure);
    ``goal`` text is generated from them unless given. Pass ``met`` yourself for goals none
    of these express. A missing figure (``None``, NaN) gives ``met = None``: not measured is
    not the same as failed.
    """
    sk, bl = _finite(shiftkit), _finite(baseline)
    if ratio is None and sk is not None and bl not in (None, 0.0):
        ratio = sk / bl
    ratio = _finite(ratio)
    texts = []
    checks: list[bool | None] = []
    for bound, name, on, op in (
        (max_ratio, "ratio", ratio, "<="),
        (min_ratio, "ratio", ratio, ">="),
        (max_value, "value", sk, "<="),
        (min_value, "value", sk, ">="),
    ):
        if bound is None:
            continue
        texts.append(f"{name} {op} {bound:g}" + (f" {unit}" if name == "value" else ""))
        if on is None:
            checks.append(None)
        else:
            checks.append(on <= bound if op == "<=" else on >= bound)
    if met is None and checks:
        met = None if any(c is None for c in checks) else all(checks)
    return {
        "task": task,
        "shiftkit": sk,
        "baseline": bl,
        "baseline_name": baseline_name,
        "unit": unit,
        "ratio": None if ratio is None else round(ratio, 4),
        "goal": goal if goal is not None else " and ".join(texts),
        "met": met,
        "notes": notes,
        "machine": machine if machine is not None else machine_line(),
    }


def normalise_row(row: Mapping[str, Any], *, machine: str | None = None) -> dict[str, Any]:
    """Coerce a row written by another script to :data:`ROW_KEYS` (missing keys -> None/"")."""
    out: dict[str, Any] = {}
    for k in ROW_KEYS:
        v = row.get(k)
        if k in ("shiftkit", "baseline", "ratio"):
            v = _finite(v)
        elif k == "met":
            v = None if v is None else bool(v)
        elif k in ("task", "unit", "goal", "notes"):
            v = "" if v is None else str(v)
        out[k] = v
    if out["ratio"] is None and out["shiftkit"] is not None and out["baseline"]:
        out["ratio"] = round(out["shiftkit"] / out["baseline"], 4)
    if not out.get("machine"):
        out["machine"] = machine or ""
    extra = {k: v for k, v in row.items() if k not in ROW_KEYS}
    if extra and not out["notes"]:
        # Keep what the script measured beyond the schema visible, not silently dropped.
        out["notes"] = ", ".join(f"{k}={v}" for k, v in extra.items() if not isinstance(v, (dict, list)))
    return out


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "**no**"
    if isinstance(v, float):
        a = abs(v)
        if a == 0:
            return "0"
        if a >= 1000:
            return f"{v:,.0f}"
        if a >= 100:
            return f"{v:.1f}"
        if a >= 1:
            return f"{v:.3g}" if a < 10 else f"{v:.1f}"
        return f"{v:.3g}"
    return str(v).replace("|", "\\|").replace("\n", " ")


def markdown_table(rows: Sequence[Mapping[str, Any]], *, with_machine: bool = True) -> str:
    """Rows as a GitHub markdown table (``met``: yes / **no** / -)."""
    head = ["task", "shiftkit", "baseline", "unit", "ratio", "goal", "met", "notes"]
    if with_machine:
        head.append("machine")
    lines = ["| " + " | ".join(head) + " |", "| " + " | ".join("---" for _ in head) + " |"]
    for r in rows:
        baseline = _fmt(r.get("baseline"))
        if r.get("baseline_name") and r.get("baseline") is not None:
            baseline = f"{baseline} ({_fmt(r['baseline_name'])})"
        cells = [
            _fmt(r.get("task")),
            _fmt(r.get("shiftkit")),
            baseline,
            _fmt(r.get("unit")),
            _fmt(r.get("ratio")),
            _fmt(r.get("goal") or None),
            _fmt(r.get("met")),
            _fmt(r.get("notes") or None),
        ]
        if with_machine:
            cells.append(_fmt(r.get("machine") or None))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------
# Results on disk
# --------------------------------------------------------------------------------------


def result_document(topic: str, rows: Sequence[Mapping[str, Any]], *, command: str | None = None,
                    machine: Mapping[str, Any] | None = None, extra: Mapping[str, Any] | None = None) -> dict:
    """The JSON document a benchmark writes (see the module docstring)."""
    m = dict(machine or describe_machine())
    line = machine_line(m)
    return {
        "topic": topic,
        "schema": SCHEMA_VERSION,
        "command": command or " ".join(["python", *sys.argv]),
        "machine": m,
        "rows": [normalise_row(r, machine=line) for r in rows],
        "extra": dict(extra or {}),
    }


def write_result(topic: str, rows: Sequence[Mapping[str, Any]], *, command: str | None = None,
                 machine: Mapping[str, Any] | None = None, extra: Mapping[str, Any] | None = None,
                 out_dir: str | os.PathLike[str] | None = None) -> Path:
    """Write ``<out_dir or benchmarks/results>/<topic>.json`` atomically; return its path."""
    doc = result_document(topic, rows, command=command, machine=machine, extra=extra)
    folder = Path(out_dir) if out_dir is not None else RESULTS_DIR
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{topic}.json"
    from shiftkit.datasets.files import atomic_write_text

    atomic_write_text(path, json.dumps(doc, indent=2, default=str) + "\n")
    return path


# --------------------------------------------------------------------------------------
# Timing
# --------------------------------------------------------------------------------------


def median_time(fn: Callable[[], Any], *, repeat: int = 5, warmup: int = 1,
                sync: Callable[[], Any] | None = None) -> tuple[float, list[float]]:
    """Median wall time of ``fn()`` in seconds over ``repeat`` runs after ``warmup`` runs.

    ``sync`` (e.g. ``torch.cuda.synchronize``) is called before each clock read so queued
    GPU work is counted. Medians, not means: on a shared machine a few runs are slowed by
    other processes and the median shrugs them off.
    """
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(max(1, repeat)):
        if sync:
            sync()
        t0 = time.perf_counter()
        fn()
        if sync:
            sync()
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples), samples


# --------------------------------------------------------------------------------------
# Subprocess: wall time, CPU time, peak memory
# --------------------------------------------------------------------------------------


@dataclass
class SubprocessStats:
    """What :func:`measure_subprocess` observed.

    ``peak_rss_bytes``: the larger of (a) ``ru_maxrss`` of the command's process tree, read
    with ``getrusage(RUSAGE_CHILDREN)`` in a fresh wrapper process so no earlier child
    counts (it is the peak of the *largest single* process), and (b) the peak of the summed
    RSS of the live tree sampled from ``/proc`` every ``poll_s`` (catches several processes
    being large at once, e.g. DataLoader workers; Linux only, may miss short spikes).
    ``cpu_s``: user + system CPU seconds of the tree; less sensitive than ``wall_s`` to
    other processes competing for the cores.
    """

    returncode: int
    wall_s: float
    cpu_s: float | None
    peak_rss_bytes: int | None
    maxrss_single_bytes: int | None
    sampled_tree_rss_bytes: int | None
    stdout: str
    stderr: str
    timed_out: bool = False

    @property
    def peak_rss_gb(self) -> float | None:
        return None if self.peak_rss_bytes is None else self.peak_rss_bytes / 1024**3


# The wrapper is a separate interpreter so RUSAGE_CHILDREN covers this command's tree only.
_WRAPPER = r"""
import json, resource, subprocess, sys, time
cmd = json.loads(sys.argv[1])
t0 = time.perf_counter()
rc = subprocess.call(cmd)
wall = time.perf_counter() - t0
ru = resource.getrusage(resource.RUSAGE_CHILDREN)
scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
sys.stderr.write("\n__SHIFTKIT_RUSAGE__" + json.dumps({
    "rc": rc, "wall_s": wall, "cpu_s": ru.ru_utime + ru.ru_stime, "maxrss": ru.ru_maxrss * scale}) + "\n")
sys.exit(0)
"""


def _tree_rss(root_pid: int, *, include_root: bool = True) -> int:
    """Summed RSS (bytes) of ``root_pid``'s descendants (and itself), read from /proc."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    page = os.sysconf("SC_PAGE_SIZE")
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
            ppid = int(fields[1])
            rss[int(entry)] = int(fields[21]) * page
            children.setdefault(ppid, []).append(int(entry))
        except (OSError, IndexError, ValueError):
            continue
    total = rss.get(root_pid, 0) if include_root else 0
    stack = list(children.get(root_pid, []))
    while stack:
        pid = stack.pop()
        total += rss.get(pid, 0)
        stack.extend(children.get(pid, []))
    return total


def measure_subprocess(cmd: Sequence[str], *, timeout: float | None = None, env: Mapping[str, str] | None = None,
                       cwd: str | os.PathLike[str] | None = None, poll_s: float = 0.1) -> SubprocessStats:
    """Run ``cmd`` and return its wall time, CPU time and peak memory (see :class:`SubprocessStats`).

    On timeout the tree is killed and ``timed_out`` is set; never raises for a failing
    command (check ``returncode``).
    """
    full_env = dict(os.environ)
    if env:
        full_env.update(env)
    wrapper = [sys.executable, "-c", _WRAPPER, json.dumps(list(cmd))]
    t0 = time.perf_counter()
    proc = subprocess.Popen(wrapper, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=full_env,
                            cwd=cwd, start_new_session=True)
    peak_tree = 0
    stop = threading.Event()
    can_sample = Path("/proc").is_dir()

    def sample() -> None:
        nonlocal peak_tree
        while not stop.is_set():
            try:
                # The wrapper itself is left out: it is not the command.
                peak_tree = max(peak_tree, _tree_rss(proc.pid, include_root=False))
            except OSError:
                pass
            stop.wait(poll_s)

    sampler = threading.Thread(target=sample, daemon=True) if can_sample else None
    if sampler:
        sampler.start()
    timed_out = False
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
        import signal

        try:
            os.killpg(proc.pid, signal.SIGKILL)  # the wrapper leads its own session: kill the tree
        except ProcessLookupError:
            pass
        out, err = proc.communicate()
    finally:
        stop.set()
        if sampler:
            sampler.join()
    wall = time.perf_counter() - t0
    stats: dict[str, Any] = {}
    marker = "\n__SHIFTKIT_RUSAGE__"
    if marker in err:
        err, _, tail = err.rpartition(marker)
        try:
            stats = json.loads(tail.strip().splitlines()[0])
        except (ValueError, IndexError):
            stats = {}
    maxrss = stats.get("maxrss")
    sampled = peak_tree or None
    peaks = [v for v in (maxrss, sampled) if v]
    rc = stats.get("rc", proc.returncode if not timed_out else -9)
    return SubprocessStats(
        returncode=int(rc if rc is not None else -1),
        wall_s=float(stats.get("wall_s", wall)),
        cpu_s=stats.get("cpu_s"),
        peak_rss_bytes=max(peaks) if peaks else None,
        maxrss_single_bytes=maxrss,
        sampled_tree_rss_bytes=sampled,
        stdout=out,
        stderr=err,
        timed_out=timed_out,
    )
