"""The figures a run result supports on its own (learning curves, method comparison, gaps,
reliability, bias, caller-made sections), and figures as embedded PNG."""

from __future__ import annotations

import base64
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from shiftkit.datasets.errors import DataError

from .. import plots
from ..results import RunResult
from ._common import _as_result

__all__ = ["auto_figures"]


def _extra_figure_makers() -> dict[str, tuple[str, Any]]:
    """Caller-made sections a figure is drawn for: name -> (caption, maker); a maker raises
    DataError on a section it cannot draw."""
    from ..overfitting import data_efficiency_figure

    return {"layer_gap": ("Per-layer gap profile", plots.layer_gap_figure),
            "data_efficiency": ("Data efficiency on the target", data_efficiency_figure)}


def auto_figures(metrics: Mapping[str, Any] | RunResult) -> dict[str, Any]:
    """The figures a run result supports on its own: learning curves, method comparison,
    gap bars (per method and before/after), layer gap profile, reliability diagrams, bias bars.
    Returns {title: Figure}."""
    from ..calibration import plot_reliability

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
    if result.gap is not None and result.gap.summaries:
        f = plots.gap_bars_figure(dict(result.gap.summaries))
        if f is not None:
            figs["Domain gap before / after"] = f
    if result.overfitting is not None and result.overfitting.analyses:
        f = plots.epoch_gaps_figure(dict(result.overfitting.analyses))
        if f is not None:
            figs["Gaps per epoch (star = chosen epoch, source validation)"] = f
    for key, (title, make) in _extra_figure_makers().items():
        if key in result.extra:
            try:
                f = make(result.extra[key])
            except DataError:
                continue  # a section of another shape: shown as a table only
            if f is not None:
                figs[title] = f
    if result.bias is not None:
        from ..bias import plot_audit

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
