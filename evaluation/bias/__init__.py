"""Bias audits of binary classifiers: per-group and intersectional metrics (fairlearn
`MetricFrame`), disparities with bootstrap confidence intervals, worst groups, small groups
flagged, the chest X-ray under-diagnosis view, and two models side by side.

Inputs: a DataFrame with a label column (0/1; 1 = finding), a score column (P(label = 1)) and
attribute columns, or a dict of equal-length arrays with the same names.

Point estimates come from `fairlearn.metrics.MetricFrame`. Confidence intervals come from a
vectorised bootstrap here: MetricFrame's own `n_boot` (fairlearn >= 0.11) rebuilds the whole
frame per resample, measured at ~0.3 s per resample on 2 cores (a minute for n_boot = 200);
this module draws all resamples as multinomial row weights and computes every group metric for
all of them with matrix products (the same estimator: rows resampled with replacement over the
whole data set, quantiles of the resampled statistic).

Privacy: groups with fewer than `suppress_below` rows (default 5) are listed with their count
only; their metrics are withheld and they take no part in differences, ratios or worst groups,
so the report never shows the outcome of a single patient.

Modules: :mod:`.groups` (metric functions, bootstrap, differences), :mod:`.audit` (the audit),
:mod:`.result` (``AuditResult``, ``compare_audits``, ``BiasSection``), :mod:`.figures`
(report figures and summary lines). Every public name is importable from here.
"""

from __future__ import annotations

from .audit import _frame_from, _group_reliability, _labels_scores, audit, underdiagnosis_view
from .figures import plot_audit, summary_lines
from .groups import (
    AGE_BANDS,
    METRICS,
    N_ECE_BINS,
    _bootstrap_weights,
    _weighted_group_metrics,
    age_band,
    difference_interval,
    group_metric_functions,
)
from .result import AuditResult, BiasSection, as_audit, as_section, compare_audits

__all__ = [
    "METRICS",
    "AGE_BANDS",
    "N_ECE_BINS",
    "age_band",
    "group_metric_functions",
    "AuditResult",
    "BiasSection",
    "as_audit",
    "as_section",
    "audit",
    "compare_audits",
    "difference_interval",
    "plot_audit",
    "summary_lines",
    "underdiagnosis_view",
    "_bootstrap_weights",
    "_frame_from",
    "_group_reliability",
    "_labels_scores",
    "_weighted_group_metrics",
]
