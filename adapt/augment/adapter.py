"""Augmentation-based adaptation as a source adapter: train on source images restyled toward
the target.

:class:`TargetStyle` wraps the source in an :class:`AugmentedDataset` whose augmenter restyles
each source image toward a random unlabelled target image (FDA / histogram matching /
pixel-distribution adaptation), optionally followed by a preset. Target labels are never read:
the pool holds target images only. Any method takes it::

    SourceOnly("tiny", source_adapter=TargetStyle("fda"))
    DANN("tiny", source_adapter=TargetStyle(preset="radiograph_acquisition"))

:class:`TargetStyleSourceOnly` is the registered baseline (``"augment"`` in a run config):
source-only training with ``TargetStyle()`` as its default adapter.
"""

from __future__ import annotations

from typing import Any

from torch.utils.data import Dataset

from shiftkit.adapt.augment.acquisition import AcquisitionMatch, fit_acquisition
from shiftkit.adapt.augment.dataset import AugmentedDataset
from shiftkit.adapt.augment.framing import FrameMatch, measure_frames
from shiftkit.adapt.augment.pipeline import Augmenter, combine
from shiftkit.adapt.augment.presets import get_preset
from shiftkit.adapt.augment.restyle import load_target_pool, target_restyle
from shiftkit.adapt.methods.adapters import SourceAdapter
from shiftkit.adapt.methods.source_only import SourceOnly
from shiftkit.datasets.errors import ConfigError

__all__ = ["TargetStyle", "TargetStyleSourceOnly"]


class TargetStyle(SourceAdapter):
    """Source adapter: restyle source images toward the target, then (optionally) a preset.

    Args:
        restyle: ``"fda"``, ``"histogram"``, ``"pda"``, ``"mixed"`` (default) or ``None``
            (preset only).
        strength: 0..1 (see :func:`target_restyle`).
        p: probability a source image is restyled (the rest stay as they are).
        preset: ``None``, ``"radiograph_acquisition"`` or ``"driving_conditions"``, applied after
            restyling.
        preset_strength: 0..1.
        augmenter: a ready :class:`Augmenter` to use instead of building one (the target pool
            is then up to you).
        max_target_images: size of the target pool (seeded subset of the target set).
        acquisition: also blur and noise each source image as the target camera does, with the
            degradation :func:`~shiftkit.adapt.augment.acquisition.fit_acquisition` estimates
            from unlabelled source and target images (after restyling, with probability ``p``).
        frame: with restyling, first paint a target image's flat borders (collimation shutters,
            letterboxing) onto each source image (:class:`~shiftkit.adapt.augment.framing.FrameMatch`,
            probability ``p``); nothing is added when no target image has one.

    After the method's ``fit``, its ``source_adapter_[i].augmenter_`` is the augmenter used.
    """

    def __init__(self, restyle: str | None = "mixed", *, strength: float = 1.0, p: float = 0.8,
                 preset: str | None = None, preset_strength: float = 0.3, augmenter: Augmenter | None = None,
                 max_target_images: int = 256, acquisition: bool = False, frame: bool = True):
        self.restyle = restyle
        self.strength = strength
        self.p = p
        self.preset = preset
        self.preset_strength = preset_strength
        self.augmenter = augmenter
        self.max_target_images = max_target_images
        self.acquisition = acquisition
        self.frame = frame

    def needs_target(self) -> bool:
        return self.augmenter is None and (self.restyle is not None or self.acquisition)

    def build_augmenter(self, target: Dataset | None, seed: int = 0, source: Dataset | None = None) -> Augmenter:
        """The augmenter: restyle toward ``target`` (images only), match its acquisition (needs
        ``source`` images too), then the preset."""
        if self.augmenter is not None:
            return self.augmenter
        if self.restyle is None and self.preset is None and not self.acquisition:
            raise ConfigError("TargetStyle", ["give restyle=..., acquisition=True, preset=... or augmenter=..."])
        parts = []
        if self.restyle is not None:
            if target is None:
                raise ConfigError("TargetStyle", ["restyling needs fit(source, target) with target images"])
            pool = load_target_pool(target, max_images=self.max_target_images, seed=seed)
            frame = FrameMatch(measure_frames(pool), p=self.p)
            if self.frame and frame.any_frame:
                # before restyling: the tone match then sees target-like content, borders included
                parts.append(Augmenter([frame], seed=seed, name="frame"))
            parts.append(target_restyle(pool, method=self.restyle, strength=self.strength, p=self.p, seed=seed))
        if self.acquisition:
            parts.append(self._acquisition_augmenter(source, target, seed))
        if self.preset is not None:
            parts.append(get_preset(self.preset, self.preset_strength, seed=seed))
        return combine(*parts, seed=seed)

    def _acquisition_augmenter(self, source: Dataset | None, target: Dataset | None, seed: int) -> Augmenter:
        if source is None or target is None:
            raise ConfigError("TargetStyle", ["acquisition=True needs source and target images"])
        n = min(self.max_target_images, 128)  # 128 images pin the mean spectrum; more only costs
        self.acquisition_fit_ = fit_acquisition(load_target_pool(source, max_images=n, seed=seed),
                                                load_target_pool(target, max_images=n, seed=seed))
        fit = self.acquisition_fit_
        return Augmenter([AcquisitionMatch(fit.sigma, fit.noise, p=self.p)], seed=seed,
                         name=f"acquisition(sigma={fit.sigma:g}px, noise={fit.noise:g})")

    def fit_transform(self, source: Dataset, target: Dataset | None = None, *, seed: int = 0) -> Dataset:
        self.augmenter_ = self.build_augmenter(target, seed, source=source)
        return AugmentedDataset(source, self.augmenter_, seed=seed)


class TargetStyleSourceOnly(SourceOnly):
    """Source-only training on target-styled source images (target images, never labels).

    :class:`SourceOnly` whose ``source_adapter`` defaults to
    ``TargetStyle(strength=restyle_strength)`` (mixed restyling toward the target); pass
    ``source_adapter=TargetStyle(...)`` to choose everything (``restyle_strength`` is then unused).
    """

    # requires: as SourceOnly; the default adapter reads the target images (fit(source, target)).
    title = "Target-style augmentation"
    # Like DANN, it fine-tunes the trained source model (`shiftkit run`: train.lr x lr_mult), so
    # `auto` and the efficacy harness train the same candidates.
    recipe = "adapt"
    selection_grid = ({}, {"restyle_strength": 0.5}, {"lr_mult": 1}, {"lr_mult": 2}, {"match_acquisition": True},
                      {"lr_mult": 2, "match_acquisition": True})
    selection_grid_provenance = ("design: full (default) and half restyling strength, the two ends that differ on "
                                 "development seeds 100-101 (benchmarks/efficacy/dev); the full and twice the "
                                 "adaptation learning rate (lr_mult=1, 2): on development seeds they help on digits "
                                 "and dashcam and hurt on radiograph (benchmarks/efficacy/dev-lr, dev-verges), so the "
                                 "validator decides (benchmarks/efficacy/dev-pool, dev-verges); acquisition matching "
                                 "on and off at both rates: it helps on digits and hurts on dashcam "
                                 "(benchmarks/efficacy/dev-frame)")

    def __init__(self, model: Any = "tiny", *, restyle_strength: float = 1.0, match_acquisition: bool = False,
                 match_frame: bool = True, **kwargs: Any):
        super().__init__(model, **kwargs)
        self.restyle_strength = restyle_strength
        self.match_acquisition = match_acquisition
        self.match_frame = match_frame

    def default_source_adapter(self) -> TargetStyle:
        return TargetStyle(strength=self.restyle_strength, acquisition=self.match_acquisition,
                           frame=self.match_frame)
