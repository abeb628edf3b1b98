"""Augmentation presets, target-aware restyling and shift ranking.

- `radiograph_acquisition(strength)`, `driving_conditions(strength)`, `photometric(strength)`: presets (`Augmenter`s)
  on numpy H x W x C images, and on shiftkit dict items via `.apply_item` / `.item_transform()`.
- `target_restyle(target_pool, method=...)`: FDA / HistogramMatching / PixelDistributionAdaptation
  toward unlabeled target images; `load_target_pool` reads a manifest, Dataset or array.
- `measure_frame` / `FrameMatch`: the flat borders (collimation, letterbox) of target images, painted
  onto source images; `fit_acquisition` / `AcquisitionMatch`: the blur and noise of the target
  camera, fitted from unlabelled spectra and applied to source images.
- `AugmentedDataset(source_dataset, transform)`; `TargetStyle(...)`: the source adapter any
  method takes (`DANN(..., source_adapter=TargetStyle("fda"))`); `TargetStyleSourceOnly`: the
  registered source-only baseline that uses it.
- `rank_shift_families(source_images, target_images)`: which kind of shift is this?

`NO_ALBUMENTATIONS_UPDATE` is set before anything imports albumentations, so it never tries to
reach the network for a version check. Training classes and the ranking load lazily.
"""

from __future__ import annotations

import importlib
import os
from typing import Any

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

from shiftkit.adapt.augment.acquisition import AcquisitionFit, AcquisitionMatch, fit_acquisition  # noqa: E402
from shiftkit.adapt.augment.dataset import AugmentedDataset  # noqa: E402
from shiftkit.adapt.augment.families import FAMILIES, build_family, family_names  # noqa: E402
from shiftkit.adapt.augment.framing import FrameMatch, measure_frame, measure_frames  # noqa: E402
from shiftkit.adapt.augment.pipeline import Augmenter, combine  # noqa: E402
from shiftkit.adapt.augment.presets import (  # noqa: E402
    PRESETS,
    driving_conditions,
    get_preset,
    photometric,
    radiograph_acquisition,
)
from shiftkit.adapt.augment.restyle import RESTYLE_METHODS, load_target_pool, target_restyle  # noqa: E402

_LAZY = {
    "TargetStyle": ".adapter", "TargetStyleSourceOnly": ".adapter",
    "CollimationBorder": ".custom", "FastFog": ".custom", "Haze": ".custom", "OnThreeChannels": ".custom",
    "PixelDistributionAdaptationFixed": ".custom",
    "rank_shift_families": ".rank", "describe_ranking": ".rank",
    "shift_features": ".features",
}

__all__ = [
    "Augmenter", "combine", "AugmentedDataset", "FAMILIES", "build_family", "family_names",
    "PRESETS", "get_preset", "radiograph_acquisition", "driving_conditions", "photometric",
    "RESTYLE_METHODS", "load_target_pool", "target_restyle", "AcquisitionFit", "AcquisitionMatch",
    "fit_acquisition", "FrameMatch", "measure_frame", "measure_frames", *sorted(_LAZY),
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
