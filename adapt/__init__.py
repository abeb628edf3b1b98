"""Adaptation methods behind one interface.

Public entry points (imported lazily so the CLI starts fast):
``load`` / ``save_model`` (:mod:`.loading`, :mod:`.saving`), ``build_classifier`` / ``build_segmenter``
(:mod:`.backbones`), ``train`` / ``TrainConfig`` (:mod:`.trainer`) and the methods
``SourceOnly``, ``DANN``, ``SegDANN``, ``CDAN``, ``MCC``, ``DeepCORAL``, ``SelfTraining``,
``TENT``, ``SHOT``, ``FineTune``, ``LinearProbe``, ``AdaBN``, ``TargetOracle``,
``ImportanceWeighted``, ``TargetStyleSourceOnly`` (every registered method) with their contract (``Method``, ``Requires``, ``NotFittedError``), registry
(``register``, ``get_method``, ``method_names``) and source adapters (``SourceAdapter``,
``ImportanceWeighting``, ``TargetStyle``), and the end-to-end job ``RunConfig`` / ``load_config`` (:mod:`.config`) and ``run`` (:mod:`.pipeline`).
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "load": ".loading",
    "save_model": ".saving",
    "save_ensemble": ".ensemble",
    "load_weights": ".loading",
    "Predictor": ".predictor",
    "Prediction": ".predictor",
    "UnsafeModelFileError": ".checkpoint",
    "NonFiniteLossError": ".trainer",
    "CachedDataset": ".data",
    "build_classifier": ".backbones",
    "build_segmenter": ".backbones",
    "SplitModel": ".backbones",
    "SegModel": ".backbones",
    "train": ".trainer",
    "TrainConfig": ".trainer",
    "ArrayDataset": ".data",
    "Method": ".methods",
    "Requires": ".methods",
    "NotFittedError": ".methods",
    "register": ".methods",
    "get_method": ".methods",
    "method_names": ".methods",
    "SourceAdapter": ".adapters",
    "ImportanceWeighting": ".reweight",
    "TargetStyle": ".augment",
    "SourceOnly": ".methods",
    "TargetOracle": ".methods",
    "DANN": ".methods",
    "SegDANN": ".methods",
    "FineTune": ".methods",
    "LinearProbe": ".methods",
    "AdaBN": ".methods",
    "CDAN": ".methods",
    "MCC": ".methods",
    "DeepCORAL": ".methods",
    "SelfTraining": ".methods",
    "TENT": ".methods",
    "SHOT": ".methods",
    "ImportanceWeighted": ".reweight",
    "TargetStyleSourceOnly": ".augment",
    "ClassifierRatio": ".reweight",
    "KMM": ".reweight",
    "KLIEP": ".reweight",
    "BuildContext": ".build",
    "RunConfig": ".config",
    "load_config": ".config",
    "run": ".pipeline",
    "RunResult": ".pipeline",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
