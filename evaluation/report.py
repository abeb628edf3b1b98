"""Run reports: `metrics.json` (versioned schema), a self-contained `report.html` (plots embedded
as base64 PNG, no external files, scripts or network), and a terminal summary.

Schema (version 1.0, see docs/evaluation.md and :mod:`shiftkit.evaluation.results`, whose
:class:`RunResult` is the typed form every section is rendered from). Every section is
optional; unknown sections are kept in the JSON and rendered as tables in the HTML:

    {"schema_version": "1.0",
     "run": {...},                                  # free key/values: task, dataset, seed, ...
     "methods": {name: {"source": {...}, "target": {...}, "gap": {...}, ...}},
     "histories": {name: [{"epoch": 0, "train_loss": ..., ...}, ...]},
     "gap": {label: gap_summary},                   # e.g. {"before": ..., "after": ...}
     "layer_gap": {label: {layer: gap_summary}},
     "overfitting": {name: analyse_history(...)},
     "bias": audit(...).to_dict() or {name: ...},
     "warnings": ["...", ...]}

Privacy: reports carry aggregates only. Before anything is written, strings that look like
image/volume file paths and keys that name patient identifiers are replaced by "[removed]".
"""

from __future__ import annotations

import base64
import copy
import dataclasses
import datetime as _dt
import html
import json
import math
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from shiftkit.datasets.errors import DataError
from shiftkit.datasets.files import atomic_write_bytes

from . import plots
from .results import SCHEMA_VERSION, MethodResult, RunResult

__all__ = ["SCHEMA_VERSION", "write_report", "terminal_summary", "to_jsonable", "render_html", "auto_figures",
           "segmentation_section"]

# Keys whose values would identify a patient or point at a patient's file.
_ID_KEYS = {"image", "mask", "path", "paths", "file", "filename", "patient", "patient_id", "patientid",
            "study_id", "studyid", "accession", "accession_number", "mrn", "subject_id", "dob",
            "birth_date", "name", "patient_name"}
_IMAGE_PATH = re.compile(
    r"\.(png|jpe?g|dcm|dicom|nii(\.gz)?|tiff?|bmp|gif|nrrd|mha|mhd)$", re.IGNORECASE
)
REMOVED = "[removed]"

# Scalar metrics shown first in tables and in the terminal summary, in this order.
_KEY_METRICS = ("accuracy", "balanced_accuracy", "auroc", "ece", "miou", "mean_dice", "pixel_accuracy",
                "fpr", "fnr", "n")
_GAP_KEYS = ("mmd2", "mmd_p_value", "proxy_a_distance", "frechet", "coral", "mean_l2")


# ----------------------------------------------------------------------------- JSON


def to_jsonable(obj: Any, *, _key: str | None = None) -> Any:
    """Recursively convert to strict JSON types: numpy scalars/arrays to numbers/lists, NaN and
    infinities to None, Paths to str, dataclasses / objects with `to_dict` to dicts; identifier
    keys and image-file-path strings become "[removed]"."""
    if _key is not None and _key.lower() in _ID_KEYS:
        return REMOVED
    if obj is None or isinstance(obj, bool):
        return obj
    if isinstance(obj, (np.bool_,)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        f = float(obj)
        return f if math.isfinite(f) else None
    if isinstance(obj, (str, Path)):
        s = str(obj)
        return REMOVED if _IMAGE_PATH.search(s.strip()) else s
    if hasattr(obj, "to_dict") and callable(obj.to_dict) and not isinstance(obj, Mapping):
        return to_jsonable(obj.to_dict())
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return to_jsonable(dataclasses.asdict(obj))
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if hasattr(obj, "detach") and hasattr(obj, "tolist"):  # torch tensor
        return to_jsonable(obj.detach().cpu().tolist())
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v, _key=str(k)) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set)):
        return [to_jsonable(v) for v in obj]
    return str(obj)


# ----------------------------------------------------------------------------- figures


def _as_result(metrics: Mapping[str, Any] | RunResult) -> RunResult:
    return metrics if isinstance(metrics, RunResult) else RunResult.from_dict(metrics)


def auto_figures(metrics: Mapping[str, Any] | RunResult) -> dict[str, Any]:
    """The figures a run result supports on its own: learning curves, method comparison,
    gap bars (per method and before/after), layer gap profile, reliability diagrams, bias bars.
    Returns {title: Figure}."""
    from .calibration import plot_reliability

    result = _as_result(metrics)
    figs: dict[str, Any] = {}
    if result.histories:
        f = plots.learning_curves_figure(dict(result.histories))
        if f is not None:
            figs["Learning curves"] = f
    if result.methods:
        f = plots.comparison_bar_figure({k: m.to_dict() for k, m in result.methods.items()})
        if f is not None:
            figs["Before / after: task metrics per method"] = f
        gaps = result.method_gaps()
        f = plots.gap_bars_figure(gaps) if gaps else None
        if f is not None:
            figs["Domain gap per method"] = f
        for split in ("source", "target"):
            curves = result.reliability(split)
            if curves:
                figs[f"Reliability diagram ({split})"] = plot_reliability(curves, title=f"reliability, {split}")
    gap = result.gap
    if gap is not None and any(isinstance(v, Mapping) for v in gap.values()):
        f = plots.gap_bars_figure({k: v for k, v in gap.items() if isinstance(v, Mapping)})
        if f is not None:
            figs["Domain gap before / after"] = f
    metrics = result.extra
    layer_gap = metrics.get("layer_gap")
    if isinstance(layer_gap, Mapping):
        f = plots.layer_gap_figure(layer_gap)
        if f is not None:
            figs["Per-layer gap profile"] = f
    ov = result.overfitting
    if ov:
        analyses = ov if all(isinstance(v, Mapping) for v in ov.values()) and "best_epoch" not in ov else {"model": ov}
        f = plots.epoch_gaps_figure(analyses)
        if f is not None:
            figs["Gaps per epoch (star = chosen epoch, source validation)"] = f
    de = metrics.get("data_efficiency")
    if isinstance(de, (Mapping, list)) and de:
        from .overfitting import data_efficiency_figure

        try:
            curves = de.get("curves", de) if isinstance(de, Mapping) else de
            if isinstance(curves, Mapping) and all(isinstance(c, Mapping) and "n" in c for c in curves.values()):
                curves = [{"init": k, "n_labelled": n, "score": m}
                          for k, c in curves.items() for n, m in zip(c["n"], c["mean"], strict=True)]
            figs["Data efficiency on the target"] = data_efficiency_figure(curves)
        except DataError:
            pass  # a section of another shape: shown as a table only
    if result.bias is not None:
        try:
            from .bias import plot_audit
        except ImportError:  # bias module optional while it is built
            plot_audit = None
        if plot_audit is not None:
            figs.update(plot_audit(result.bias))
    return figs


def _png_b64(fig: Any) -> str:
    if isinstance(fig, (bytes, bytearray)):
        data = bytes(fig)
    elif isinstance(fig, (str, Path)):
        p = Path(fig)
        if p.suffix.lower() != ".png" or not p.is_file():
            raise DataError(f"figure file {p} must be an existing .png file")
        data = p.read_bytes()
    elif hasattr(fig, "savefig"):
        data = plots.figure_to_png(fig)
    else:
        raise DataError(f"figure of type {type(fig).__name__} is not a Figure, PNG bytes or a .png path")
    return base64.b64encode(data).decode("ascii")


# ----------------------------------------------------------------------------- HTML

_CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px auto;max-width:1200px;
color:#1d2330;background:#fff;line-height:1.4}
h1{font-size:1.6em;margin-bottom:0}h2{border-bottom:2px solid #dfe3ea;padding-bottom:4px;margin-top:32px}
.sub{color:#5b6475;margin-top:4px}
table{border-collapse:collapse;margin:8px 0 16px 0;font-size:0.88em;display:block;overflow-x:auto;max-width:100%}
th,td{border:1px solid #d5dae3;padding:4px 8px;text-align:right}th{background:#eef1f6}
td.k,th.k{text-align:left}
.warn{background:#fff4e0;border-left:4px solid #f0a020;padding:8px 12px;margin:8px 0}
figure{margin:12px 0}figcaption{font-weight:600;margin-bottom:4px}
img{max-width:100%;border:1px solid #e3e6ec}
details{margin:6px 0}summary{cursor:pointer;font-weight:600}
.na{color:#9aa2b1}
"""


def _fmt(v: Any) -> str:
    if v is None:
        return '<span class="na">n/a</span>'
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        if not math.isfinite(v):
            return '<span class="na">n/a</span>'
        a = abs(v)
        return f"{v:.3g}" if (a != 0 and (a < 1e-3 or a >= 1e5)) else f"{v:.4f}".rstrip("0").rstrip(".") or "0"
    if isinstance(v, list):
        if len(v) > 20:
            return html.escape(f"[{len(v)} values]")
        if all(not isinstance(x, (Mapping, list)) for x in v):
            return ", ".join(_fmt(x) for x in v)
        return html.escape(f"[{len(v)} items]")
    return html.escape(str(v))


def _is_scalar(v: Any) -> bool:
    return v is None or isinstance(v, (int, float, str, bool))


def _flat(d: Mapping[str, Any], prefix: str = "", depth: int = 3) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping) and depth > 0:
            out.update(_flat(v, key + ".", depth - 1))
        else:
            out[key] = v
    return out


def _kv_table(d: Mapping[str, Any]) -> str:
    rows = "".join(f'<tr><td class="k">{html.escape(k)}</td><td>{_fmt(v)}</td></tr>' for k, v in _flat(d).items())
    return f"<table>{rows}</table>"


def _records_table(rows: Sequence[Mapping[str, Any]]) -> str:
    cols: list[str] = []
    for r in rows:
        for k, v in r.items():
            if k not in cols and not isinstance(v, (Mapping, list)):
                cols.append(k)
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    body = "".join("<tr>" + "".join(f"<td>{_fmt(r.get(c))}</td>" for c in cols) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _matrix_table(d: Mapping[str, Mapping[str, Any]], row_label: str = "") -> str:
    """Rows = keys of d; columns = scalar keys of the inner dicts (key metrics first)."""
    cols: list[str] = [k for k in _KEY_METRICS + _GAP_KEYS if any(isinstance(r, Mapping) and k in r for r in d.values())]
    for r in d.values():
        if isinstance(r, Mapping):
            cols += [k for k, v in r.items() if k not in cols and _is_scalar(v)]
    head = f'<th class="k">{html.escape(row_label)}</th>' + "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    body = "".join(
        f'<tr><td class="k">{html.escape(str(name))}</td>'
        + "".join(f"<td>{_fmt(r.get(c)) if isinstance(r, Mapping) else ''}</td>" for c in cols) + "</tr>"
        for name, r in d.items()
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def _render_value(v: Any) -> str:
    """Generic renderer for a section of unknown shape."""
    if isinstance(v, Mapping):
        inner = list(v.values())
        if inner and all(isinstance(x, Mapping) for x in inner) and all(
            all(_is_scalar(y) for y in x.values()) for x in inner
        ):
            return _matrix_table(v)
        scalars = {k: x for k, x in v.items() if not isinstance(x, (Mapping, list)) or
                   (isinstance(x, list) and all(_is_scalar(y) for y in x))}
        parts = [_kv_table(scalars)] if scalars else []
        for k, x in v.items():
            if k in scalars:
                continue
            parts.append(f"<details><summary>{html.escape(str(k))}</summary>{_render_value(x)}</details>")
        return "".join(parts)
    if isinstance(v, list):
        if v and all(isinstance(x, Mapping) for x in v):
            return _records_table(v)
        return f"<p>{_fmt(v)}</p>"
    return f"<p>{_fmt(v)}</p>"


def _methods_section(methods: Mapping[str, MethodResult]) -> str:
    rows = {f"{name} / {split}": m.scalars(split) for name, m in methods.items() for split in m.splits}
    gaps = {name: m.gap for name, m in methods.items() if m.gap is not None}
    out = ""
    if rows:
        out += "<h3>Task metrics (method / split)</h3>" + _matrix_table(rows, "method / split")
    if gaps:
        out += "<h3>Domain gap on features</h3>" + _matrix_table(gaps, "method")
    return out


def _safety_note(selection: Mapping[str, Any]) -> str:
    """What the safety rule decided (proposed vs deployed, and why), when the run recorded it."""
    safety = selection.get("safety")
    if not isinstance(safety, Mapping):
        return ""
    proposed = html.escape(str(selection.get("proposed", selection.get("chosen"))))
    verdict = "fell back" if safety.get("fell_back") else "kept the proposal"
    return (f"<p>proposed: <b>{proposed}</b>; safety rule {verdict}: {html.escape(str(safety.get('reason', '')))}"
            "</p>")


def selection_section(selection: Mapping[str, Any] | None) -> str:
    """The ``auto`` method's label-free model selection: one row per validator (its choice, the
    choice's score, Spearman with the true target metric, regret), the chooser first, then the
    candidates' scores per validator and their true target metric."""
    if not isinstance(selection, Mapping) or not isinstance(selection.get("validators"), Mapping):
        return ""
    chooser = selection.get("validator")
    validators = dict(selection["validators"])
    order = sorted(validators, key=lambda v: v != chooser)
    rows = {(f"{v} (chooses)" if v == chooser else v): validators[v] for v in order}
    out = (f"<h3>Label-free model selection (auto)</h3><p>chosen: <b>{html.escape(str(selection.get('chosen')))}</b>"
           f" by {html.escape(str(chooser))}; regret and Spearman against the "
           f"{html.escape(str(selection.get('true_metric', 'true target metric')))} (reported, never used to choose)</p>"
           + _safety_note(selection) + _matrix_table(rows, "validator"))
    scores, truth = selection.get("scores"), selection.get("true_target")
    if isinstance(scores, Mapping) and isinstance(truth, Mapping):
        cands = {c: {**{v: s.get(c) for v, s in scores.items() if isinstance(s, Mapping)}, "true target": truth.get(c)}
                 for c in selection.get("candidates", list(truth))}
        out += "<h3>Candidates (validator scores, higher = better)</h3>" + _matrix_table(cands, "candidate")
    return out


def segmentation_section(metrics: Mapping[str, Any] | RunResult) -> str:
    """Per-class IoU of every method on each split as one visible table (rows = classes, named
    when the run knows the names, e.g. road, sky, ...; columns = method / split). Empty string
    when no method reports ``per_class_iou``."""
    result = _as_result(metrics)
    cols: dict[str, Mapping[str, Any]] = {
        f"{name} / {split}": vals["per_class_iou"]
        for name, m in result.methods.items() for split, vals in m.splits.items()
        if isinstance(vals.get("per_class_iou"), Mapping)
    }
    if not cols:
        return ""
    classes: list[str] = []
    for c in cols.values():
        classes += [k for k in c if k not in classes]
    head = '<th class="k">class</th>' + "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    body = "".join(f'<tr><td class="k">{html.escape(str(k))}</td>'
                   + "".join(f"<td>{_fmt(c.get(k))}</td>" for c in cols.values()) + "</tr>" for k in classes)
    return ("<h3>Per-class IoU (n/a: class absent from truth and prediction)</h3>"
            f"<table class='per-class-iou'><tr>{head}</tr>{body}</table>")


def render_html(metrics: Mapping[str, Any] | RunResult, figures: Mapping[str, Any], *,
                title: str = "shiftkit report") -> str:
    """The report page as one HTML string (CSS inline, images as data: URIs, no scripts).

    Sections come from the :class:`RunResult` (a metrics dict is read with ``from_dict``):
    warnings, run, results per method, figures, then every other section in detail, then the
    training histories.
    """
    result = _as_result(metrics)
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        f"<p class='sub'>metrics schema {html.escape(result.schema_version)}"
        f" &middot; generated {html.escape(result.generated_at or '')}"
        " &middot; aggregate numbers only, no patient-level data</p>",
    ]
    if result.warnings:
        parts.append("<h2>Warnings</h2>" + "".join(f"<div class='warn'>{html.escape(w)}</div>" for w in result.warnings))
    if result.run:
        parts.append("<h2>Run</h2>" + _kv_table(result.run))
    if result.methods:
        parts.append("<h2>Results</h2>" + _methods_section(result.methods) + segmentation_section(result)
                     + selection_section(result.selection))
    if figures:
        parts.append("<h2>Figures</h2>")
        for cap, fig in figures.items():
            parts.append(f"<figure><figcaption>{html.escape(str(cap))}</figcaption>"
                         f"<img alt='{html.escape(str(cap))}' src='data:image/png;base64,{_png_b64(fig)}'></figure>")
    details: list[tuple[str, Any]] = []
    if result.methods:
        details.append(("methods", {k: m.to_dict() for k, m in result.methods.items()}))
    details += [(k, getattr(result, k)) for k in ("gap", "overfitting", "bias", "selection")
                if getattr(result, k) is not None]
    details += list(result.extra.items())
    if details:
        parts.append("<h2>Details</h2>")
        for k, v in details:
            parts.append(f"<details{' open' if k != 'methods' else ''}><summary>{html.escape(str(k))}</summary>"
                         f"{_render_value(v)}</details>")
    if result.histories:
        parts.append("<h2>Training histories</h2>")
        for name, h in result.histories.items():
            parts.append(f"<details><summary>{html.escape(name)} ({len(h)} epochs)</summary>"
                         f"{_records_table([r for r in h if isinstance(r, Mapping)])}</details>")
    parts.append("</body></html>")
    return "\n".join(parts)


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


# ----------------------------------------------------------------------------- terminal


def _tf(v: Any) -> str:
    if isinstance(v, bool) or v is None:
        return "n/a" if v is None else str(v)
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return "n/a" if not math.isfinite(v) else (f"{v:.3g}" if abs(v) and abs(v) < 1e-3 else f"{v:.3f}")
    return str(v)


def _text_table(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
    line = "  ".join(h.ljust(w) for h, w in zip(header, widths, strict=False))
    out = [line, "  ".join("-" * w for w in widths)]
    out += ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=False))) for r in rows]
    return out


def terminal_summary(metrics: Mapping[str, Any] | RunResult) -> str:
    """A plain-text summary (no colour codes): run line, method x split table of key metrics,
    gap table, overfitting and bias highlights, warnings. Works on any metrics dict."""
    m = to_jsonable(metrics.to_dict() if isinstance(metrics, RunResult) else dict(metrics))
    result = RunResult.from_dict(m)
    lines = [f"shiftkit report (schema {m.get('schema_version', SCHEMA_VERSION)})"]
    if result.run:
        lines.append("run: " + ", ".join(f"{k}={_tf(v)}" for k, v in _flat(result.run).items() if _is_scalar(v)))
    shown = False
    if result.methods:
        cols = [k for k in _KEY_METRICS if any(k in s for r in result.methods.values() for s in r.splits.values())]
        rows = [[name, split] + [_tf(vals.get(k)) for k in cols]
                for name, r in result.methods.items() for split, vals in r.splits.items()] if cols else []
        gaps = [[name] + [_tf(g.get(k)) for k in _GAP_KEYS] for name, g in result.method_gaps().items()]
        if rows:
            lines += [""] + _text_table(["method", "split"] + cols, rows)
            shown = True
        if gaps:
            lines += ["", "domain gap on features:"] + _text_table(["method", *_GAP_KEYS], gaps)
            shown = True
    gap = result.gap
    if not result.method_gaps() and gap is not None and any(isinstance(v, Mapping) for v in gap.values()):
        rows = [[k] + [_tf(v.get(c)) for c in _GAP_KEYS] for k, v in gap.items() if isinstance(v, Mapping)]
        lines += ["", "domain gap:"] + _text_table(["", *_GAP_KEYS], rows)
        shown = True
    ov = result.overfitting
    if ov is not None:
        items = ov.items() if all(isinstance(v, Mapping) for v in ov.values()) else [("model", ov)]
        for name, a in items:
            if isinstance(a, Mapping) and "best_epoch" in a:
                lines.append(f"overfitting [{name}]: best epoch {_tf(a.get('best_epoch'))}"
                             f" ({a.get('monitor', 'val')}); {a.get('advice', '')}".rstrip("; "))
                lines += [f"  ! {w}" for w in a.get("warnings") or []]
                shown = True
    sel = result.selection
    if isinstance(sel, Mapping) and isinstance(sel.get("validators"), Mapping):
        rows = [[v, str(r.get("choice")), _tf(r.get("score")), _tf(r.get("spearman")), _tf(r.get("regret"))]
                for v, r in sel["validators"].items() if isinstance(r, Mapping)]
        lines += ["", f"auto: chose {sel.get('chosen')} by {sel.get('validator')} (label-free); "
                      f"spearman / regret vs {sel.get('true_metric', 'the true target metric')}:"]
        lines += _text_table(["validator", "choice", "score", "spearman", "regret"], rows)
        shown = True
    if result.bias is not None:
        try:
            from .bias import summary_lines
        except ImportError:
            summary_lines = None
        if summary_lines is not None:
            bl = summary_lines(result.bias)
            if bl:
                lines += [""] + bl
                shown = True
    if not shown:
        flat = {k: v for k, v in _flat({k: v for k, v in m.items() if k not in ("histories",)}).items()
                if _is_scalar(v) and k not in ("schema_version",)}
        lines += [f"{k}: {_tf(v)}" for k, v in list(flat.items())[:40]]
        if len(flat) > 40:
            lines.append(f"... {len(flat) - 40} more values in metrics.json")
    if result.warnings:
        lines += ["", "warnings:"] + [f"  - {w}" for w in result.warnings]
    return "\n".join(lines)
