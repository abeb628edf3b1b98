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
    "load": ".deploy.loading",
    "save_model": ".deploy.saving",
    "save_ensemble": ".deploy.ensemble",
    "load_weights": ".deploy.loading",
    "Predictor": ".deploy.predictor",
    "Prediction": ".deploy.predictor",
    "UnsafeModelFileError": ".training.checkpoint",
    "NonFiniteLossError": ".training.trainer",
    "CachedDataset": ".training.data",
    "build_classifier": ".models.backbones",
    "build_segmenter": ".models.backbones",
    "SplitModel": ".models.backbones",
    "SegModel": ".models.backbones",
    "train": ".training.trainer",
    "TrainConfig": ".training.trainer",
    "ArrayDataset": ".training.data",
    "Method": ".methods",
    "Requires": ".methods",
    "NotFittedError": ".methods",
    "register": ".methods",
    "get_method": ".methods",
    "method_names": ".methods",
    "SourceAdapter": ".methods.adapters",
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
    "BuildContext": ".methods.build",
    "RunConfig": ".job.config",
    "load_config": ".job.config",
    "run": ".job.pipeline",
    "RunResult": ".job.pipeline",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
