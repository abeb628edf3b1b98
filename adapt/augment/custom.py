"""The few pixel transforms albumentations 2.0.8 lacks, written as albumentations transforms.

Images here are H x W x C float32 in [0, 1] (the pipeline converts before and after), and every
random draw comes from the transform's own `random_generator` / `py_random`, so the pipeline's
seeding covers these exactly as it covers albumentations' own transforms.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import albumentations as A  # noqa: E402
import numpy as np  # noqa: E402
from albumentations.core.transforms_interface import ImageOnlyTransform  # noqa: E402

__all__ = ["BiasField", "CollimationBorder", "OnThreeChannels"]


class BiasField(ImageOnlyTransform):
    """Smooth multiplicative intensity field (MONAI `RandBiasField`): uneven exposure / heel effect.

    MONAI draws the polynomial coefficients uniformly in `coeff_range`; the field is
    exp(sum of Legendre terms), so `coeff_range=(0, 0.3)` gives up to roughly +-30 % gain.
    MONAI's own RNG is reseeded from this transform's generator on every call, so the draw is
    reproducible under the pipeline seed.
    """

    def __init__(self, coeff_range: tuple[float, float] = (0.0, 0.3), degree: int = 3, p: float = 0.5):
        super().__init__(p=p)
        self.coeff_range = (float(coeff_range[0]), float(coeff_range[1]))
        self.degree = int(degree)

    def get_params(self) -> dict[str, Any]:
        return {"monai_seed": int(self.random_generator.integers(0, 2**31 - 1))}

    def apply(self, img: np.ndarray, monai_seed: int = 0, **params: Any) -> np.ndarray:
        from monai.transforms import RandBiasField  # local: MONAI import is slow and only needed here

        field = RandBiasField(degree=self.degree, coeff_range=self.coeff_range, prob=1.0)
        field.set_random_state(seed=monai_seed)
        # MONAI is channel-first; the field is the same for every channel (one physical beam).
        out = np.asarray(field(np.ascontiguousarray(img.transpose(2, 0, 1))), dtype=np.float32)
        return np.clip(out.transpose(1, 2, 0), 0.0, 1.0)

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("coeff_range", "degree")


class CollimationBorder(ImageOnlyTransform):
    """Collimator shutters: bands along the image edges filled with a flat value.

    Each side independently gets a band of width U(0, `max_fraction`) of that dimension. The fill
    is black or white at random (sites shutter electronically either way). Pixel-level only: the
    anatomy under the band is still there, so masks are left as they are.
    """

    def __init__(self, max_fraction: float = 0.15, fill: Sequence[float] = (0.0, 1.0), p: float = 0.5):
        super().__init__(p=p)
        self.max_fraction = float(max_fraction)
        self.fill = tuple(float(f) for f in fill)

    def get_params(self) -> dict[str, Any]:
        return {
            "fractions": self.random_generator.uniform(0.0, self.max_fraction, size=4),
            "fill_value": self.fill[int(self.random_generator.integers(0, len(self.fill)))],
        }

    def apply(self, img: np.ndarray, fractions: np.ndarray | None = None, fill_value: float = 0.0,
              **params: Any) -> np.ndarray:
        if fractions is None:
            return img
        h, w = img.shape[:2]
        top, bottom = int(fractions[0] * h), int(fractions[1] * h)
        left, right = int(fractions[2] * w), int(fractions[3] * w)
        out = img.copy()
        out[:top] = fill_value
        out[h - bottom:] = fill_value
        out[:, :left] = fill_value
        out[:, w - right:] = fill_value
        return out

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("max_fraction", "fill")


class OnThreeChannels(ImageOnlyTransform):
    """Run transforms that insist on RGB (fog, rain, snow, flare, ISO noise, ...) on any image.

    A 1-channel image is repeated to 3 channels, transformed, and averaged back to 1 channel; a
    3-channel image passes straight through. Image-only, so masks are untouched by design.
    """

    def __init__(self, transforms: Sequence[A.BasicTransform], p: float = 1.0):
        super().__init__(p=p)
        self.inner = A.Compose(list(transforms), p=1.0)

    def apply(self, img: np.ndarray, **params: Any) -> np.ndarray:
        if img.shape[-1] == 3:
            return self.inner(image=img)["image"]
        if img.shape[-1] != 1:
            raise ValueError(f"OnThreeChannels: expected 1 or 3 channels, got {img.shape[-1]}")
        rgb = np.ascontiguousarray(np.repeat(img, 3, axis=-1))
        out = self.inner(image=rgb)["image"]
        return out.mean(axis=-1, keepdims=True).astype(img.dtype)

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ()
