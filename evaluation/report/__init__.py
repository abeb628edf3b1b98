"""Run reports: `metrics.json` (versioned schema), a self-contained `report.html` (plots embedded
as base64 PNG, no external files, scripts or network), and a terminal summary.

Schema (version 1.1, see docs/evaluation.md and :mod:`shiftkit.evaluation.results`, whose
:class:`RunResult` is the typed form every section is rendered from). Every section is
optional; unknown sections are kept in the JSON and rendered as tables in the HTML:

    {"schema_version": "1.1",
     "run": {...},                                  # free key/values: task, dataset, seed, ...
     "methods": {name: {"source": {...}, "target": {...}, "gap": {...}, ...}},
     "histories": {name: [{"epoch": 0, "train_loss": ..., ...}, ...]},
     "gap": {label: gap_summary},                   # e.g. {"before": ..., "after": ...}
     "layer_gap": {label: {layer: gap_summary}},
     "overfitting": {name: analyse_history(...)},
     "bias": {"audits": {name: audit(...).to_dict()}, "comparison": {...}},
     "selection": {"validator", "chosen", "candidates", "validators", "scores", ...},
     "warnings": ["...", ...]}

Privacy: reports carry aggregates only. Before anything is written, strings that look like
image/volume file paths and keys that name patient identifiers are replaced by "[removed]".

Modules: :mod:`.jsonable` (strict JSON, identifiers removed), :mod:`.figures` (automatic
figures), :mod:`.page` (the HTML page), :mod:`.terminal` (the text summary); this module writes
the two files. Every public name is importable from here.
"""

from __future__ import annotations

import copy
import datetime as _dt
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from shiftkit.datasets.errors import DataError
from shiftkit.datasets.files import atomic_write_bytes

from ..results import SCHEMA_VERSION, RunResult
from .figures import auto_figures
from .jsonable import REMOVED, to_jsonable
from .page import render_html, segmentation_section, selection_section
from .terminal import terminal_summary

__all__ = ["REMOVED", "SCHEMA_VERSION", "write_report", "terminal_summary", "to_jsonable", "render_html", "auto_figures",
           "segmentation_section", "selection_section"]


def write_report(
    run_dir: str | os.PathLike,
    metrics: Mapping[str, Any] | RunResult,
    *,
    history: Sequence[Mapping[str, Any]] | Mapping[str, Sequence[Mapping[str, Any]]] | None = None,
    figures: Mapping[str, Any] | None = None,
    title: str = "shiftkit report",
    auto: bool = True,
) -> tuple[Path, Path]:
    """Write `run_dir/metrics.json` and `run_dir/report.html`, each atomically (temp + os.replace).

    metrics: a :class:`RunResult`, or a dict of the schema in this module's docstring (any
    JSON-able dict works; unknown sections are rendered as tables). It is not modified: a
    sanitised copy gets "schema_version" and "generated_at" (UTC ISO 8601).
    history: one training history (list of epoch dicts; stored as histories["model"]) or
    {method: history}; merged into metrics["histories"].
    figures: extra {caption: matplotlib Figure | PNG bytes | path to a .png} embedded after
    the automatic ones (learning curves, before/after bars, gap, reliability, bias; see
    `auto_figures`; auto=False turns those off).
    Returns (json_path, html_path).
    """
    if isinstance(metrics, RunResult):
        metrics = metrics.to_dict()
    if not isinstance(metrics, Mapping):
        raise DataError(f"argument 'metrics' must be a RunResult or a dict; got {type(metrics).__name__}")
    run = Path(run_dir)
    run.mkdir(parents=True, exist_ok=True)
    data: dict[str, Any] = to_jsonable(copy.deepcopy(dict(metrics)))
    data["schema_version"] = SCHEMA_VERSION
    data.setdefault("generated_at", _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
    if history is not None:
        hist = dict(data.get("histories") or {})
        if isinstance(history, Mapping):
            hist.update(to_jsonable(dict(history)))
        else:
            hist["model"] = to_jsonable(list(history))
        data["histories"] = hist
    ordered = {"schema_version": data.pop("schema_version"), **data}
    result = RunResult.from_dict(ordered, run_dir=run)
    figs: dict[str, Any] = auto_figures(result) if auto else {}
    if figures:
        figs.update(figures)
    page = render_html(result, figs, title=title)
    json_path, html_path = run / "metrics.json", run / "report.html"
    atomic_write_bytes(json_path, (json.dumps(ordered, indent=2, allow_nan=False) + "\n").encode("utf-8"))
    atomic_write_bytes(html_path, page.encode("utf-8"))
    return json_path, html_path
