"""Kill `shiftkit run` with SIGKILL at random moments, resume it, and check nothing broke.

What one invocation does:

1. runs the tiny config once, uninterrupted, and times it (``T_ref`` seconds, process start to
   exit) -- its ``metrics.json`` is the reference;
2. "episodes": in a fresh run folder, starts ``shiftkit run CONFIG`` and SIGKILLs it inside an
   aimed phase -- the PNG export, a training epoch, a checkpoint write (temp file written, not
   yet renamed), evaluation, the report write -- then ``shiftkit run CONFIG --resume`` aimed at
   the next phase, and so on until a launch finishes on its own. The launched process records
   its phase in a file (hooks installed by this script before the typer app runs; shiftkit is
   unchanged), so each kill lands where it is aimed and is counted where it landed. Random
   delays over the whole run (``--no-aim``, the old behaviour) landed 8 of 11 kills in
   evaluation and none in a checkpoint or report write;
3. after EVERY kill, every file under the run folder must parse: ``*.json`` loads, ``*.csv``
   reads (``manifest.csv`` also through ``shiftkit.datasets.load_manifest``, so every path it
   names exists), ``*.pt`` loads with ``torch.load(weights_only=True)``, ``*.png`` decodes
   fully with Pillow, ``*.html`` ends with ``</html>``, ``*.safetensors`` loads. Temp files
   (``*.tmp``, the first half of a write-then-``os.replace``) are counted, never opened by
   shiftkit, and reported;
4. the finished run's ``metrics.json`` must equal the reference exactly, wall-clock fields
   (``time``, ``wall_seconds``) aside: training on CPU is deterministic and resume exact.

Episodes repeat until at least ``--kills`` kills happened and every phase has at least
``--min-per-phase`` (3) kills; ``ok`` requires both. The summary is printed as a
markdown table and written as JSON (``--json``). Exit status 1 when any check failed.

Usage::

    OMP_NUM_THREADS=1 .venv/bin/python scripts/crash_resume.py --kills 20 \\
        --json benchmarks/results/crash_resume.json

Kills use ``Popen.kill()`` (SIGKILL: no handler, no cleanup, like the OOM killer or a node
preemption). Durability against power loss (fsync) is out of scope: a killed process's
completed writes are in the page cache and survive.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

#: metrics keys that legitimately differ between two identical runs (wall clock).
WALL_CLOCK_KEYS = frozenset({"time", "wall_seconds", "generated_at"})


def tiny_config(out_dir: Path, *, n_per_domain: int = 60, epochs: int = 3, image_size: int = 32,
                n_permutations: int = 50, name: str = "crash") -> dict[str, Any]:
    """The issue's tiny job: a run takes seconds on 2 CPU cores."""
    return {
        "name": name,
        "out_dir": str(out_dir),
        "methods": ["source_only", "dann"],
        "progress": False,
        "data": {"benchmark": "radiograph", "n_per_domain": n_per_domain, "image_size": image_size},
        "model": {"backbone": "tiny"},
        "train": {"epochs": epochs, "batch_size": 16, "device": "cpu", "seed": 0},
        "dann": {"disc_hidden": [32, 32]},
        "evaluation": {"n_permutations": n_permutations},
    }


def shiftkit_command() -> list[str]:
    """`shiftkit` next to this interpreter (the venv's console script), else `python -m`."""
    exe = Path(sys.executable).parent / "shiftkit"
    if exe.exists():
        return [str(exe)]
    return [sys.executable, "-m", "shiftkit.adapt.cli"]


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", "1")
    env.setdefault("MKL_NUM_THREADS", "1")
    env["NO_ALBUMENTATIONS_UPDATE"] = "1"
    env["MPLBACKEND"] = "Agg"
    env["PYTHONHASHSEED"] = "0"
    return env


#: The moments a kill is aimed at, in the order a run meets them.
PHASES = ("export", "epoch", "checkpoint", "evaluation", "report")
#: Seconds the launch aimed at a short phase (a checkpoint or report write) waits right before
#: the rename that publishes the file: the kill lands while the temp file exists and the old
#: file (or none) is still in place -- the moment atomic writes exist for.
WRITE_PAUSE_S = 0.4


def install_phase_hooks(phase_file: str, target: str | None, pause_s: float = WRITE_PAUSE_S) -> None:
    """Record, in ``phase_file``, which phase this process is in (harness-side instrumentation).

    Installed in the launched process before the typer app runs; shiftkit's code is unchanged.
    ``export``: inside the benchmark's PNG export; ``epoch``: a training step was taken (a
    global optimizer step hook); ``checkpoint``: from ``torch.save`` to the ``os.replace`` that
    publishes it; ``evaluation``: inside ``pipeline.evaluate_method``; ``report``: inside
    ``report.write_report``. Each record is one 16-byte ``pwrite`` at offset 0, so the harness
    never reads half a name. When ``target`` is ``checkpoint`` or ``report``, renames in that
    phase wait ``pause_s`` first.
    """
    import torch
    from torch.optim.optimizer import register_optimizer_step_pre_hook

    from shiftkit.adapt.job import pipeline
    from shiftkit.datasets.synth import dashcam, radiograph
    from shiftkit.evaluation import report

    fd = os.open(phase_file, os.O_WRONLY | os.O_CREAT, 0o644)
    state = {"phase": "start-up", "pending_save": False}

    def mark(name: str) -> None:
        state["phase"] = name
        os.pwrite(fd, name.encode().ljust(16)[:16], 0)

    def around(module: Any, attr: str, name: str, after: str) -> None:
        real = getattr(module, attr)

        def wrapped(*a: Any, **k: Any) -> Any:
            mark(name)
            try:
                return real(*a, **k)
            finally:
                mark(after)

        setattr(module, attr, wrapped)

    real_save, real_replace = torch.save, os.replace

    def save(obj: Any, f: Any, *a: Any, **k: Any) -> Any:
        before = state["phase"]
        mark("checkpoint")
        state["pending_save"], state["after_save"] = True, before
        return real_save(obj, f, *a, **k)

    def replace(src: Any, dst: Any, *a: Any, **k: Any) -> Any:
        if state["phase"] == target and target in ("checkpoint", "report"):
            time.sleep(pause_s)
        out = real_replace(src, dst, *a, **k)
        if state["pending_save"]:
            state["pending_save"] = False
            mark(state["after_save"])
        return out

    def step_hook(*_: Any) -> None:
        if state["phase"] not in ("evaluation", "checkpoint"):
            mark("epoch")

    torch.save = save
    os.replace = replace
    register_optimizer_step_pre_hook(step_hook)
    around(radiograph, "export", "export", "setup")
    around(dashcam, "export", "export", "setup")
    around(pipeline, "evaluate_method", "evaluation", "setup")
    around(report, "write_report", "report", "done")
    mark("start-up")


def read_phase(phase_file: Path) -> str:
    try:
        return phase_file.read_bytes()[:16].decode(errors="replace").strip()
    except OSError:
        return ""


def _child(argv: list[str], log_path: str | None, phase_file: str | None, target: str | None) -> None:
    """Body of a launch: exactly what the `shiftkit` console script runs, plus phase hooks."""
    if log_path is not None:
        fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.close(fd)
        sys.stdout = open(1, "w", buffering=1, closefd=False)  # noqa: SIM115
        sys.stderr = open(2, "w", buffering=1, closefd=False)  # noqa: SIM115
    if phase_file:
        install_phase_hooks(phase_file, target)
    from shiftkit.adapt.cli import app

    app(args=argv, prog_name="shiftkit")


def _forkserver_child(argv: list[str], log_path: str, phase_file: str | None = None, target: str | None = None) -> None:
    _child(argv, log_path, phase_file, target)


#: Imported once by the fork server, so a launch costs no interpreter start-up or imports.
PRELOAD = [
    "torch", "torch._dynamo", "torch.distributed", "torch.onnx", "numpy", "pandas", "yaml",
    "sklearn.decomposition", "matplotlib.pyplot", "sklearn.linear_model", "sklearn.metrics",
    "monai.networks.nets", "shiftkit.adapt.cli", "shiftkit.adapt.cli.run", "shiftkit.adapt.job.config",
    "shiftkit.adapt.job.pipeline", "shiftkit.adapt.training.trainer", "shiftkit.adapt.models.backbones", "shiftkit.adapt.methods",
    "shiftkit.datasets", "shiftkit.datasets.synth.radiograph", "shiftkit.evaluation.report",
    "shiftkit.evaluation.plots", "shiftkit.evaluation.gap", "shiftkit.evaluation.metrics",
    "shiftkit.evaluation.overfitting",
]
_CTX = None


def _fork_context():
    global _CTX
    if _CTX is None:
        import multiprocessing as mp

        os.environ.update(child_env())
        _CTX = mp.get_context("forkserver")
        _CTX.set_forkserver_preload(PRELOAD)
    return _CTX


def launch_aimed(config_path: Path, *, resume: bool, target: str, phase_file: Path, log_path: Path,
                 rng: random.Random, mode: str = "exec", timeout: float = 600.0) -> tuple[int, bool, float, str]:
    """Start `shiftkit run` and SIGKILL it inside phase ``target`` (see :data:`PHASES`).

    The launch records its phase in ``phase_file``; once it reads ``target`` the harness waits a
    uniform 0-0.3 s (0.05 s to ``WRITE_PAUSE_S`` - 0.05 s for the short write phases) and
    kills. Returns ``(returncode, killed, seconds, phase at death)``; the phase is read back
    after the kill, so it is where the process really was. ``killed`` is False when the run
    finished without entering ``target`` (a resumed run has no export to do, for instance).
    """
    argv = ["run", str(config_path)] + (["--resume"] if resume else [])
    phase_file.write_bytes(b"")
    with open(log_path, "ab") as log:
        log.write(f"\n$ shiftkit {' '.join(argv)}  (mode={mode}, aimed at {target})\n".encode())
    started = time.perf_counter()
    if mode == "fork":
        proc = _fork_context().Process(target=_forkserver_child, args=(argv, str(log_path), str(phase_file), target))
        proc.start()

        def alive() -> bool:
            return proc.exitcode is None

        def kill() -> int:
            proc.kill()
            proc.join()
            return proc.exitcode
    else:
        log = open(log_path, "ab")  # noqa: SIM115
        proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--child", str(phase_file), target,
                                 *argv], stdout=log, stderr=subprocess.STDOUT, env=child_env())

        def alive() -> bool:
            return proc.poll() is None

        def kill() -> int:
            proc.send_signal(signal.SIGKILL)
            return proc.wait()
    try:
        lo, hi = (0.05, WRITE_PAUSE_S - 0.05) if target in ("checkpoint", "report") else (0.0, 0.3)
        while alive():
            if time.perf_counter() - started > timeout:
                kill()
                raise RuntimeError(f"shiftkit run did not finish in {timeout} s (log: {log_path})")
            if read_phase(phase_file) == target:
                time.sleep(rng.uniform(lo, hi))
                if alive():
                    rc = kill()
                    return rc, True, time.perf_counter() - started, read_phase(phase_file)
            time.sleep(0.005)
        rc = proc.exitcode if mode == "fork" else proc.returncode
        return rc, False, time.perf_counter() - started, read_phase(phase_file)
    finally:
        if mode == "fork":
            proc.join()
        else:
            log.close()


def launch(config_path: Path, *, resume: bool, kill_after: float | None, log_path: Path,
           mode: str = "exec", timeout: float = 600.0) -> tuple[int, bool, float]:
    """Start `shiftkit run`, SIGKILL it after ``kill_after`` s (None: let it finish).

    ``mode="exec"`` starts the ``shiftkit`` console script as a new process (what a user
    runs). ``mode="fork"`` forks it from a fork server that has already imported shiftkit,
    torch, MONAI and matplotlib, then calls the same typer app: the same code from the same
    entry point, minus a few seconds of imports per launch (used by the CI test to fit its
    time budget).

    Returns ``(returncode, killed, seconds)``; ``killed`` is False when the run finished
    before the kill was due.
    """
    argv = ["run", str(config_path)] + (["--resume"] if resume else [])
    started = time.perf_counter()
    with open(log_path, "ab") as log:
        log.write(f"\n$ shiftkit {' '.join(argv)}  (mode={mode}, kill_after={kill_after})\n".encode())
    wait = kill_after if kill_after is not None else timeout
    if mode == "fork":
        proc = _fork_context().Process(target=_forkserver_child, args=(argv, str(log_path)))
        proc.start()
        proc.join(wait)
        if proc.exitcode is not None:
            return proc.exitcode, False, time.perf_counter() - started
        proc.kill()  # SIGKILL
        proc.join()
        if kill_after is None:
            raise RuntimeError(f"shiftkit run did not finish in {timeout} s (log: {log_path})")
        return proc.exitcode, True, time.perf_counter() - started
    with open(log_path, "ab") as log:
        proc = subprocess.Popen([*shiftkit_command(), *argv], stdout=log, stderr=subprocess.STDOUT,
                                env=child_env())
        try:
            rc = proc.wait(timeout=wait)
            return rc, False, time.perf_counter() - started
        except subprocess.TimeoutExpired:
            pass
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        if kill_after is None:
            raise RuntimeError(f"shiftkit run did not finish in {timeout} s (log: {log_path})")
        return proc.returncode, True, time.perf_counter() - started


# ----------------------------------------------------------------------------- checks


def _check_png(path: Path) -> None:
    from PIL import Image

    with Image.open(path) as im:
        im.load()  # decodes every row; raises OSError on a truncated file
    if not path.read_bytes().endswith(b"IEND\xaeB`\x82"):
        raise ValueError("no IEND chunk")


def _check_pt(path: Path) -> None:
    import torch

    obj = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(obj, dict) and "modules" in obj:  # a trainer checkpoint: its own invariants
        if not isinstance(obj.get("epoch"), int) or obj["epoch"] < 1:
            raise ValueError(f"bad epoch {obj.get('epoch')!r}")
        if len(obj.get("history", [])) != obj["epoch"]:
            raise ValueError("history length != epoch")


def _check_csv(path: Path) -> None:
    import pandas as pd

    pd.read_csv(path)
    if path.name == "manifest.csv":
        from shiftkit.datasets import load_manifest

        load_manifest(path)  # every image/mask named exists and the table validates


def _check_html(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    if not text.rstrip().endswith("</html>"):
        raise ValueError("does not end with </html>")


def _check_safetensors(path: Path) -> None:
    from safetensors.torch import load_file

    load_file(str(path))


CHECKERS = {
    ".json": lambda p: json.loads(p.read_text(encoding="utf-8")),
    ".csv": _check_csv,
    ".pt": _check_pt,
    ".png": _check_png,
    ".html": _check_html,
    ".safetensors": _check_safetensors,
}


def check_tree(root: Path) -> dict[str, Any]:
    """Parse every file under ``root``; returns counts and the list of problems."""
    out: dict[str, Any] = {"checked": Counter(), "tmp": [], "unknown": [], "problems": []}
    if not root.exists():
        return out
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        if path.name.endswith(".tmp"):
            out["tmp"].append(str(path.relative_to(root)))
            continue
        check = CHECKERS.get(path.suffix.lower())
        if check is None:
            out["unknown"].append(str(path.relative_to(root)))
            continue
        try:
            check(path)
        except Exception as exc:  # any failure to parse is exactly what we look for
            out["problems"].append(f"{path.relative_to(root)}: {type(exc).__name__}: {str(exc)[:200]}")
        out["checked"][path.suffix.lower()] += 1
    return out


def stage_of(run_dir: Path, epochs: int, methods: list[str], since: float) -> str:
    """Where the killed launch was, judged from what it had written (``since``: its start, epoch s)."""
    import torch

    def fresh(p: Path) -> bool:
        return p.exists() and p.stat().st_mtime >= since

    if fresh(run_dir / "report.html"):
        return "after the report"
    if fresh(run_dir / "metrics.json"):
        return "writing the report"
    data = run_dir / "data"
    if not (data / "export.json").exists():
        return "export" if data.exists() and any(data.rglob("*.png")) else "start-up"
    for name in methods:
        ck = run_dir / "checkpoints" / name / "last.pt"
        if not ck.exists():
            return f"{name} epoch 1"
        epoch = torch.load(ck, map_location="cpu", weights_only=True)["epoch"]
        if epoch < epochs:
            return f"{name} epoch {epoch + 1}"
    return "evaluation"


def reference_phases(run_dir: Path, methods: list[str], start: float, total: float) -> list[tuple[str, float, float]]:
    """``(name, from_s, to_s)`` windows of the reference run, from its files' modification times."""
    marks = [("start-up + export", run_dir / "data" / "export.json")]
    marks += [(f"{m} training (+ evaluation of the method before)", run_dir / "checkpoints" / m / "last.pt")
              for m in methods]
    phases, lo = [], 0.0
    for name, path in marks:
        hi = min(total, max(lo, path.stat().st_mtime - start)) if path.exists() else lo
        if hi > lo:
            phases.append((name, lo, hi))
        lo = hi
    if total > lo:
        phases.append(("evaluation + report", lo, total))
    return phases or [("whole run", 0.0, total)]


def strip_wall_clock(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: strip_wall_clock(v) for k, v in obj.items() if k not in WALL_CLOCK_KEYS}
    if isinstance(obj, list):
        return [strip_wall_clock(v) for v in obj]
    return obj


def diff(a: Any, b: Any, where: str = "") -> list[str]:
    """Paths at which two JSON values differ (NaN equals NaN)."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b), key=str):
            if k not in a or k not in b:
                out.append(f"{where}.{k}: only in {'reference' if k in a else 'resumed run'}")
            else:
                out += diff(a[k], b[k], f"{where}.{k}")
        return out
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return [f"{where}: length {len(a)} != {len(b)}"]
        return [d for i, (x, y) in enumerate(zip(a, b, strict=True)) for d in diff(x, y, f"{where}[{i}]")]
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return []
    return [] if a == b else [f"{where}: {a!r} != {b!r}"]


# ----------------------------------------------------------------------------- main loop


def _noop() -> None:
    """Forked once before timing, so the fork server's own start-up is not in ``T_ref``."""


def run_campaign(work: Path, *, kills: int, seed: int = 0, config_kw: dict | None = None,
                 max_launches: int | None = None, verbose: bool = True, mode: str = "exec",
                 parallel: int = 1, kills_per_episode: int = 4, aim: bool = True,
                 min_per_phase: int = 3) -> dict[str, Any]:
    """Reference run, then kill/resume episodes until ``kills`` kills; returns the summary.

    ``parallel`` episodes run at once (each in its own folder, one core each; with
    ``OMP_NUM_THREADS=1`` two fit a 2-core machine); the kill count is shared.

    An episode is killed at most ``kills_per_episode`` times, then left to finish. The first
    kill of episode ``e`` is drawn uniformly from phase ``e`` (cycling) of the reference run
    -- start-up + export, each method's training, evaluation + report, timed from the files
    the reference run wrote -- later kills uniformly from all of ``[0, T_ref]``: still
    random, but every phase is hit even though evaluation and the report take most of a
    run's time.

    ``aim=True`` (the default) aims every kill instead: each launch is killed inside the phase
    (:data:`PHASES`) with the fewest kills so far -- export, a training epoch, a checkpoint
    write, evaluation, the report write -- read from the phase the launched process records
    (:func:`install_phase_hooks`), until every phase has at least ``min_per_phase`` kills and
    ``kills`` kills happened in all. The summary counts kills by the phase the process was in
    when it died.
    """
    import threading

    import yaml

    work.mkdir(parents=True, exist_ok=True)
    logs = work / "logs"
    logs.mkdir(exist_ok=True)
    config_kw = dict(config_kw or {})
    lock = threading.Lock()

    def say(msg: str) -> None:
        if verbose:
            print(msg, flush=True)

    if mode == "fork":
        warm = _fork_context().Process(target=_noop)
        warm.start()
        warm.join()
    ref_cfg = tiny_config(work / "reference", **config_kw)
    ref_path = work / "reference.yaml"
    ref_path.write_text(yaml.safe_dump(ref_cfg))
    shutil.rmtree(work / "reference", ignore_errors=True)
    ref_start = time.time()
    rc, _, t_ref = launch(ref_path, resume=False, kill_after=None, log_path=logs / "reference.log", mode=mode)
    if rc != 0:
        raise RuntimeError(f"reference run failed (exit {rc}); see {logs / 'reference.log'}")
    run_name = ref_cfg["name"]
    phases = reference_phases(work / "reference" / run_name, ref_cfg["methods"], ref_start, t_ref)
    say("phases of the reference run (s): " + ", ".join(f"{n} {lo:.1f}-{hi:.1f}" for n, lo, hi in phases))
    reference = strip_wall_clock(json.loads((work / "reference" / run_name / "metrics.json").read_text()))
    say(f"reference run: {t_ref:.1f} s")

    summary: dict[str, Any] = {
        "config": {k: ref_cfg[k] for k in ("methods", "data", "model", "train", "evaluation")},
        "mode": mode,
        "parallel": parallel,
        "reference_seconds": round(t_ref, 2),
        "kills": 0, "launches": 0, "episodes": 0, "completed_runs": 0,
        "files_checked": 0, "corrupt_files": [], "metrics_mismatches": [], "failed_resumes": [],
        "tmp_files_seen_after_kill": 0, "tmp_files_left_at_end": 0,
        "stages": Counter(), "kill_delays_s": [],
        "aimed": aim, "phases": Counter({p: 0 for p in PHASES}) if aim else Counter(),
        "missed_targets": 0, "min_per_phase": min_per_phase if aim else 0,
    }
    max_launches = max_launches or 6 * kills + 10
    next_episode = [0]

    def want_kill() -> bool:
        with lock:
            short = aim and any(summary["phases"][p] < min_per_phase for p in PHASES)
            return (summary["kills"] < kills or short) and summary["launches"] < max_launches

    def next_target(first: bool, last_stage: str | None) -> str:
        # A resumed run exports again only when the kill landed inside the export.
        allowed = [p for p in PHASES if p != "export" or first or last_stage == "export"]
        with lock:
            return min(allowed, key=lambda p: (summary["phases"][p], PHASES.index(p)))

    def episode_loop(worker: int) -> None:
        rng = random.Random(seed * 1000 + worker)
        while want_kill():
            with lock:
                next_episode[0] += 1
                episode = next_episode[0]
                summary["episodes"] += 1
            out_dir = work / f"episode{episode:03d}"
            shutil.rmtree(out_dir, ignore_errors=True)
            cfg_path = work / f"episode{episode:03d}.yaml"
            cfg_path.write_text(yaml.safe_dump(tiny_config(out_dir, **config_kw)))
            run_dir = out_dir / run_name
            log_path = logs / f"episode{episode:03d}.log"
            first = True
            episode_kills = 0
            last_stage = None
            while True:
                # Once enough kills happened, let the episode finish (no further kill).
                delay = target = None
                if want_kill() and episode_kills < kills_per_episode:
                    if aim:
                        target = next_target(first, last_stage)
                    elif first:
                        _, lo, hi = phases[(episode - 1) % len(phases)]
                        delay = rng.uniform(lo, hi)
                    else:
                        delay = rng.uniform(0.0, t_ref)
                since = time.time() - 0.01
                if target is not None:
                    rc, killed, took, died_in = launch_aimed(
                        cfg_path, resume=not first, target=target, phase_file=work / f"episode{episode:03d}.phase",
                        log_path=log_path, rng=rng, mode=mode)
                    delay = took
                else:
                    rc, killed, took = launch(cfg_path, resume=not first, kill_after=delay, log_path=log_path,
                                              mode=mode)
                first = False
                with lock:
                    summary["launches"] += 1
                    if target is not None and not killed:
                        summary["missed_targets"] += 1
                if killed:
                    episode_kills += 1
                    stage = died_in if target is not None else stage_of(
                        run_dir, ref_cfg["train"]["epochs"], ref_cfg["methods"], since)
                    last_stage = stage
                    report = check_tree(out_dir)
                    n = sum(report["checked"].values())
                    with lock:
                        summary["kills"] += 1
                        k = summary["kills"]
                        summary["kill_delays_s"].append(round(delay, 2))
                        summary["stages"][stage] += 1
                        if aim:
                            summary["phases"][stage] += 1
                        summary["files_checked"] += n
                        summary["tmp_files_seen_after_kill"] += len(report["tmp"])
                        summary["corrupt_files"] += [f"kill {k}: {p}" for p in report["problems"]]
                    say(f"kill {k:3d} at {delay:5.1f} s ({stage}): {n} files parse"
                        + (f", {len(report['problems'])} CORRUPT" if report["problems"] else "")
                        + (f", {len(report['tmp'])} temp" if report["tmp"] else ""))
                    continue
                if rc != 0:
                    with lock:
                        summary["failed_resumes"].append(f"episode {episode}: exit {rc} (log {log_path})")
                    say(f"episode {episode}: resume FAILED with exit {rc}; see {log_path}")
                    break
                report = check_tree(out_dir)
                got = strip_wall_clock(json.loads((run_dir / "metrics.json").read_text()))
                d = diff(reference, got)
                with lock:
                    summary["completed_runs"] += 1
                    summary["files_checked"] += sum(report["checked"].values())
                    summary["corrupt_files"] += [f"episode {episode} end: {p}" for p in report["problems"]]
                    summary["tmp_files_left_at_end"] += len(report["tmp"])
                    if d:
                        summary["metrics_mismatches"].append(f"episode {episode}: " + "; ".join(d[:10]))
                say(f"episode {episode} finished ({took:.1f} s): metrics "
                    + ("EQUAL the reference" if not d else f"DIFFER in {len(d)} places: {d[:3]}"))
                break

    errors: list[BaseException] = []

    def guarded(worker: int) -> None:
        try:
            episode_loop(worker)
        except BaseException as exc:  # surfaced below; a dead worker must not pass silently
            errors.append(exc)

    threads = [threading.Thread(target=guarded, args=(w,)) for w in range(max(1, parallel))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    summary["stages"] = dict(sorted(summary["stages"].items()))
    summary["phases"] = {p: summary["phases"].get(p, 0) for p in PHASES} if aim else {}
    summary["every_phase_hit"] = (not aim) or all(v >= min_per_phase for v in summary["phases"].values())
    summary["ok"] = bool(
        summary["kills"] >= kills and not summary["corrupt_files"] and not summary["metrics_mismatches"]
        and not summary["failed_resumes"] and summary["completed_runs"] == summary["episodes"]
        and summary["every_phase_hit"]
    )
    return summary


def markdown(summary: dict[str, Any]) -> str:
    rows = [
        ("kills (SIGKILL) survived", summary["kills"] if summary["ok"] else f"{summary['kills']} (FAILED)"),
        ("launches / episodes / completed runs",
         f"{summary['launches']} / {summary['episodes']} / {summary['completed_runs']}"),
        ("files parsed after kills", summary["files_checked"]),
        ("corrupt or truncated files", len(summary["corrupt_files"])),
        ("resumed runs whose metrics differ from the uninterrupted run", len(summary["metrics_mismatches"])),
        ("resumes that failed", len(summary["failed_resumes"])),
        ("temp files seen after kills / left at the end",
         f"{summary['tmp_files_seen_after_kill']} / {summary['tmp_files_left_at_end']}"),
        ("uninterrupted run (s), launch mode, episodes at once",
         f"{summary['reference_seconds']}, {summary['mode']}, {summary['parallel']}"),
        ("kill points", ", ".join(f"{k}: {v}" for k, v in summary["stages"].items())),
    ]
    if summary.get("aimed"):
        rows.append((f"kills per aimed phase (>= {summary['min_per_phase']} each)",
                     ", ".join(f"{k}: {v}" for k, v in summary["phases"].items())
                     + ("" if summary["every_phase_hit"] else " (MISSING)")))
        rows.append(("launches that finished before their aimed phase", summary["missed_targets"]))
    return "| measure | value |\n| --- | --- |\n" + "\n".join(f"| {a} | {b} |" for a, b in rows)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:  # a launch of `--mode exec --aim`: PHASE_FILE TARGET shiftkit-args...
        _child(argv[3:], None, argv[1], argv[2])
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=20, help="kill at least this many times")
    parser.add_argument("--seed", type=int, default=0, help="seed of the kill delays")
    parser.add_argument("--work", type=Path, default=None, help="scratch folder (default: a temp dir)")
    parser.add_argument("--json", type=Path, default=None, help="write the summary here")
    parser.add_argument("--n-per-domain", type=int, default=60)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder")
    parser.add_argument("--mode", choices=("exec", "fork"), default="exec",
                        help="exec: a new `shiftkit` process per launch; fork: fork a pre-imported one")
    parser.add_argument("--parallel", type=int, default=1, help="episodes at once (one core each)")
    parser.add_argument("--kills-per-episode", type=int, default=4, help="then the episode is left to finish")
    parser.add_argument("--no-aim", dest="aim", action="store_false",
                        help="kill after random delays instead of inside each phase")
    parser.add_argument("--min-per-phase", type=int, default=3, help="kills inside each phase at least (aimed)")
    args = parser.parse_args(argv)

    import tempfile

    work = args.work or Path(tempfile.mkdtemp(prefix="shiftkit-crash-"))
    try:
        summary = run_campaign(work, kills=args.kills, seed=args.seed,
                               config_kw={"n_per_domain": args.n_per_domain, "epochs": args.epochs},
                               mode=args.mode, parallel=args.parallel,
                               kills_per_episode=args.kills_per_episode, aim=args.aim,
                               min_per_phase=args.min_per_phase)
    finally:
        if args.work is None and not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print()
    print(markdown(summary))
    for key in ("corrupt_files", "metrics_mismatches", "failed_resumes"):
        for line in summary[key]:
            print(f"{key}: {line}")
    if args.json:
        from shiftkit.datasets.files import atomic_write_text

        atomic_write_text(args.json, json.dumps(summary, indent=2) + "\n")
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
