"""Augmentation-based adaptation: train on source images restyled toward the target.

`AugmentedSourceOnly` (alias `TargetStyleSourceOnly`) and `AugmentedDANN` are the core methods
with one change: `fit(source, target)` wraps `source` in an `AugmentedDataset` whose augmenter
restyles each source image toward a random unlabeled target image (FDA / histogram matching /
pixel-distribution adaptation), optionally followed by a preset. Target labels are never read:
the pool holds target images only.

Any method that takes datasets can be combined the same way by hand:
`method.fit(AugmentedDataset(source, augmenter), target)`.
"""

from __future__ import annotations

from typing import Any

from torch.utils.data import Dataset

from shiftkit.adapt.augment.dataset import AugmentedDataset
from shiftkit.adapt.augment.pipeline import Augmenter, combine
from shiftkit.adapt.augment.presets import get_preset
from shiftkit.adapt.augment.restyle import load_target_pool, target_restyle
from shiftkit.adapt.methods.dann import DANN
from shiftkit.adapt.methods.source_only import SourceOnly
from shiftkit.datasets.errors import ConfigError

__all__ = ["TargetStyleMixin", "AugmentedSourceOnly", "TargetStyleSourceOnly", "AugmentedDANN"]


class TargetStyleMixin:
    """Adds target-style augmentation of the source to a `Method`'s `fit`.

    Keyword args (the rest go to the method / `TrainConfig`):
        restyle: "fda", "histogram", "pda", "mixed" (default) or None (preset only).
        restyle_strength: 0..1 (see `target_restyle`).
        restyle_p: probability a source image is restyled (the rest stay as they are).
        preset: None, "radiograph_acquisition" or "driving_conditions", applied after restyling.
        preset_strength: 0..1.
        augmenter: a ready `Augmenter` to use instead of building one (the target pool is then
            up to you).
        max_target_images: size of the target pool (seeded subset of the target set).
    """

    def __init__(self, *args: Any, restyle: str | None = "mixed", restyle_strength: float = 1.0,
                 restyle_p: float = 0.8, preset: str | None = None, preset_strength: float = 0.3,
                 augmenter: Augmenter | None = None, max_target_images: int = 256, **kwargs: Any):
        super().__init__(*args, **kwargs)
        if augmenter is None and restyle is None and preset is None:
            raise ConfigError(type(self).__name__, ["give restyle=..., preset=... or augmenter=..."])
        self.restyle = restyle
        self.restyle_strength = restyle_strength
        self.restyle_p = restyle_p
        self.preset = preset
        self.preset_strength = preset_strength
        self.augmenter = augmenter
        self.max_target_images = max_target_images
        self.augmenter_: Augmenter | None = None

    def build_augmenter(self, target: Dataset | None) -> Augmenter:
        """The augmenter `fit` uses: restyle toward `target` (images only), then the preset."""
        if self.augmenter is not None:
            return self.augmenter
        seed = self.config.seed  # type: ignore[attr-defined]
        parts = []
        if self.restyle is not None:
            if target is None:
                raise ConfigError(type(self).__name__, ["restyling needs fit(source, target) with target images"])
            pool = load_target_pool(target, max_images=self.max_target_images, seed=seed)
            parts.append(target_restyle(pool, method=self.restyle, strength=self.restyle_strength,
                                        p=self.restyle_p, seed=seed))
        if self.preset is not None:
            parts.append(get_preset(self.preset, self.preset_strength, seed=seed))
        return combine(*parts, seed=seed)

    def fit(self, source: Dataset, target: Dataset | None = None, *, val: Dataset | None = None,
            callback: Any = None) -> Any:
        self.augmenter_ = self.build_augmenter(target)
        wrapped = AugmentedDataset(source, self.augmenter_, seed=self.config.seed)  # type: ignore[attr-defined]
        return super().fit(wrapped, target, val=val, callback=callback)  # type: ignore[misc]


class AugmentedSourceOnly(TargetStyleMixin, SourceOnly):
    """Source-only training on target-styled source images (target images, never labels)."""


TargetStyleSourceOnly = AugmentedSourceOnly


class AugmentedDANN(TargetStyleMixin, DANN):
    """DANN whose labelled source batches are restyled toward the target first."""
