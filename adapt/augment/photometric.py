"""A generic photometric preset: colour and intensity changes that keep every label valid.

Unlike the domain presets (radiograph acquisition, driving conditions) it models no device or
weather; it is the FixMatch / WILDS-style "strong augmentation" that makes a model rely less
on intensity, colour and texture statistics, usable with every method (``AugmentedDataset``
on the source, or as a method's ``augmenter``). Masks are never changed: every operation is
photometric.

Operations (each at ``strength`` ``s`` in [0, 1]): colour jitter (brightness, contrast,
saturation, hue), channel shuffle, greyscale, intensity inversion, gamma, Gaussian blur,
Gaussian noise, sharpening, posterisation and histogram equalisation. Colour operations run
on 1-channel images through a 3-channel round trip (``OnThreeChannels``), where they reduce
to their intensity part.

Composition (``mode``):

* ``"randaugment"`` (Cubuk et al. 2020): ``n_ops`` operations drawn at random per image;
* ``"augmix"`` (Hendrycks et al. 2020): ``width`` chains of 1-``depth`` random operations,
  mixed with Dirichlet(1) weights and blended with the original image by a Beta(1, 1)
  weight: ``x' = m x + (1 - m) sum_i w_i chain_i(x)``, which keeps images close to the data
  manifold;
* ``"sequential"``: every operation in turn, each with probability ``p``.
"""

from __future__ import annotations

import os
from typing import Any

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import albumentations as A  # noqa: E402
import numpy as np  # noqa: E402
from albumentations.core.transforms_interface import ImageOnlyTransform  # noqa: E402

from shiftkit.adapt.augment.custom import OnThreeChannels  # noqa: E402
from shiftkit.adapt.augment.pipeline import Augmenter, _walk  # noqa: E402

__all__ = ["AugMix", "PHOTOMETRIC_OPS", "photometric", "photometric_ops"]

PHOTOMETRIC_OPS = ("colour_jitter", "channel_shuffle", "greyscale", "invert", "gamma", "blur", "noise", "sharpen",
                   "posterize", "equalize")


def photometric_ops(strength: float = 0.5, *, ops: tuple[str, ...] = PHOTOMETRIC_OPS) -> list[Any]:
    """The albumentations transforms (``p=1``) of :data:`PHOTOMETRIC_OPS` at ``strength``."""
    s = float(strength)
    table = {
        "colour_jitter": lambda: OnThreeChannels([A.ColorJitter(brightness=0.4 * s, contrast=0.4 * s,
                                                                saturation=0.4 * s, hue=0.1 * s, p=1.0)]),
        "channel_shuffle": lambda: OnThreeChannels([A.ChannelShuffle(p=1.0)]),
        "greyscale": lambda: OnThreeChannels([A.ToGray(p=1.0)]),
        "invert": lambda: A.InvertImg(p=1.0),
        "gamma": lambda: A.RandomGamma(gamma_limit=(100 - 50 * s, 100 + 100 * s), p=1.0),
        "blur": lambda: A.GaussianBlur(blur_limit=0, sigma_limit=(0.1, 0.1 + 1.5 * s), p=1.0),
        "noise": lambda: A.GaussNoise(std_range=(0.01, 0.01 + 0.1 * s), p=1.0),
        "sharpen": lambda: A.Sharpen(alpha=(0.1, 0.1 + 0.5 * s), lightness=(1.0, 1.0), p=1.0),
        "posterize": lambda: _Posterize(bits=max(2, int(round(8 - 5 * s))), p=1.0),
        "equalize": lambda: OnThreeChannels([A.Equalize(p=1.0)]),
    }
    unknown = [o for o in ops if o not in table]
    if unknown:
        raise ValueError(f"unknown photometric operation(s) {unknown}; known: {PHOTOMETRIC_OPS}")
    return [table[o]() for o in ops]


class _Posterize(ImageOnlyTransform):
    """Keep ``bits`` bits of intensity (float images in [0, 1] too, where albumentations' needs uint8)."""

    def __init__(self, bits: int = 4, p: float = 1.0):
        super().__init__(p=p)
        self.bits = int(bits)

    def apply(self, img: np.ndarray, **params: Any) -> np.ndarray:
        levels = 2 ** self.bits
        if img.dtype == np.uint8:
            return (img // (256 // levels) * (256 // levels)).astype(np.uint8)
        return (np.floor(np.clip(img, 0, 1) * (levels - 1e-6)) / (levels - 1)).astype(img.dtype)

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("bits",)


class AugMix(ImageOnlyTransform):
    """AugMix (Hendrycks et al. 2020): ``m x + (1 - m) sum_i w_i chain_i(x)``, ``w ~ Dir(1)``, ``m ~ Beta(1, 1)``.

    Args:
        ops: transforms (``p=1``) the chains draw from.
        width: number of chains.
        depth: each chain applies 1..``depth`` operations.
        p: probability of applying the transform at all.

    Float images in [0, 1] (what :class:`Augmenter` passes); all randomness comes from the
    transform's own generator, so an :class:`Augmenter` seed reproduces it.
    """

    def __init__(self, ops: list[Any], width: int = 3, depth: int = 3, p: float = 1.0):
        super().__init__(p=p)
        self.ops = list(ops)
        self.width = int(width)
        self.depth = int(depth)

    def apply(self, img: np.ndarray, **params: Any) -> np.ndarray:
        rng = self.random_generator
        w = rng.dirichlet(np.ones(self.width))
        m = rng.beta(1.0, 1.0)
        mixed = np.zeros_like(img, dtype=np.float32)
        for i in range(self.width):
            x = img
            for _ in range(int(rng.integers(1, self.depth + 1))):
                op = self.ops[int(rng.integers(len(self.ops)))]
                for node in _walk(op):  # nested transforms too, or a call would not be reproducible
                    node.set_random_seed(int(rng.integers(2**31)))
                x = op(image=x)["image"]
            mixed += w[i] * x.astype(np.float32)
        return (m * img.astype(np.float32) + (1 - m) * mixed).astype(img.dtype)

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("width", "depth")


def photometric(strength: float = 0.5, *, p: float = 0.5, mode: str = "randaugment", n_ops: int = 2,
                width: int = 3, depth: int = 3, ops: tuple[str, ...] = PHOTOMETRIC_OPS,
                seed: int | None = 0, **_: Any) -> Augmenter:
    """Generic photometric augmentation (see the module docstring).

    Args:
        strength: 0..1 magnitude of every operation; 0 is the identity.
        p: probability the composition is applied to an image (``"sequential"``: per operation).
        mode: ``"randaugment"``, ``"augmix"`` or ``"sequential"``.
        n_ops: operations per image for ``"randaugment"`` (2, RandAugment's ImageNet N; literature).
        width, depth: AugMix's chains (3 and 1-3, the paper's; literature).
        ops: a subset of :data:`PHOTOMETRIC_OPS` (e.g. drop ``"invert"`` where polarity carries meaning).
        seed: base seed (see :class:`Augmenter`).

    >>> aug = photometric(0.5, mode="augmix"); out = aug(image_hwc)["image"]  # doctest: +SKIP
    """
    s = float(strength)
    if mode not in ("randaugment", "augmix", "sequential"):
        raise ValueError(f"mode must be 'randaugment', 'augmix' or 'sequential', got {mode!r}")
    name = f"photometric(strength={s:g}, mode={mode})"
    if s <= 0:
        return Augmenter([], seed=seed, name=name)
    transforms = photometric_ops(s, ops=ops)
    if mode == "randaugment":
        t: list[Any] = [A.SomeOf(transforms, n=min(n_ops, len(transforms)), replace=False, p=p)]
    elif mode == "augmix":
        t = [AugMix(transforms, width=width, depth=depth, p=p)]
    else:
        t = [A.Sequential([x], p=p) for x in transforms]
    return Augmenter(t, seed=seed, name=name)
