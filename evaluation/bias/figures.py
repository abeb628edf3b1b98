"""The bias section in a report: per-group bar charts with bootstrap intervals, the
under-diagnosis rates, reliability by group, and the terminal summary lines."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .result import AuditResult, BiasSection, as_section

__all__ = ["plot_audit", "summary_lines"]


def plot_audit(bias: BiasSection | AuditResult | Mapping[str, Any],
               metrics: Sequence[str] = ("auroc", "fpr", "fnr", "ece")) -> dict[str, Any]:
    """Figures for a report: per attribute, bars per group (one colour per model) with bootstrap
    CIs as error bars, one panel per metric; and the under-diagnosis rates. {caption: Figure}.

    bias: a :class:`BiasSection`, one :class:`AuditResult`, or a saved form of either."""
    from ..calibration import plot_reliability
    from ..plots import new_figure

    section = as_section(bias)
    audits = section.audits
    first = section.first
    figs: dict[str, Any] = {}
    for attr, a in first.attributes.items():
        if a.get("control"):
            continue
        groups = [g["group"] for g in a["groups"] if "suppressed" not in g]
        if not groups or len(groups) > 40:
            continue
        fig, axes = new_figure((3.6 * len(metrics), 3.4), ncols=len(metrics))
        axes = np.asarray(axes, dtype=object).reshape(-1)
        width = 0.8 / len(audits)
        for ax, m in zip(axes, metrics, strict=True):
            for i, (label, au) in enumerate(audits.items()):
                rows = {g["group"]: g for g in au.attributes.get(attr, {}).get("groups", [])}
                vals = [rows.get(g, {}).get(m) for g in groups]
                cis = [rows.get(g, {}).get(f"{m}_ci") for g in groups]
                v = np.array([x if x is not None else np.nan for x in vals], dtype=float)
                lo = np.array([v[j] - c[0] if c and np.isfinite(v[j]) else 0 for j, c in enumerate(cis)])
                hi = np.array([c[1] - v[j] if c and np.isfinite(v[j]) else 0 for j, c in enumerate(cis)])
                x = np.arange(len(groups)) + i * width - 0.4 + width / 2
                ax.bar(x, v, width, yerr=np.vstack([np.clip(lo, 0, None), np.clip(hi, 0, None)]),
                       capsize=2, label=label)
            ax.set_xticks(range(len(groups)), groups, rotation=35, fontsize=7, ha="right")
            ax.set_title(m, fontsize=9)
            if len(audits) > 1:
                ax.legend(fontsize=6)
        fig.suptitle(f"per-group metrics by {attr} (95% bootstrap CI)", fontsize=10)
        figs[f"Bias: {attr}"] = fig
    ud = first.underdiagnosis
    if ud:
        fig, axes = new_figure((4.2 * len(ud), 3.4), ncols=len(ud))
        axes = np.asarray(axes, dtype=object).reshape(-1)
        for ax, (attr, entry) in zip(axes, ud.items(), strict=True):
            groups = [g["group"] for g in entry["groups"] if "rate" in g]
            width = 0.8 / len(audits)
            for i, (label, au) in enumerate(audits.items()):
                rows = {g["group"]: g for g in au.underdiagnosis.get(attr, {}).get("groups", [])}
                v = np.array([rows.get(g, {}).get("rate", np.nan) for g in groups], dtype=float)
                cis = [rows.get(g, {}).get("rate_ci") for g in groups]
                err = np.array([[max(v[j] - c[0], 0), max(c[1] - v[j], 0)] if c else [0, 0]
                                for j, c in enumerate(cis)]).T.reshape(2, -1)
                ax.bar(np.arange(len(groups)) + i * width - 0.4 + width / 2, v, width, yerr=err, capsize=2,
                       label=label)
            ax.set_xticks(range(len(groups)), groups, fontsize=8)
            ax.set_title(f"under-diagnosis rate by {attr}", fontsize=9)
            ax.set_ylabel("P(predicted no finding | finding)")
            if len(audits) > 1:
                ax.legend(fontsize=6)
        figs["Under-diagnosis (FPR of 'no finding')"] = fig
    for attr, curves in first.reliability.items():
        if curves and len(curves) <= 8:
            figs[f"Reliability by {attr}"] = plot_reliability(curves, title=f"reliability by {attr}")
    return figs


def _disparity_line(lines: list[str], label: str, title: str, disp: Mapping[str, Any]) -> None:
    parts = []
    for m in ("auroc", "fpr", "fnr", "ece"):
        d = disp.get(m) or {}
        if d.get("difference") is None:
            continue
        ci = d.get("difference_ci")
        ci_s = f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else ""
        parts.append(f"{m} gap {d['difference']:.3f}{ci_s} (worst {d.get('worst_group', '?')})")
    if parts:
        lines.append(f"bias [{label}] {title}: " + "; ".join(parts))


def summary_lines(bias: BiasSection | AuditResult | Mapping[str, Any]) -> list[str]:
    """Terminal lines: per model and attribute, the largest disparities and worst groups.

    bias: a :class:`BiasSection`, one :class:`AuditResult`, or a saved form of either."""
    section = as_section(bias)
    lines: list[str] = []
    for label, au in section.audits.items():
        for attr, a in au.attributes.items():
            # An attribute audited within control levels has one block of disparities per level.
            blocks = ([(attr, a["disparities"])] if "disparities" in a else
                      [(f"{attr} within {lvl}", d) for lvl, d in a.get("disparities_by_control", {}).items()])
            for title, disp in blocks:
                _disparity_line(lines, label, title, disp)
        for attr, entry in au.underdiagnosis.items():
            if entry.get("worst_group") is not None:
                lines.append(f"under-diagnosis [{label}] by {attr}: worst {entry['worst_group']} "
                             f"({entry['worst_rate']:.3f}), gap {entry['difference'] or 0:.3f}")
    widened, models = section.widened, list(section.audits)
    if widened:
        lines.append(f"disparities that grew ({models[0]} -> {models[-1]}): "
                     + "; ".join(widened[:8]) + (" ..." if len(widened) > 8 else ""))
    if section.widened_beyond_ci:
        lines.append("disparities widened beyond their CI: " + "; ".join(section.widened_beyond_ci))
    return lines
