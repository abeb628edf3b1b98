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
import cv2  # noqa: E402
import numpy as np  # noqa: E402
from albumentations.core.transforms_interface import ImageOnlyTransform  # noqa: E402

__all__ = ["BiasField", "CollimationBorder", "FastFog", "Haze", "OnThreeChannels", "PixelDistributionAdaptationFixed"]


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


def _disk(radius: int) -> np.ndarray:
    r = int(radius)
    yy, xx = np.mgrid[-r:r + 1, -r:r + 1]
    return (xx * xx + yy * yy <= r * r).astype(np.float32)


class FastFog(A.RandomFog):
    """albumentations' `RandomFog` model (same arguments, same particle layout), made fast.

    albumentations 2.0.8 draws each of its ~1,000-3,000 fog particles by copying the whole
    image, drawing a white disc and alpha-blending (50-250 ms for ONE 64 px image, measured),
    and samples them one Python call at a time, which would starve training. Here the particle
    positions and radii follow RandomFog's scheme (shrinking centred regions, radii in
    [r_max / 2, r_max)) but are drawn vectorised from the transform's generator. Each particle blends pixels under its disc toward white by
    alpha, so the result is exactly `img * (1 - alpha) ** n + (1 - (1 - alpha) ** n)` with n the
    number of discs covering a pixel; n is the particle-centre map convolved with a disc, one
    convolution per distinct radius. The final light blur is albumentations' own. Works on
    float32 in [0, 1] (no 8-bit round trip) and on any channel count.
    """

    def get_params_dependent_on_data(self, params: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
        intensity = self.py_random.uniform(*self.fog_coef_range)
        h, w = params["shape"][:2]
        region = max(1, int(w // 3 * intensity))
        cx, cy = w // 2, h // 2
        cur_w, cur_h = w, h
        chunks = []
        for _ in range(10):  # RandomFog's max_iterations
            if not (cur_w > region and cur_h > region):
                break
            n = int(cur_w * cur_h / (region * region) * intensity * 10)
            xs = self.random_generator.integers(cx - cur_w // 2, cx + cur_w // 2 + 1, size=n)
            ys = self.random_generator.integers(cy - cur_h // 2, cy + cur_h // 2 + 1, size=n)
            chunks.append(np.stack([xs, ys], 1))
            cur_w, cur_h = int(cur_w * 0.9), int(cur_h * 0.9)
        positions = np.concatenate(chunks) if chunks else np.zeros((0, 2), np.int64)
        r_max = max(2, int(min(h, w) * 0.1 * intensity))
        radii = self.random_generator.integers(max(1, r_max // 2), r_max, size=len(positions))
        return {"particle_positions": positions, "radiuses": radii, "intensity": intensity}

    def apply(self, img: np.ndarray, particle_positions: np.ndarray | None = None,
              radiuses: np.ndarray | None = None, intensity: float = 0.0, **params: Any) -> np.ndarray:
        if particle_positions is None or len(particle_positions) == 0:
            return img
        h, w = img.shape[:2]
        radii = np.asarray(radiuses, dtype=np.int64)
        pos = np.asarray(particle_positions, dtype=np.int64)
        pad = int(radii.max()) + 1
        count = np.zeros((h, w), np.float32)
        for r in np.unique(radii):
            sel = pos[radii == r]
            centres = np.zeros((h + 2 * pad, w + 2 * pad), np.float32)
            np.add.at(centres, (sel[:, 1] + pad, sel[:, 0] + pad), 1.0)
            covered = cv2.filter2D(centres, -1, _disk(int(r)), borderType=cv2.BORDER_CONSTANT)
            count += covered[pad:pad + h, pad:pad + w]
        alpha = float(self.alpha_coef) * float(intensity)
        keep = np.power(1.0 - alpha, np.maximum(count, 0.0))[..., None].astype(np.float32)
        out = img.astype(np.float32) * keep + (1.0 - keep)
        blur = max(3, int(min(h, w) // 30))
        blur += 1 - blur % 2
        out = cv2.GaussianBlur(out, (blur, blur), 0).reshape(img.shape)
        return np.clip(out, 0.0, 1.0).astype(np.float32)


class PixelDistributionAdaptationFixed(A.PixelDistributionAdaptation):
    """albumentations 2.0.8's `PixelDistributionAdaptation` with its blending repaired.

    In 2.0.8, `adapt_pixel_distribution` blends the uint8-scaled input with the adapted image on
    another scale, so any `blend_ratio` below 1 returns a white image for float input (and uint8
    input comes back black even at 1; measured in this venv, see tests). The adapted image at
    weight 1 on float32 input is correct, so this class asks for exactly that and blends itself.
    Input must be float32 (the `Augmenter` always converts).
    """

    def apply(self, img: np.ndarray, reference_image: np.ndarray | None = None, blend_ratio: float = 1.0,
              **params: Any) -> np.ndarray:
        from albumentations.augmentations.mixing.domain_adaptation_functional import adapt_pixel_distribution

        ref = reference_image.astype(np.float32)
        if ref.shape[:2] != img.shape[:2]:
            ref = cv2.resize(ref, (img.shape[1], img.shape[0]), interpolation=cv2.INTER_AREA).reshape(
                img.shape[0], img.shape[1], -1)
        adapted = adapt_pixel_distribution(img.astype(np.float32), ref=ref, transform_type=self.transform_type,
                                           weight=1.0).reshape(img.shape)
        out = img.astype(np.float32) * (1.0 - blend_ratio) + adapted.astype(np.float32) * blend_ratio
        return np.clip(out, 0.0, 1.0).astype(np.float32)


class Haze(ImageOnlyTransform):
    """Atmospheric veil (Koschmieder): I = J t + A (1 - t), t = exp(-beta d).

    albumentations has no global haze: its `RandomFog` only scatters small bright particles,
    which at dashcam resolutions looks like speckle, not fog (the veil that lifts blacks and
    flattens contrast with distance). Depth d grows linearly from the bottom row (d = 1 -
    `depth_gradient`) to the top row (d = 1): farther scene, thicker veil. beta is drawn in
    `beta_range`, the airlight A (grey level of the fog) in `airlight_range`.
    """

    def __init__(self, beta_range: tuple[float, float] = (0.2, 1.2), airlight_range: tuple[float, float] = (0.7, 0.95),
                 depth_gradient: float = 0.6, p: float = 0.5):
        super().__init__(p=p)
        self.beta_range = (float(beta_range[0]), float(beta_range[1]))
        self.airlight_range = (float(airlight_range[0]), float(airlight_range[1]))
        self.depth_gradient = float(depth_gradient)

    def get_params(self) -> dict[str, Any]:
        return {"beta": float(self.random_generator.uniform(*self.beta_range)),
                "airlight": float(self.random_generator.uniform(*self.airlight_range))}

    def apply(self, img: np.ndarray, beta: float = 0.0, airlight: float = 0.8, **params: Any) -> np.ndarray:
        h = img.shape[0]
        depth = np.linspace(1.0, 1.0 - self.depth_gradient, h, dtype=np.float32)[:, None, None]
        t = np.exp(-beta * depth).astype(np.float32)
        return np.clip(img.astype(np.float32) * t + airlight * (1.0 - t), 0.0, 1.0)

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("beta_range", "airlight_range", "depth_gradient")
