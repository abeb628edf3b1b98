"""Run every ``benchmarks/bench_*.py`` and rewrite the results table in ``benchmarks/README.md``.

Each script runs in its own subprocess with a timeout; a script that fails, times out or
writes no ``benchmarks/results/<topic>.json`` becomes a row saying so instead of stopping the
run. The collected rows also go to ``benchmarks/results/all.json``.

Usage (``make bench`` runs the first form)::

    .venv/bin/python benchmarks/run_all.py
    .venv/bin/python benchmarks/run_all.py --only dann_step mmd --no-readme
    .venv/bin/python benchmarks/run_all.py --timeout 120 --timeout-for demo=600
    .venv/bin/python benchmarks/run_all.py --only reweight --merge   # rerun one, keep the other rows
    .venv/bin/python benchmarks/run_all.py --collect synth reweight  # take results/<topic>.json as written

``benchmarks/gpu_bench.py`` is run too when CUDA is available; otherwise the table gets rows
that say the GPU figures were not measured and give the command that measures them.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # noqa: E402  (the path insert above makes _common importable as a script)
    BENCH_DIR,
    REPO_ROOT,
    RESULTS_DIR,
    describe_machine,
    machine_line,
    make_row,
    markdown_table,
    measure_subprocess,
    normalise_row,
    write_result,
)

README = BENCH_DIR / "README.md"
START = "<!-- bench-table:start -->"
END = "<!-- bench-table:end -->"
DEFAULT_TIMEOUT_S = 420.0
#: Scripts that need longer than the default (seconds); overridable with --timeout-for.
TIMEOUTS: dict[str, float] = {"demo": 600.0, "monitor": 600.0}
#: Arguments per script, to keep `make bench` near 15 minutes on 2 cores (full grids: run the
#: script yourself). bench_reweight's default grid goes to n = 100,000 and skada at 20,000.
SCRIPT_ARGS: dict[str, list[str]] = {"reweight": ["--sizes", "1000", "5000"]}
#: Order in the table: the issue's headline rows first, then anything else alphabetically.
ORDER = ("dann_step", "method_steps", "augment", "synth", "reweight", "mmd", "transferability", "demo", "omp", "gpu")
GPU_COMMAND = ".venv/bin/python benchmarks/gpu_bench.py --device cuda"


def topic_of(script: Path) -> str:
    return script.stem[len("bench_"):] if script.stem.startswith("bench_") else script.stem


def discover(only: list[str] | None, skip: list[str]) -> list[Path]:
    scripts = sorted(BENCH_DIR.glob("bench_*.py"))
    if only:
        scripts = [s for s in scripts if topic_of(s) in only or s.name in only]
    scripts = [s for s in scripts if topic_of(s) not in skip and s.name not in skip]
    rank = {t: i for i, t in enumerate(ORDER)}
    return sorted(scripts, key=lambda s: (rank.get(topic_of(s), len(ORDER)), s.name))


def _last_lines(text: str, n: int = 3) -> str:
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return " / ".join(lines[-n:])[-300:]


def _failure_row(topic: str, script: str, why: str, machine: str) -> dict[str, Any]:
    return make_row(f"{topic}: benchmark did not finish", shiftkit=None, unit="", notes=f"{script}: {why}",
                    machine=machine)


def run_script(script: Path, timeout: float, machine: str, extra_args: list[str] | None = None) -> tuple[list[dict], dict]:
    """Run one script; return its rows (or one failure row) and a status record."""
    topic = topic_of(script)
    result_path = RESULTS_DIR / f"{topic}.json"
    started = time.time()
    env = {"MPLBACKEND": "Agg", "NO_ALBUMENTATIONS_UPDATE": "1", "PYTHONUNBUFFERED": "1",
           # As the shiftkit CLI does: sleeping, not spinning, OpenMP threads, so a busy machine
           # slows both sides of a comparison alike instead of multiplying torch's CPU time.
           "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE")}
    stats = measure_subprocess([sys.executable, str(script), *(extra_args or [])], timeout=timeout, env=env,
                               cwd=REPO_ROOT)
    status = {"script": " ".join([script.name, *(extra_args or [])]), "topic": topic, "returncode": stats.returncode, "wall_s": round(stats.wall_s, 1),
              "cpu_s": None if stats.cpu_s is None else round(stats.cpu_s, 1), "timed_out": stats.timed_out,
              "peak_rss_gb": None if stats.peak_rss_gb is None else round(stats.peak_rss_gb, 3),
              "finished": time.strftime("%Y-%m-%d %H:%M"),
              "load_avg_1m_at_end": round(os.getloadavg()[0], 1) if hasattr(os, "getloadavg") else None}
    fresh = result_path.exists() and result_path.stat().st_mtime >= started - 1
    if stats.timed_out:
        why = f"timed out after {timeout:.0f} s"
    elif stats.returncode != 0:
        why = f"exit code {stats.returncode}: {_last_lines(stats.stderr) or _last_lines(stats.stdout)}"
    elif not fresh:
        why = f"exited 0 but wrote no {result_path.relative_to(REPO_ROOT)}"
    else:
        why = ""
    rows: list[dict] = []
    if fresh:
        try:
            doc = json.loads(result_path.read_text())
            raw = doc.get("rows", doc if isinstance(doc, list) else [])
            m = doc.get("machine") if isinstance(doc, dict) else None
            # A script describing its machine in its own keys gets run_all's description.
            line = machine_line(m) if isinstance(m, dict) and m.get("cpu") else (m if isinstance(m, str) else machine)
            rows = [normalise_row(r, machine=line) for r in raw if isinstance(r, dict)]
            if not rows:
                why = why or f"{result_path.name} holds no rows"
        except (OSError, ValueError) as exc:
            why = why or f"unreadable {result_path.name}: {exc}"
    if why:
        status["error"] = why
        # Rows a partly failed script did write are kept; the failure is one more row.
        rows.append(_failure_row(topic, script.name, why, machine))
    return rows, status


def gpu_rows(machine: str, timeout: float) -> tuple[list[dict], dict | None]:
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except Exception:
        has_cuda = False
    script = BENCH_DIR / "gpu_bench.py"
    if has_cuda and script.exists():
        return run_script(script, timeout, machine, ["--device", "cuda"])
    note = f"not measured: no CUDA GPU on this machine; run `{GPU_COMMAND}` on one"
    goal = "DANN trainer img/s / plain-step img/s >= 0.85"
    rows = [
        make_row(f"GPU: DANN training (shiftkit trainer) vs plain-step ceiling, {what}, bf16 + channels_last",
                 shiftkit=None, unit="img/s", min_ratio=0.85, goal=goal, notes=note, machine=machine)
        for what in ("DenseNet121 224x224x1, batch 64+64", "ResNet50 224x224x1, batch 64+64",
                     "FlexibleUNet(resnet34) 256x512x3, batch 16+16")
    ]
    rows.append(make_row("GPU: data loader (synthetic radiographs, PNG decode; workers) vs DANN img/s", shiftkit=None,
                         unit="img/s", min_ratio=1.0, goal="loader img/s >= DANN img/s", notes=note, machine=machine))
    return rows, None


def previous_rows() -> tuple[dict[str, list[dict]], list[dict]]:
    """Rows per topic and script statuses of the last ``results/all.json`` (for ``--merge``)."""
    try:
        doc = json.loads((RESULTS_DIR / "all.json").read_text())
        extra = doc.get("extra", {})
        return dict(extra.get("rows_by_topic", {})), list(extra.get("scripts", []))
    except (OSError, ValueError):
        return {}, []


def collect(topics: list[str], no_readme: bool = False) -> int:
    """Merge the rows of ``results/<topic>.json`` into ``results/all.json`` (and the README)."""
    by_topic, statuses = previous_rows()
    try:
        doc = json.loads((RESULTS_DIR / "all.json").read_text())
    except (OSError, ValueError):
        doc = {"command": "make bench", "machine": describe_machine(), "extra": {}}
    for topic in topics:
        path = RESULTS_DIR / f"{topic}.json"
        try:
            result = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            print(f"{path}: cannot read ({exc})", file=sys.stderr)
            return 2
        line = machine_line(result.get("machine") or describe_machine())
        by_topic[topic] = [normalise_row(r, machine=line) for r in result.get("rows", []) if isinstance(r, dict)]
        statuses = [st for st in statuses if st.get("topic") != topic] + [{
            "topic": topic, "script": f"bench_{topic}.py", "returncode": 0, "wall_s": "-",
            "finished": time.strftime("%Y-%m-%d %H:%M %Z"),
            "note": f"collected from results/{topic}.json: {result.get('command', 'run by hand')}"}]
    rank = {t: i for i, t in enumerate(ORDER)}
    order = sorted(by_topic, key=lambda t: (rank.get(t, len(ORDER)), t))
    rows = [r for t in order for r in by_topic[t]]
    extra = dict(doc.get("extra", {}), scripts=statuses, rows_by_topic=by_topic)
    write_result("all", rows, command=doc.get("command", "make bench"), machine=doc["machine"], extra=extra)
    if not no_readme:
        update_readme(render_block(rows, statuses, doc["machine"], doc.get("command", "make bench"),
                                   float(extra.get("total_s", 0.0)), finished=extra.get("finished")))
    print(f"collected {', '.join(topics)} into results/all.json")
    return 0


def render_block(rows: list[dict], statuses: list[dict], machine: dict, command: str, total_s: float,
                 finished: str | None = None) -> str:
    load = machine.get("load_avg_1m")
    cmd_text = ("`make bench` (= `.venv/bin/python benchmarks/run_all.py` after installing the `bench` extra)"
                if command == "make bench" else f"`{command}`")
    lines = [
        START,
        "",
        f"Command: {cmd_text}, finished {finished or time.strftime('%Y-%m-%d %H:%M %Z')} "
        f"in {total_s / 60:.1f} min.",
        "",
        f"Machine: {machine_line(machine)}; 1-minute load average at start {load}"
        + (" (other processes were competing for the cores: wall-clock figures are inflated and noisy; "
           "scripts repeat their measurements and report medians)" if load and load > machine.get("cores", 1) else "")
        + ".",
        "",
        markdown_table(rows),
        "",
        "Per script (wall and CPU seconds of the whole script, peak RSS of its process tree):",
        "",
        "| script | finished | load at end | exit | wall s | CPU s | peak RSS GB | note |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for s in statuses:
        note = s.get("error", s.get("note", ""))
        lines.append(f"| {s['script']} | {s.get('finished', '-')} | {s.get('load_avg_1m_at_end', '-')} | "
                     f"{s['returncode']} | {s.get('wall_s', '-')} | {s.get('cpu_s', '-')} | {s.get('peak_rss_gb', '-')} | "
                     f"{note.replace('|', '/')} |")
    lines += ["", END]
    return "\n".join(lines)


def update_readme(block: str, path: Path = README) -> None:
    """Replace the text between the markers (or append the block when they are missing)."""
    text = path.read_text(encoding="utf-8") if path.exists() else "# shiftkit benchmarks\n\n"
    if START in text and END in text:
        head, rest = text.split(START, 1)
        _, tail = rest.split(END, 1)
        text = head + block + tail
    else:
        text = text.rstrip("\n") + "\n\n## Results\n\n" + block + "\n"
    from shiftkit.datasets.files import atomic_write_text

    atomic_write_text(path, text)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", nargs="*", help="topics or file names to run (default: all bench_*.py)")
    ap.add_argument("--skip", nargs="*", default=[], help="topics or file names to leave out")
    ap.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S, help="seconds per script")
    ap.add_argument("--timeout-for", action="append", default=[], metavar="TOPIC=SECONDS",
                    help="per-script timeout, e.g. demo=600")
    ap.add_argument("--no-readme", action="store_true", help="do not rewrite benchmarks/README.md")
    ap.add_argument("--no-gpu", action="store_true", help="leave out the GPU rows")
    ap.add_argument("--render-only", action="store_true",
                    help="rewrite the README table from results/all.json without running anything")
    ap.add_argument("--merge", action="store_true",
                    help="keep the rows of scripts not run now from the previous results/all.json")
    ap.add_argument("--collect", nargs="+", metavar="TOPIC",
                    help="take these topics' rows from results/<topic>.json (written by running the script "
                         "by hand, e.g. with a larger grid) instead of running them; keep the other rows")
    args = ap.parse_args(argv)

    if args.collect:
        return collect(args.collect, args.no_readme)
    if args.render_only:
        doc = json.loads((RESULTS_DIR / "all.json").read_text())
        extra = doc.get("extra", {})
        update_readme(render_block(doc["rows"], extra.get("scripts", []), doc["machine"], doc["command"],
                                   float(extra.get("total_s", 0.0)),
                                   finished=extra.get("finished") or max(
                                       (st.get("finished", "") for st in extra.get("scripts", [])), default=None)))
        print(f"table written to {README.relative_to(REPO_ROOT)} from results/all.json")
        return 0
    timeouts = dict(TIMEOUTS)
    for item in args.timeout_for:
        k, _, v = item.partition("=")
        timeouts[k] = float(v)
    machine = describe_machine()
    line = machine_line(machine)
    scripts = discover(args.only, args.skip)
    if not scripts:
        print("no benchmark scripts matched", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    by_topic: dict[str, list[dict]] = {}
    statuses: list[dict] = []
    if args.merge:
        by_topic, statuses = previous_rows()
    for script in scripts:
        topic = topic_of(script)
        timeout = timeouts.get(topic, args.timeout)
        print(f"[bench] {script.name} (timeout {timeout:.0f} s) ...", flush=True)
        r, status = run_script(script, timeout, line, SCRIPT_ARGS.get(topic))
        by_topic[topic] = r
        statuses = [s for s in statuses if s.get("topic") != topic] + [status]
        print(f"[bench] {script.name}: exit {status['returncode']}, {status['wall_s']} s"
              + (f" - {status['error']}" if "error" in status else ""), flush=True)
    if not args.no_gpu:
        r, status = gpu_rows(line, timeouts.get("gpu", 600.0))
        by_topic["gpu"] = r
        if status:
            statuses = [s for s in statuses if s.get("topic") != "gpu"] + [status]
    rank = {t: i for i, t in enumerate(ORDER)}
    order = sorted(by_topic, key=lambda t: (rank.get(t, len(ORDER)), t))
    rows = [r for t in order for r in by_topic[t]]
    statuses.sort(key=lambda s: (rank.get(s.get("topic"), len(ORDER)), s.get("topic", "")))
    total = time.perf_counter() - t0
    command = "make bench" if not (args.only or args.skip) else "python benchmarks/run_all.py " + " ".join(
        argv if argv is not None else sys.argv[1:])
    write_result("all", rows, command=command, machine=machine,
                 extra={"scripts": statuses, "total_s": round(total, 1), "rows_by_topic": by_topic,
                        "finished": time.strftime("%Y-%m-%d %H:%M %Z")})
    print()
    print(markdown_table(rows))
    print(f"\ntotal {total / 60:.1f} min")
    if not args.no_readme:
        update_readme(render_block(rows, statuses, machine, command, total))
        print(f"table written to {README.relative_to(REPO_ROOT)}")
    # A failed script is a row, not an error: the run itself succeeded.
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
