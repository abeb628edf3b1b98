"""Calibration: expected calibration error (ECE) and reliability curves/diagrams.

Convention (Guo et al. 2017): top-label confidence c_i = max_k p_ik, correct_i = [argmax_k p_ik
== y_i]; 15 equal-width bins on [0, 1] (first bin [0, 1/15], then (lo, hi]);
ECE = sum_b |B_b| / N * |acc(B_b) - conf(B_b)|. Works for binary ((N,) = P(class 1), or (N, 2))
and multi-class (N, K) probabilities.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from shiftkit.datasets.errors import DataError

from .metrics import calibration_bin_sums, confidence_correct, ece_from_confidence, expected_calibration_error

__all__ = ["reliability_curve", "expected_calibration_error", "plot_reliability"]


def reliability_curve(y_true: Any, proba: Any, n_bins: int = 15) -> dict[str, list[float] | float]:
    """Per-bin aggregates for a reliability diagram (JSON-ready; empty bins have NaN acc/conf).

    Returns {"bin_edges" (n_bins + 1), "bin_count", "bin_accuracy", "bin_confidence", "ece", "n"}.
    """
    if int(n_bins) < 1:
        raise DataError(f"argument 'n_bins' must be >= 1; got {n_bins}")
    conf, correct = confidence_correct(y_true, proba)
    if len(conf) == 0:
        raise DataError("cannot compute calibration on zero samples")
    count, acc_sum, conf_sum = calibration_bin_sums(conf, correct, int(n_bins))
    with np.errstate(invalid="ignore", divide="ignore"):
        acc = acc_sum / count
        cbar = conf_sum / count
    ece = float(ece_from_confidence(conf, correct, int(n_bins)))
    return {
        "bin_edges": np.linspace(0.0, 1.0, n_bins + 1).tolist(),
        "bin_count": count.astype(int).tolist(),
        "bin_accuracy": acc.tolist(),
        "bin_confidence": cbar.tolist(),
        "ece": ece,
        "n": int(len(conf)),
    }


def plot_reliability(curves: dict[str, dict], *, title: str = "Reliability diagram"):
    """Reliability diagram for one or more curves from `reliability_curve` ({label: curve}).

    Returns a matplotlib Figure (Agg); bars are the per-bin accuracy, the diagonal is perfect
    calibration, the legend carries each curve's ECE.
    """
    from .plots import new_figure

    fig, ax = new_figure(figsize=(5.5, 4.5))
    ax.plot([0, 1], [0, 1], color="0.5", linestyle="--", linewidth=1, label="perfect")
    n = max(len(curves), 1)
    for i, (label, c) in enumerate(curves.items()):
        edges = np.asarray(c["bin_edges"], dtype=float)
        width = np.diff(edges)
        acc = np.asarray(c["bin_accuracy"], dtype=float)
        ok = np.isfinite(acc)
        left = edges[:-1] + width * i / n
        ax.bar(left[ok], acc[ok], width=width[ok] / n, align="edge", alpha=0.7,
               label=f"{label} (ECE {float(c['ece']):.3f})")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("confidence")
    ax.set_ylabel("accuracy")
    ax.set_title(title)
    ax.legend(fontsize=8, loc="upper left")
    return fig
