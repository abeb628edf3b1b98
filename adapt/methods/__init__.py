"""Adaptation methods behind one contract (see ``base.Method``) and the registry of names.

Imported lazily so ``import shiftkit.adapt.methods`` stays cheap (the registry needs no torch).
"""

from __future__ import annotations

import importlib
from typing import Any

from shiftkit.adapt.methods.registry import BUILTIN_METHODS, get_method, method_names, method_title, register

_EXPORTS = {
    "Method": ".base",
    "NotFittedError": ".base",
    "Requires": ".base",
    "TargetView": ".base",
    "supervised_loss": ".base",
    "SourceOnly": ".source_only",
    "TargetOracle": ".source_only",
    "DANN": ".dann",
    "DomainDiscriminator": ".dann",
    "SegDANN": ".dann_seg",
    "OutputDiscriminator": ".dann_seg",
    "FineTune": ".finetune",
    "LinearProbe": ".linear_probe",
    "AdaBN": ".adabn",
    "CDAN": ".cdan",
    "MCC": ".mcc",
    "DeepCORAL": ".coral",
    "SelfTraining": ".self_training",
    "TENT": ".tent",
    "SHOT": ".shot",
    "SHOTSource": ".shot",
    "shot_network": ".shot",
}

__all__ = [
    "AdaBN", "BUILTIN_METHODS", "DANN", "DomainDiscriminator", "FineTune", "LinearProbe", "Method", "NotFittedError",
    "OutputDiscriminator", "Requires", "SegDANN", "SourceOnly", "TargetOracle", "TargetView", "get_method",
    "method_names", "method_title", "register",
]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
