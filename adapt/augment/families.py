"""Augmentation families: one kind of acquisition or weather shift each, with a strength knob.

A family builder takes `strength` in (0, 1] and `image_size` (the side, in pixels, that
pixel-valued arguments such as a flare radius are scaled to) and returns albumentations
transforms that always fire (p=1). Presets wrap families in a probability; the shift ranking
applies each family alone. All signatures are albumentations 2.0.8's (checked in the venv:
`GaussNoise(std_range)`, `RandomFog(fog_coef_range)`, `ImageCompression(quality_range)`, ...).

Transforms that reject 1-channel images (fog, rain, snow, sun flare, ISO noise, Planckian
jitter) are wrapped in `OnThreeChannels`, so every family works on grey and RGB images.
`rgb_only` families (colour cast) mean nothing on grey images and are skipped there.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import albumentations as A  # noqa: E402
import cv2  # noqa: E402

from shiftkit.adapt.augment.custom import BiasField, CollimationBorder, FastFog, Haze, OnThreeChannels  # noqa: E402

__all__ = ["Family", "FAMILIES", "family_names", "build_family", "geometric"]


def _odd(x: float, lo: int = 3) -> int:
    k = max(lo, int(round(x)))
    return k if k % 2 == 1 else k + 1


def _exposure(s: float, size: int) -> list[Any]:
    # Under/over-exposure and a different display gamma (gamma = value / 100 in albumentations).
    return [
        A.RandomBrightnessContrast(brightness_limit=(-0.3 * s, 0.3 * s), contrast_limit=(0.0, 0.0), p=1.0),
        A.RandomGamma(gamma_limit=(100 - 50 * s, 100 + 100 * s), p=1.0),
    ]


def _contrast(s: float, size: int) -> list[Any]:
    return [A.RandomBrightnessContrast(brightness_limit=(0.0, 0.0), contrast_limit=(-0.5 * s, 0.4 * s), p=1.0)]


def _noise(s: float, size: int) -> list[Any]:
    # Gaussian (electronic) or Poisson-like (quantum) noise; std in units of the full range.
    return [A.OneOf([
        A.GaussNoise(std_range=(0.3 * 0.12 * s, 0.12 * s), p=1.0),
        # ShotNoise's sd at mid-grey is about 0.49 * sqrt(scale) (measured), so scale ~ sd^2 gives
        # the same sd range as the Gaussian branch.
        A.ShotNoise(scale_range=(0.0054 * s * s, 0.06 * s * s), p=1.0),
    ], p=1.0)]


def _sensor_noise(s: float, size: int) -> list[Any]:
    # Camera noise: chroma + luminance ISO noise, or plain Gaussian.
    return [A.OneOf([
        OnThreeChannels([A.ISONoise(color_shift=(0.01, 0.01 + 0.05 * s), intensity=(0.1, 0.1 + 0.7 * s), p=1.0)]),
        A.GaussNoise(std_range=(0.3 * 0.12 * s, 0.12 * s), p=1.0),
    ], p=1.0)]


def _blur(s: float, size: int) -> list[Any]:
    sigma_hi = 0.3 + 2.2 * s * size / 128
    return [A.GaussianBlur(blur_limit=0, sigma_limit=(0.3 + 0.3 * (sigma_hi - 0.3), sigma_hi), p=1.0)]


def _motion_blur(s: float, size: int) -> list[Any]:
    k = _odd(3 + 12 * s * size / 256)
    return [A.MotionBlur(blur_limit=(3, k), allow_shifted=False, p=1.0)]


def _resolution(s: float, size: int) -> list[Any]:
    # Acquired at a lower resolution and upsampled back: area down, linear up (a detector's bins).
    return [A.Downscale(scale_range=(1.0 - 0.75 * s, 1.0 - 0.4 * s),
                        interpolation_pair={"downscale": cv2.INTER_AREA, "upscale": cv2.INTER_LINEAR}, p=1.0)]


def _clahe(s: float, size: int) -> list[Any]:
    tiles = max(2, min(8, size // 32))
    return [A.CLAHE(clip_limit=(1.0, 1.0 + 4.0 * s), tile_grid_size=(tiles, tiles), p=1.0)]


def _bias_field(s: float, size: int) -> list[Any]:
    return [BiasField(coeff_range=(0.0, 0.4 * s), degree=3, p=1.0)]


def _inversion(s: float, size: int) -> list[Any]:
    # Polarity is all-or-nothing per image; strength is the fraction of images inverted.
    return [A.InvertImg(p=min(1.0, s))]


def _collimation(s: float, size: int) -> list[Any]:
    return [CollimationBorder(max_fraction=0.2 * s, p=1.0)]


def _fog(s: float, size: int) -> list[Any]:
    # A global veil (Haze) plus albumentations' fog particles for patchiness (FastFog renders
    # RandomFog's model fast, see custom.py); both work on any channel count.
    return [Haze(beta_range=(0.3 * s, 1.5 * s), airlight_range=(0.7, 0.95), depth_gradient=0.6, p=1.0),
            FastFog(alpha_coef=0.08, fog_coef_range=(0.1 + 0.2 * s, 0.1 + 0.5 * s), p=1.0)]


def _rain(s: float, size: int) -> list[Any]:
    return [OnThreeChannels([A.RandomRain(
        slant_range=(-10, 10), drop_length=max(2, int(round(size * (0.04 + 0.08 * s)))), drop_width=1,
        drop_color=(200, 200, 200), blur_value=3, brightness_coefficient=1.0 - 0.35 * s,
        rain_type="default" if s < 0.5 else "heavy", p=1.0)])]


def _snow(s: float, size: int) -> list[Any]:
    return [OnThreeChannels([A.RandomSnow(snow_point_range=(0.1 * s, 0.1 + 0.3 * s), brightness_coeff=2.0,
                                          method="bleach", p=1.0)])]


def _night(s: float, size: int) -> list[Any]:
    # Low light: darker, crushed shadows (gamma > 1), less colour.
    return [
        A.RandomBrightnessContrast(brightness_limit=(-0.5 * s, -0.2 * s), contrast_limit=(-0.3 * s, 0.0), p=1.0),
        A.RandomGamma(gamma_limit=(100 + 30 * s, 100 + 120 * s), p=1.0),
        A.ColorJitter(brightness=(1.0, 1.0), contrast=(1.0, 1.0), saturation=(1.0 - 0.6 * s, 1.0),
                      hue=(0.0, 0.0), p=1.0),
    ]


def _sun_flare(s: float, size: int) -> list[Any]:
    return [OnThreeChannels([A.RandomSunFlare(
        flare_roi=(0.0, 0.0, 1.0, 0.5), src_radius=max(4, int(size * (0.15 + 0.3 * s))),
        num_flare_circles_range=(2, 2 + int(round(6 * s))), method="overlay", p=1.0)])]


def _shadow(s: float, size: int) -> list[Any]:
    return [A.RandomShadow(shadow_roi=(0.0, 0.4, 1.0, 1.0), num_shadows_limit=(1, 1 + int(round(2 * s))),
                           shadow_dimension=5, shadow_intensity_range=(0.2 * s + 0.1, 0.6 * s + 0.1), p=1.0)]


def _colour_cast(s: float, size: int) -> list[Any]:
    shift = 40 * s  # albumentations expresses RGBShift limits in uint8 units for float images too
    return [
        OnThreeChannels([A.PlanckianJitter(mode="blackbody", p=1.0)]) if s >= 0.5 else A.NoOp(p=1.0),
        A.RGBShift(r_shift_limit=(-shift, shift), g_shift_limit=(-shift, shift), b_shift_limit=(-shift, shift),
                   p=1.0),
    ]


def _jpeg(s: float, size: int) -> list[Any]:
    hi = int(round(95 - 65 * s))
    return [A.ImageCompression(compression_type="jpeg", quality_range=(max(5, hi - 20), max(6, hi)), p=1.0)]


@dataclass(frozen=True)
class Family:
    """One augmentation family: `build(strength, image_size) -> transforms`.

    `kind` groups families for the shift ranking's verdict: exposure, noise, blur, resolution,
    processing, polarity, framing, weather, lighting, colour, compression.
    """

    name: str
    description: str
    kind: str
    build: Callable[[float, int], list[Any]]
    rgb_only: bool = False
    domains: tuple[str, ...] = ("radiograph", "driving")


FAMILIES: dict[str, Family] = {f.name: f for f in [
    Family("exposure", "exposure and display gamma", "exposure", _exposure),
    Family("contrast", "global contrast", "exposure", _contrast),
    Family("noise", "Gaussian or Poisson (quantum) noise", "noise", _noise),
    Family("sensor_noise", "camera ISO / Gaussian noise", "noise", _sensor_noise, domains=("driving",)),
    Family("blur", "Gaussian blur (focal spot, detector PSF, defocus)", "blur", _blur),
    Family("motion_blur", "motion blur", "blur", _motion_blur, domains=("driving",)),
    Family("resolution", "low-resolution acquisition, resampled back", "resolution", _resolution),
    Family("clahe", "CLAHE local contrast processing", "processing", _clahe, domains=("radiograph",)),
    Family("bias_field", "smooth multiplicative field (heel effect, uneven exposure)", "exposure", _bias_field,
           domains=("radiograph",)),
    Family("inversion", "inverted polarity", "polarity", _inversion, domains=("radiograph",)),
    Family("collimation", "collimation borders", "framing", _collimation, domains=("radiograph",)),
    Family("fog", "fog / haze", "weather", _fog, domains=("driving",)),
    Family("rain", "rain streaks and dimming", "weather", _rain, domains=("driving",)),
    Family("snow", "snow", "weather", _snow, domains=("driving",)),
    Family("night", "low light / night", "lighting", _night, domains=("driving",)),
    Family("sun_flare", "sun flare / glare", "lighting", _sun_flare, domains=("driving",)),
    Family("shadow", "cast shadows", "lighting", _shadow, domains=("driving",)),
    Family("colour_cast", "white balance / colour cast", "colour", _colour_cast, rgb_only=True, domains=("driving",)),
    Family("jpeg", "JPEG compression artefacts", "compression", _jpeg, domains=("driving",)),
]}


def family_names(domain: str | None = None, *, channels: int | None = None) -> list[str]:
    """Family names, optionally only those meant for `domain` ('radiograph'/'driving') and
    applicable to images with `channels` channels."""
    return [f.name for f in FAMILIES.values()
            if (domain is None or domain in f.domains) and not (channels == 1 and f.rgb_only)]


def build_family(name: str, strength: float, *, image_size: int = 256) -> list[Any]:
    """Transforms (p=1) of family `name` at `strength` in [0, 1]; empty at strength 0."""
    if name not in FAMILIES:
        raise ValueError(f"unknown augmentation family {name!r}; known: {', '.join(FAMILIES)}")
    _check_strength(strength)
    if strength == 0:
        return []
    return FAMILIES[name].build(float(strength), int(image_size))


def geometric(strength: float, *, flip: bool = False) -> list[Any]:
    """Small positioning jitter (shift, scale, rotation; optional horizontal flip).

    Masks follow with nearest-neighbour interpolation and the border is reflected for image and
    mask alike, so no label is invented at the edge and none is blended."""
    _check_strength(strength)
    if strength == 0:
        return []
    out: list[Any] = [A.Affine(
        scale=(1.0 - 0.1 * strength, 1.0 + 0.1 * strength),
        translate_percent=(-0.05 * strength, 0.05 * strength),
        rotate=(-7.0 * strength, 7.0 * strength),
        interpolation=cv2.INTER_LINEAR, mask_interpolation=cv2.INTER_NEAREST,
        border_mode=cv2.BORDER_REFLECT_101, p=1.0)]
    if flip:
        out.insert(0, A.HorizontalFlip(p=0.5))
    return out


def _check_strength(strength: float) -> None:
    if not (0.0 <= float(strength) <= 1.0):
        raise ValueError(f"strength must be in [0, 1], got {strength}")
