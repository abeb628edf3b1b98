"""Overfitting diagnostics from a training history, and a data-efficiency curve helper.

A history is a list of per-epoch dicts as `shiftkit.adapt.training.trainer.train` writes them:
{"epoch", "train_loss", "train_acc", "val_loss", "val_acc", "val_auroc", "target_loss",
"target_acc", ...}. Any key may be missing in any epoch.

Model selection uses source validation only. Target metrics in a history are reported beside
it ("target at the chosen epoch", and the oracle epoch labelled as such) and never drive a
choice: a hospital adapting to a new site has no target labels to choose with.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from shiftkit.datasets.errors import DataError

__all__ = ["analyse_history", "count_parameters", "data_efficiency", "data_efficiency_figure"]

_HIGHER_BETTER_SUFFIXES = ("_acc", "_accuracy", "_auroc", "_miou", "_dice", "_f1", "_balanced_accuracy")


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) and math.isfinite(float(v))


def _col(history: Sequence[Mapping[str, Any]], key: str) -> np.ndarray:
    return np.array([float(r[key]) if _is_num(r.get(key)) else np.nan for r in history])


def _slope(y: np.ndarray) -> float:
    ok = np.isfinite(y)
    if ok.sum() < 2:
        return math.nan
    x = np.arange(len(y))[ok]
    return float(np.polyfit(x, y[ok], 1)[0])


def count_parameters(model: Any, trainable_only: bool = True) -> int:
    """Number of (trainable) parameters of a torch module."""
    return int(sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only))


def analyse_history(
    history: Sequence[Mapping[str, Any]],
    *,
    monitor: str | None = None,
    patience: int = 5,
    min_delta: float = 0.0,
    window: int | None = None,
    n_params: int | None = None,
    n_samples: int | None = None,
    params_per_sample_warn: float = 100.0,
    sample_unit: str = "labelled images",
) -> dict[str, Any]:
    """Diagnose one training run.

    monitor: the source-validation series to select on (default "val_loss" if present, else
    "val_acc"/"val_auroc"); lower is better for *_loss, higher for accuracy-like keys.
    patience / min_delta: the early-stopping rule whose outcome is reported (the epoch where it
    would have stopped). window: epochs at the end used for trend warnings (default max(3, n//3)).
    n_params / n_samples: model size and number of labelled training samples, for the
    small-data warning (n_params / n_samples > params_per_sample_warn). sample_unit names what
    n_samples counts ("labelled images" for classification; a segmenter learns from each labelled
    pixel, so segmentation passes the labelled-pixel count and "labelled pixels").

    Returns a JSON-ready dict: n_epochs, monitor, mode, best_epoch, best_value, stop_epoch
    (early stopping), epochs_after_best, curves {key: [values]}, generalisation_gap
    (val_loss - train_loss per epoch), accuracy_gap (train_acc - val_acc), domain_gap
    (val_acc - target_acc, when target_acc exists), target_at_best_epoch, oracle_best_epoch
    (target-selected; information only), advice (str), warnings (list of str).
    """
    if not isinstance(history, Sequence) or isinstance(history, (str, bytes)):
        raise DataError("argument 'history' must be a list of per-epoch dicts")
    rows = [r for r in history if isinstance(r, Mapping)]
    if len(rows) != len(history):
        raise DataError("argument 'history': every entry must be a dict (one per epoch)")
    if not rows:
        raise DataError("argument 'history' is empty")
    keys = sorted({k for r in rows for k in r if k != "epoch" and any(_is_num(x.get(k)) for x in rows)})
    pre_warnings: list[str] = []
    if monitor is None:
        monitor = next((k for k in ("val_loss", "val_acc", "val_auroc", "val_miou", "train_loss") if k in keys), None)
        if monitor is None:
            # Nothing to select on (e.g. a method without an iterative fit): report, do not fail.
            return {"n_epochs": len(rows), "monitor": None, "keys": keys,
                    "advice": "no loss or validation series in the history; nothing to analyse",
                    "warnings": []}
        if not monitor.startswith("val"):
            pre_warnings.append(f"no source-validation series in the history; {monitor} monitored instead, "
                                "which cannot show overfitting")
    elif monitor not in keys:
        raise DataError(f"monitor {monitor!r} is not a numeric key of the history; keys: {keys}")
    if monitor.startswith("target"):
        raise DataError("monitor must not be a target series: selecting with target labels leaks them; "
                        "use analyse_history(...)['oracle_best_epoch'] for an explicitly labelled oracle")
    mode = "min" if monitor.endswith("loss") else "max"
    epochs = [int(r["epoch"]) if _is_num(r.get("epoch")) else i for i, r in enumerate(rows)]
    mon = _col(rows, monitor)
    if not np.isfinite(mon).any():
        raise DataError(f"monitor {monitor!r} has no finite value")
    score = mon if mode == "max" else -mon
    best_i = int(np.nanargmax(score))
    # Early stopping as a trainer would run it: stop after `patience` epochs without improvement.
    best_so_far, since, stop_i = -math.inf, 0, len(rows) - 1
    for i, v in enumerate(score):
        if np.isfinite(v) and v > best_so_far + min_delta:
            best_so_far, since = v, 0
        else:
            since += 1
            if since >= patience:
                stop_i = i
                break
    n = len(rows)
    win = window or max(3, n // 3)
    out: dict[str, Any] = {
        "n_epochs": n,
        "monitor": monitor,
        "mode": mode,
        "best_epoch": epochs[best_i],
        "best_value": float(mon[best_i]),
        "stop_epoch": epochs[stop_i],
        "epochs_after_best": n - 1 - best_i,
        "curves": {k: [None if not np.isfinite(v) else float(v) for v in _col(rows, k)] for k in keys},
        "epochs": epochs,
    }
    tl, vl = _col(rows, "train_loss"), _col(rows, "val_loss")
    if np.isfinite(tl).any() and np.isfinite(vl).any():
        out["generalisation_gap"] = [None if not np.isfinite(v) else float(v) for v in vl - tl]
    ta, va = _col(rows, "train_acc"), _col(rows, "val_acc")
    if np.isfinite(ta).any() and np.isfinite(va).any():
        out["accuracy_gap"] = [None if not np.isfinite(v) else float(v) for v in ta - va]
    tga = _col(rows, "target_acc")
    if np.isfinite(tga).any() and np.isfinite(va).any():
        out["domain_gap"] = [None if not np.isfinite(v) else float(v) for v in va - tga]
    target_keys = [k for k in keys if k.startswith("target_")]
    if target_keys:
        out["target_at_best_epoch"] = {k: out["curves"][k][best_i] for k in target_keys}
        tkey = next((k for k in ("target_acc", "target_auroc", "target_miou", "target_loss") if k in target_keys),
                    target_keys[0])
        tcol = _col(rows, tkey)
        if np.isfinite(tcol).any():
            t_best = int(np.nanargmin(tcol) if tkey.endswith("loss") else np.nanargmax(tcol))
            out["oracle_best_epoch"] = {"key": tkey, "epoch": epochs[t_best], "value": float(tcol[t_best]),
                                        "note": "selected WITH target labels: an oracle, not a valid model choice"}

    warnings: list[str] = list(pre_warnings)
    tail = slice(max(0, n - win), n)
    tr_s, va_s = _slope(tl[tail]), _slope(vl[tail])
    if np.isfinite(tr_s) and np.isfinite(va_s) and tr_s < 0 < va_s and n >= 3:
        warnings.append(f"validation loss rises (slope {va_s:+.3g}/epoch) while training loss falls "
                        f"({tr_s:+.3g}/epoch) over the last {min(win, n)} epochs: overfitting")
    if "accuracy_gap" in out:
        gap_last = out["accuracy_gap"][-1]
        if gap_last is not None and gap_last > 0.15:
            warnings.append(f"train accuracy exceeds validation accuracy by {gap_last:.2f} at the last epoch")
    if n_params is not None and n_samples is not None:
        if n_samples <= 0:
            raise DataError(f"argument 'n_samples' must be positive; got {n_samples}")
        ratio = n_params / n_samples
        out["params_per_sample"] = float(ratio)
        out["n_samples"] = int(n_samples)
        out["sample_unit"] = sample_unit
        if ratio > params_per_sample_warn:
            per = sample_unit.split()[-1].rstrip("s")
            warnings.append(f"{n_params:,} parameters for {n_samples:,} {sample_unit} ({ratio:,.0f} per {per}): "
                            "small data for this model; prefer a smaller backbone, a linear probe / frozen "
                            "encoder, stronger augmentation or early stopping")
    if best_i == n - 1:
        advice = f"{monitor} still improving at the last epoch ({epochs[-1]}): train longer"
    elif stop_i < n - 1:
        advice = (f"early stopping (patience {patience}) would stop at epoch {epochs[stop_i]} and keep epoch "
                  f"{epochs[best_i]}; {n - 1 - stop_i} epoch(s) could be saved")
    else:
        advice = f"keep the checkpoint of epoch {epochs[best_i]} (best {monitor})"
    out["advice"] = advice
    out["warnings"] = warnings
    return out


def data_efficiency(results: Any) -> dict[str, Any]:
    """Normalise data-efficiency results computed by the caller.

    results: {init: {n_labelled: score}} (e.g. {"from_source": {10: 0.71, 50: 0.80},
    "from_scratch": {...}}) or a list of {"init", "n_labelled", "score"} records (several
    records per point are averaged; their SD is kept). Returns {"curves": {init: {"n": [...],
    "mean": [...], "sd": [...]}}, "labels_to_match": {...}}: for each init other than the first,
    the smallest n at which it reaches the first init's score at its smallest n (how many
    labels the first init saves), or None. Its own output is accepted too (the curves' means).
    """
    recs: list[tuple[str, float, float]] = []
    if isinstance(results, Mapping) and isinstance(results.get("curves"), Mapping):  # this function's own output
        results = [{"init": k, "n_labelled": n, "score": m} for k, c in results["curves"].items()
                   for n, m in zip(c["n"], c["mean"], strict=True)]
    if isinstance(results, Mapping):
        for init, pts in results.items():
            if not isinstance(pts, Mapping):
                raise DataError(f"results[{init!r}] must map n_labelled -> score")
            recs += [(str(init), float(k), float(v)) for k, v in pts.items()]
    elif isinstance(results, Sequence):
        for i, r in enumerate(results):
            try:
                recs.append((str(r["init"]), float(r["n_labelled"]), float(r["score"])))
            except (KeyError, TypeError, ValueError) as exc:
                raise DataError(f"results[{i}] needs keys init, n_labelled, score: {exc}") from exc
    else:
        raise DataError("results must be a dict {init: {n: score}} or a list of records")
    if not recs:
        raise DataError("results are empty")
    curves: dict[str, dict[str, list[float]]] = {}
    for init in dict.fromkeys(r[0] for r in recs):
        ns = sorted({r[1] for r in recs if r[0] == init})
        vals = [[r[2] for r in recs if r[0] == init and r[1] == n] for n in ns]
        curves[init] = {"n": ns, "mean": [float(np.mean(v)) for v in vals],
                        "sd": [float(np.std(v, ddof=1)) if len(v) > 1 else 0.0 for v in vals]}
    inits = list(curves)
    match: dict[str, Any] = {}
    ref = curves[inits[0]]
    for other in inits[1:]:
        c = curves[other]
        hit = next((n for n, m in zip(c["n"], c["mean"], strict=True) if m >= ref["mean"][0]), None)
        match[other] = {"reference": inits[0], "reference_n": ref["n"][0], "reference_score": ref["mean"][0],
                        "n_to_match": hit}
    return {"curves": curves, "labels_to_match": match}


def data_efficiency_figure(results: Any, *, metric: str = "target score", title: str | None = None):
    """Target performance against the number of labelled target images, one line per
    initialisation (e.g. fine-tuned from source vs from scratch), log x-axis, SD bands."""
    from .plots import new_figure

    d = data_efficiency(results)
    fig, ax = new_figure((6.0, 4.0))
    for init, c in d["curves"].items():
        n, m, sd = np.array(c["n"]), np.array(c["mean"]), np.array(c["sd"])
        ax.plot(n, m, marker="o", label=init)
        if sd.any():
            ax.fill_between(n, m - sd, m + sd, alpha=0.2)
    ax.set_xscale("log")
    ax.set_xlabel("labelled target images")
    ax.set_ylabel(metric)
    ax.set_title(title or "data efficiency on the target domain")
    ax.legend(fontsize=8)
    return fig
