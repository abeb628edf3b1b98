"""Presets: acquisition shift for radiographs, driving conditions for dashcams.

Each preset is an `Augmenter` (numpy H x W x C in, same out; `.apply_item` / `.item_transform()`
for shiftkit dict items) built from the families in `families.py`, with ONE knob, `strength`
in [0, 1]: 0 is the identity, 1 the harshest shift the preset produces. Families fire
independently with probability `p`; weather (fog / rain / snow) is one-of, since a scene
rarely has two. Order follows the physics: scene -> optics -> sensor -> processing -> display.
"""

from __future__ import annotations

import os
from typing import Any

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import albumentations as A  # noqa: E402

from shiftkit.adapt.augment.families import build_family, geometric  # noqa: E402
from shiftkit.adapt.augment.pipeline import Augmenter  # noqa: E402

__all__ = ["radiograph_acquisition", "driving_conditions", "photometric", "PRESETS", "get_preset"]


def _wrap(transforms: list[Any], p: float) -> list[Any]:
    return [A.Sequential(transforms, p=p)] if transforms else []


def radiograph_acquisition(strength: float = 0.5, *, p: float = 0.3, spatial: bool = True,
                           image_size: int = 256, seed: int | None = 0) -> Augmenter:
    """Radiograph acquisition shift: collimation, bias field, blur, low resolution, noise,
    exposure and gamma, contrast, CLAHE, inverted polarity (plus positioning jitter if `spatial`).

    Args:
        strength: 0..1 magnitude of every family.
        p: probability each family fires (inversion fires at `p / 3`: it is rare in practice).
        spatial: add small shift/scale/rotation jitter (masks follow, nearest-neighbour).
        image_size: typical image side in pixels; scales blur sigma to the image.
        seed: base seed (see `Augmenter`).
    """
    s = float(strength)
    t: list[Any] = []
    if spatial:
        t += _wrap(geometric(s), p)
    t += _wrap(build_family("collimation", s, image_size=image_size), p)
    t += _wrap(build_family("bias_field", s, image_size=image_size), p)
    t += _wrap(build_family("blur", s, image_size=image_size), p)
    t += _wrap(build_family("resolution", s, image_size=image_size), p)
    t += _wrap(build_family("noise", s, image_size=image_size), p)
    t += _wrap(build_family("exposure", s, image_size=image_size), p)
    t += _wrap(build_family("contrast", s, image_size=image_size), p)
    t += _wrap(build_family("clahe", s, image_size=image_size), p)
    if s > 0:
        t += [A.InvertImg(p=p / 3)]
    return Augmenter(t, seed=seed, name=f"radiograph_acquisition(strength={s:g})")


def driving_conditions(strength: float = 0.5, *, p: float = 0.3, spatial: bool = True,
                       image_size: int = 256, seed: int | None = 0) -> Augmenter:
    """Driving conditions: fog / rain / snow, night and low light, sun flare, shadow, motion
    blur, sensor noise, colour cast, JPEG (plus flip and camera-mount jitter if `spatial`).

    Args as in `radiograph_acquisition`; `image_size` scales rain drops, flare radius and motion
    blur length to the image.
    """
    s = float(strength)
    t: list[Any] = []
    if spatial:
        t += _wrap(geometric(s, flip=True), 1.0 if s > 0 else 0.0)
    if s > 0:
        weather = [A.Sequential(build_family(name, s, image_size=image_size), p=1.0)
                   for name in ("fog", "rain", "snow")]
        t += [A.OneOf(weather, p=min(1.0, 1.5 * p))]
    for name in ("night", "sun_flare", "shadow", "motion_blur", "sensor_noise", "colour_cast", "jpeg"):
        t += _wrap(build_family(name, s, image_size=image_size), p)
    return Augmenter(t, seed=seed, name=f"driving_conditions(strength={s:g})")


def photometric(strength: float = 0.5, **kwargs: Any) -> Augmenter:
    """Generic photometric preset (colour jitter, channel shuffle, greyscale, inversion, gamma, blur,
    noise, ... in RandAugment / AugMix composition); see `shiftkit.adapt.augment.photometric`."""
    from shiftkit.adapt.augment.photometric import photometric as build

    kwargs.pop("spatial", None)  # photometric only: nothing spatial to turn off
    kwargs.pop("image_size", None)
    return build(strength, **kwargs)


PRESETS = {"radiograph_acquisition": radiograph_acquisition, "driving_conditions": driving_conditions,
           "photometric": photometric}


def get_preset(name: str, strength: float = 0.5, **kwargs: Any) -> Augmenter:
    """Look a preset up by name (`PRESETS`)."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; known: {', '.join(PRESETS)}")
    return PRESETS[name](strength, **kwargs)
