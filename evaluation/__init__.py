"""shiftkit.evaluation: domain gap, task metrics, calibration, overfitting, bias, label-free
target-risk estimates and reports. Works on numpy arrays, torch tensors and DataFrames; never
imports shiftkit.adapt.

Import the submodules you need (`from shiftkit.evaluation import gap, metrics, report`): they
are loaded lazily so that `import shiftkit.evaluation` stays cheap. `MethodResult` and
`RunResult` (typed run results, :mod:`.results`) are importable from the package.
"""

from __future__ import annotations

import importlib
from typing import Any

# One style for the three packages: public names map to the module that defines them and are
# imported on first use; the submodules themselves load lazily too.
_SUBMODULES = ("gap", "metrics", "calibration", "report", "plots", "overfitting", "bias", "risk", "loaders",
               "results", "monitor", "performance_estimation", "prevalence", "transferability", "jobs", "statistics")
_EXPORTS = {
    "MethodResult": ".results",
    "RunResult": ".results",
    "SCHEMA_VERSION": ".results",
    "GapSection": ".results",
    "OverfittingSection": ".results",
    "SelectionSection": ".results",
    "BiasSection": ".bias",
    "AuditResult": ".bias",
    "classification_metrics": ".metrics",
    "segmentation_metrics": ".metrics",
    "gap_summary": ".gap",
    "mmd_test": ".gap",
    "proxy_a_distance": ".gap",
    "expected_calibration_error": ".metrics",
    "analyse_history": ".overfitting",
    "audit": ".bias",
    "write_report": ".report",
    "terminal_summary": ".report",
    "DriftMonitor": ".monitor",
    "PerformanceEstimator": ".performance_estimation",
    "PriorShiftEstimator": ".prevalence",
}

__all__ = sorted([*_SUBMODULES, *_EXPORTS])


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
