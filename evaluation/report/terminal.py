"""The plain-text run summary printed by the CLI (no colour codes)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from ..results import SCHEMA_VERSION, RunResult
from ._common import _GAP_KEYS, _KEY_METRICS, _flat, _is_scalar
from .jsonable import to_jsonable

__all__ = ["terminal_summary"]


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
    if not result.method_gaps() and gap is not None and gap.summaries:
        rows = [[k] + [_tf(v.get(c)) for c in _GAP_KEYS] for k, v in gap.summaries.items()]
        lines += ["", "domain gap:"] + _text_table(["", *_GAP_KEYS], rows)
        shown = True
    if result.overfitting is not None:
        for name, a in result.overfitting.analyses.items():
            lines.append(f"overfitting [{name}]: best epoch {_tf(a.get('best_epoch'))}"
                         f" ({a.get('monitor', 'val')}); {a.get('advice', '')}".rstrip("; "))
            lines += [f"  ! {w}" for w in a.get("warnings") or []]
            shown = True
    sel = result.selection
    if sel is not None:
        rows = [[v, str(r.get("choice")), _tf(r.get("score")), _tf(r.get("spearman")), _tf(r.get("regret"))]
                for v, r in sel.validators.items()]
        lines += ["", f"auto: chose {sel.chosen} by {sel.validator} (label-free); "
                      f"spearman / regret vs {sel.true_metric}:"]
        lines += _text_table(["validator", "choice", "score", "spearman", "regret"], rows)
        shown = True
    if result.bias is not None:
        from ..bias import summary_lines

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
