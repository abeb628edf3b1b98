"""Adaptation methods behind one interface (see ``base.Method``).

Imported lazily so ``import shiftkit.adapt.methods`` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Method": ".base",
    "SourceOnly": ".source_only",
    "DANN": ".dann",
    "DomainDiscriminator": ".dann",
    "SegDANN": ".dann_seg",
    "FineTune": ".finetune",
    "LinearProbe": ".linear_probe",
    "AdaBN": ".adabn",
    "CDAN": ".cdan",
    "MCC": ".mcc",
    "DeepCORAL": ".coral",
    "SelfTraining": ".self_training",
    "TENT": ".tent",
    "SHOT": ".shot",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
