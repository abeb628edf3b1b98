"""Augmentation presets, target-aware restyling and shift ranking.

`NO_ALBUMENTATIONS_UPDATE` is set before anything imports albumentations, so it never tries to
reach the network for a version check.
"""

from __future__ import annotations

import os

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

from shiftkit.adapt.augment.families import FAMILIES, build_family, family_names  # noqa: E402
from shiftkit.adapt.augment.pipeline import Augmenter, combine  # noqa: E402
from shiftkit.adapt.augment.presets import PRESETS, driving_conditions, get_preset, radiograph_acquisition  # noqa: E402

__all__ = [
    "Augmenter", "combine", "FAMILIES", "build_family", "family_names",
    "PRESETS", "get_preset", "radiograph_acquisition", "driving_conditions",
]
