"""The report page: one self-contained HTML string (CSS inline, images as data: URIs, no
scripts), rendered section by section from a :class:`~shiftkit.evaluation.results.RunResult`."""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from typing import Any

from ..results import MethodResult, RunResult, SelectionSection
from ._common import _GAP_KEYS, _KEY_METRICS, _as_result, _flat, _is_scalar
from .figures import _png_b64

__all__ = ["render_html", "segmentation_section", "selection_section"]

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
    cols: list[str] = [k for k in _KEY_METRICS + _GAP_KEYS if any(k in r for r in d.values())]
    for r in d.values():
        cols += [k for k, v in r.items() if k not in cols and _is_scalar(v)]
    head = f'<th class="k">{html.escape(row_label)}</th>' + "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    body = "".join(
        f'<tr><td class="k">{html.escape(str(name))}</td>'
        + "".join(f"<td>{_fmt(r.get(c))}</td>" for c in cols) + "</tr>"
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


def _safety_note(extra: Mapping[str, Any]) -> str:
    """What the safety rule decided (proposed vs deployed, and why), when the run recorded it."""
    safety = extra.get("safety")
    if not isinstance(safety, Mapping):
        return ""
    verdict = "fell back" if safety.get("fell_back") else "kept the proposal"
    policy = f" (policy {html.escape(str(extra['policy']))})" if extra.get("policy") else ""
    return (f"<p>proposed: <b>{html.escape(str(extra.get('proposed')))}</b>; safety rule{policy} {verdict}: "
            f"{html.escape(str(safety.get('reason', '')))}</p>")


def selection_section(selection: SelectionSection | None) -> str:
    """The ``auto`` method's label-free model selection: one row per validator (its choice, the
    choice's score, Spearman with the true target metric, regret), the chooser first, then the
    candidates' scores per validator and their true target metric."""
    if selection is None:
        return ""
    chooser = selection.validator
    rows = {(f"{v} (chooses)" if v == chooser else v): r for v, r in selection.validator_rows().items()}
    out = (f"<h3>Label-free model selection (auto)</h3><p>chosen: <b>{html.escape(selection.chosen)}</b>"
           f" by {html.escape(chooser)}; regret and Spearman against the "
           f"{html.escape(selection.true_metric)} (reported, never used to choose)</p>"
           + _safety_note(selection.extra) + _matrix_table(rows, "validator"))
    if selection.scores and selection.true_target:
        out += ("<h3>Candidates (validator scores, higher = better)</h3>"
                + _matrix_table(selection.candidate_rows(), "candidate"))
    return out


def segmentation_section(metrics: Mapping[str, Any] | RunResult) -> str:
    """Per-class IoU of every method on each split as one visible table (rows = classes, named
    when the run knows the names, e.g. road, sky, ...; columns = method / split). Empty string
    when no method reports ``per_class_iou``."""
    result = _as_result(metrics)
    cols: dict[str, Mapping[str, Any]] = {
        f"{name} / {split}": ious for name, m in result.methods.items() for split, ious in m.per_class_iou().items()
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
    details += [(k, getattr(result, k).to_dict()) for k in ("gap", "overfitting", "bias", "selection")
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
