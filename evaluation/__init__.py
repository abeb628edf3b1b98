"""shiftkit.evaluation: domain gap, task metrics, calibration, overfitting, bias, label-free
target-risk estimates and reports. Works on numpy arrays, torch tensors and DataFrames; never
imports shiftkit.adapt.

Import the submodules you need (`from shiftkit.evaluation import gap, metrics, report`): they
are loaded lazily so that `import shiftkit.evaluation` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

_SUBMODULES = ("gap", "metrics", "calibration", "report", "plots", "overfitting", "bias", "risk", "loaders",
               "monitor", "performance_estimation", "prevalence", "transferability", "jobs")

__all__ = list(_SUBMODULES)


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
