"""Real handwritten digits seen through different acquisition devices.

The pixels are real: the 1,797 handwritten digits (8 x 8, 17 grey levels, 10 classes) that ship
with scikit-learn (``sklearn.datasets.load_digits``, the UCI optical-recognition set), and, as
the background of camera shots, the two real photographs of ``load_sample_images``. Nothing is
downloaded. What is procedural is the *acquisition*: each domain is a device that captures the
same kind of handwriting differently, as a new scanner or camera does.

- ``scanner`` (default source): dark ink on clean white paper, sharp, nearly noise-free.
- ``camera`` (default target): a phone photo of the sheet: the digit in coloured ink on a real
  textured background (a crop of a photograph), thicker strokes (ink bleed), lower resolution
  (captured at half size), lens blur, a random gamma, lower contrast and sensor noise.
- ``fax``: binarised, blocky (8 x 8 nearest-neighbour upsampling), speckle.
- ``negative``: inverted polarity (light strokes on a dark ground, as a film or a dark-mode
  screen shot), blur and gamma.

Every image is RGB (3, H, W) in [0, 1]; label = the digit 0-9; ``mask`` = its ink pixels (0
background, 1 ink), after the device's stroke change. Each item applies a small random affine
(rotation, scale, shear, shift) to its digit, so more images than digits can be drawn.

Real images are split between data seeds and splits: a data seed permutes the 1,797 digits into
disjoint pools, 60 % train, 15 % val, 25 % test, and the train pool is split in two halves, one
for the ``scanner`` domain and one for every other domain. So no test digit is ever a training
digit, and a target domain's (unlabelled) training digits are not the source's. Item ``index``
of a split draws digit ``pool[index % len(pool)]``. Deterministic per (domain, seed, split,
index), like the procedural benchmarks.

The shift is real (a classifier trained on ``scanner`` loses accuracy on ``camera``) and
reducible (colour, inversion, blur and noise augmentation and feature alignment win part of it
back); ``tests/datasets/test_shift.py`` measures it.
"""

from __future__ import annotations

import os
import zlib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from ._common import (
    SynthDatasetBase,
    check_domain,
    check_size,
    check_split,
    export_generic,
    gaussian_noise,
    make_rng,
    to_uint8_rgb,
)

__all__ = [
    "DOMAINS", "DEFAULT_SOURCE", "DEFAULT_TARGET", "ATTRIBUTES", "MASK_CLASSES", "CLASSES", "POOL_FRACTIONS",
    "DeviceProfile", "PROFILES", "pool", "sample", "SynthDataset", "export",
]

DEFAULT_SIZE = 32
MIN_SIZE = 8
CLASSES: tuple[str, ...] = tuple(str(d) for d in range(10))
MASK_CLASSES: tuple[str, ...] = ("background", "ink")
#: ``device``: the domain name; ``digit_id``: row of the digit in ``load_digits`` (disjointness checks).
ATTRIBUTES: tuple[str, ...] = ("device", "digit_id")
#: Share of the 1,797 digits in the train / val / test pools of every data seed.
POOL_FRACTIONS: tuple[float, float, float] = (0.60, 0.15, 0.25)
DEFAULT_SOURCE = "scanner"
DEFAULT_TARGET = "camera"


@dataclass(frozen=True)
class DeviceProfile:
    """How one device renders a digit. Lengths are in pixels of a 32-pixel image (they scale)."""

    name: str
    description: str
    stroke: int              # > 0: dilate the ink by this many pixels; < 0: erode
    capture: float           # captured at this fraction of the size, then resampled back (resolution)
    nearest: bool            # blocky nearest-neighbour upsampling of the 8 x 8 digit
    binarise: bool           # hard threshold of the ink (fax)
    blur: tuple[float, float]       # Gaussian blur sigma range (pixels)
    gamma: tuple[float, float]      # display gamma range
    contrast: tuple[float, float]   # ink-to-paper contrast range
    noise: float             # sensor noise SD
    speckle: float           # fraction of pixels flipped to black/white
    photo_background: tuple[float, float]  # contrast range of a real photograph's crop behind the ink (0: none)
    colour_ink: bool         # random ink colour (else grey)
    inverted: bool           # light ink on a dark ground


PROFILES: dict[str, DeviceProfile] = {
    "scanner": DeviceProfile("scanner", "flatbed scanner: dark ink on white paper, sharp, clean", stroke=0,
                             capture=1.0, nearest=False, binarise=False, blur=(0.0, 0.3), gamma=(0.9, 1.1),
                             contrast=(0.85, 1.0), noise=0.01, speckle=0.0, photo_background=(0.0, 0.0),
                             colour_ink=False, inverted=False),
    "camera": DeviceProfile("camera", "phone camera: coloured ink on a real photographed background, thick "
                            "strokes, half resolution, blur, gamma, low contrast, noise", stroke=1, capture=0.5,
                            nearest=False, binarise=False, blur=(0.5, 1.0), gamma=(0.6, 1.7), contrast=(0.7, 1.0),
                            noise=0.04, speckle=0.0, photo_background=(0.15, 0.35), colour_ink=True, inverted=False),
    "fax": DeviceProfile("fax", "fax: binarised, blocky, speckle", stroke=0, capture=1.0, nearest=True,
                         binarise=True, blur=(0.0, 0.0), gamma=(1.0, 1.0), contrast=(1.0, 1.0), noise=0.0,
                         speckle=0.03, photo_background=(0.0, 0.0), colour_ink=False, inverted=False),
    "negative": DeviceProfile("negative", "negative: light strokes on a dark ground, blur, gamma", stroke=0,
                              capture=1.0, nearest=False, binarise=False, blur=(0.5, 1.0), gamma=(0.6, 1.6),
                              contrast=(0.6, 0.9), noise=0.03, speckle=0.0, photo_background=(0.0, 0.0),
                              colour_ink=False, inverted=True),
}
DOMAINS: tuple[str, ...] = tuple(PROFILES)


@lru_cache(maxsize=1)
def _digits() -> tuple[np.ndarray, np.ndarray]:
    """The 1,797 digits as float32 (N, 8, 8) ink in [0, 1] and their int64 labels (read-only)."""
    from sklearn.datasets import load_digits

    d = load_digits()
    images = (d.images / 16.0).astype(np.float32)
    labels = d.target.astype(np.int64)
    images.setflags(write=False)
    labels.setflags(write=False)
    return images, labels


@lru_cache(maxsize=1)
def _photos() -> tuple[np.ndarray, ...]:
    """The real photographs of ``load_sample_images`` as float32 (H, W, 3) RGB in [0, 1]."""
    from sklearn.datasets import load_sample_images

    out = []
    for img in load_sample_images().images:
        a = (np.asarray(img, np.float32) / 255.0)
        a.setflags(write=False)
        out.append(a)
    return tuple(out)


@lru_cache(maxsize=64)
def _pools(seed: int) -> dict[str, np.ndarray]:
    """Row indices of ``load_digits`` in each disjoint pool of data seed ``seed``.

    Keys: ``train_source`` and ``train_other`` (the two halves of the train pool), ``val``, ``test``.
    """
    n = len(_digits()[0])
    key = [int(seed) & 0xFFFFFFFF, zlib.crc32(b"digits-pools")]
    perm = np.random.default_rng(np.random.SeedSequence(key)).permutation(n)
    n_val, n_test = int(round(n * POOL_FRACTIONS[1])), int(round(n * POOL_FRACTIONS[2]))
    test, val, train = perm[:n_test], perm[n_test:n_test + n_val], perm[n_test + n_val:]
    half = len(train) // 2
    out = {"test": test, "val": val, "train_source": train[:half], "train_other": train[half:]}
    for v in out.values():
        v.setflags(write=False)
    return out


def pool(domain: str, seed: int, split: str | None) -> np.ndarray:
    """The ``load_digits`` rows that items of (``domain``, ``seed``, ``split``) draw from.

    Split None (a plain stream) draws from the train pool, like ``"train"``.
    """
    check_domain(domain, DOMAINS, "digits")
    check_split(split)
    pools = _pools(int(seed))
    if split in (None, "train"):
        return pools["train_source" if domain == DEFAULT_SOURCE else "train_other"]
    return pools[split]


def _affine(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A small random 2 x 3 affine about the image centre: rotation +/-12 deg, scale 0.85-1.1,
    shear +/-0.15, shift +/-6 % of the size."""
    a = np.deg2rad(rng.uniform(-12, 12))
    s = rng.uniform(0.85, 1.1)
    sh = rng.uniform(-0.15, 0.15)
    m = s * np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]]) @ np.array([[1.0, sh], [0.0, 1.0]])
    c = np.array([w / 2, h / 2])
    t = c - m @ c + rng.uniform(-0.06, 0.06, 2) * np.array([w, h])
    return np.hstack([m, t[:, None]]).astype(np.float32)


def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A random crop (48-160 px) of a real photograph, resized to (H, W, 3)."""
    photos = _photos()
    ph = photos[int(rng.integers(len(photos)))]
    side = int(rng.integers(48, 161))
    y, x = int(rng.integers(0, ph.shape[0] - side)), int(rng.integers(0, ph.shape[1] - side))
    crop = np.ascontiguousarray(ph[y:y + side, x:x + side])
    return cv2.resize(crop, (w, h), interpolation=cv2.INTER_AREA)


def sample(domain: str, index: int, *, seed: int = 0, size: int | tuple[int, int] = DEFAULT_SIZE,
           split: str | None = None) -> dict[str, Any]:
    """Digit ``index`` of ``domain`` as captured by that device.

    Deterministic per (domain, seed, split, index); ``size`` is an int or (height, width),
    default 32.

    Returns a dict: ``image`` float32 (3, H, W) RGB in [0, 1]; ``label`` int 0-9; ``mask``
    int64 (H, W), 1 on ink; ``domain``, ``index``; attributes ``device`` (the domain) and
    ``digit_id`` (the row of ``load_digits`` the digit comes from).
    """
    check_domain(domain, DOMAINS, "digits")
    h, w = check_size(size, MIN_SIZE)
    prof = PROFILES[domain]
    rows = pool(domain, seed, split)
    rng = make_rng(domain, seed, split, index)
    digit_id = int(rows[int(index) % len(rows)])
    images, labels = _digits()
    scale = min(h, w) / 32.0

    # digit -> ink map at full size, randomly posed; a 1-pixel margin keeps the strokes inside
    small = np.pad(images[digit_id], 1)
    ink = cv2.resize(small, (w, h), interpolation=cv2.INTER_NEAREST if prof.nearest else cv2.INTER_CUBIC)
    flags = cv2.INTER_NEAREST if prof.nearest else cv2.INTER_LINEAR
    ink = np.clip(cv2.warpAffine(ink, _affine(rng, h, w), (w, h), flags=flags, borderValue=0.0), 0.0, 1.0)
    if prof.stroke:
        k = max(1, int(round(abs(prof.stroke) * scale)))
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * k + 1, 2 * k + 1))
        ink = (cv2.dilate if prof.stroke > 0 else cv2.erode)(ink, kernel)
    if prof.binarise:
        ink = (ink > 0.5).astype(np.float32)
    mask = (ink > 0.5).astype(np.int64)

    # paper / ground and ink colours, then composite: image = ground + ink * (ink colour - ground)
    contrast = float(rng.uniform(*prof.contrast))
    if prof.photo_background[1] > 0:
        ground = _background(rng, h, w)
        ground = float(rng.uniform(0.55, 0.9)) + (ground - ground.mean()) * float(rng.uniform(*prof.photo_background))
    else:
        level = 0.1 if prof.inverted else float(rng.uniform(0.9, 1.0))
        tint = rng.uniform(-0.03, 0.03, 3).astype(np.float32)
        ground = np.broadcast_to(np.clip(level + tint, 0, 1), (h, w, 3)).astype(np.float32)
    if prof.colour_ink:
        # a random dark ink colour (ballpoint, felt pen) on the lighter photographed sheet
        ink_col = rng.uniform(0.0, 0.4, 3).astype(np.float32)
    else:
        ink_col = np.full(3, 1.0 if prof.inverted else 0.05, np.float32)
    target = ground + (ink_col - ground) * contrast
    img = ground + ink[..., None] * (target - ground)

    # optics and sensor: resolution, blur, gamma, noise, speckle
    if prof.capture < 1.0:
        ch, cw = max(int(round(h * prof.capture)), 4), max(int(round(w * prof.capture)), 4)
        img = cv2.resize(cv2.resize(img, (cw, ch), interpolation=cv2.INTER_AREA), (w, h),
                         interpolation=cv2.INTER_LINEAR)
    sigma = float(rng.uniform(*prof.blur)) * scale
    if sigma > 0.05:
        img = cv2.GaussianBlur(img, (0, 0), sigma)
    img = np.clip(img, 0.0, 1.0) ** np.float32(rng.uniform(*prof.gamma))
    if prof.noise > 0:
        img = img + prof.noise * gaussian_noise(rng, (h, w, 3))
    if prof.speckle > 0:
        flip = rng.random((h, w)) < prof.speckle
        img[flip] = rng.integers(0, 2, int(flip.sum()))[:, None].astype(np.float32)
    image = np.ascontiguousarray(np.clip(img, 0.0, 1.0).transpose(2, 0, 1), dtype=np.float32)
    return {
        "image": image,
        "label": int(labels[digit_id]),
        "mask": mask,
        "domain": domain,
        "index": int(index),
        "device": domain,
        "digit_id": digit_id,
    }


class SynthDataset(SynthDatasetBase):
    """``n`` digits of one device domain as a torch Dataset.

    Items: ``image`` float32 (3, H, W), ``label`` int64 scalar 0-9, ``mask`` int64 (H, W) ink,
    ``domain``, ``index``, ``device``, ``digit_id``.

    Example:
        >>> ds = SynthDataset("camera", 500, split="train", seed=100)
        >>> ds[0]["image"].shape
        torch.Size([3, 32, 32])
    """

    _sample = staticmethod(sample)
    _domains = DOMAINS
    _attributes = ATTRIBUTES
    _default_size = DEFAULT_SIZE
    _min_size = MIN_SIZE


def export(out_dir: str | os.PathLike[str], domains: str | list[str] | tuple[str, ...] = (DEFAULT_SOURCE, DEFAULT_TARGET),
           n_per_domain: int = 100, *, seed: int = 0, size: int | tuple[int, int] = DEFAULT_SIZE,
           splits: tuple[float, float, float] = (0.6, 0.2, 0.2), progress: bool = True) -> Path:
    """Write images (8-bit RGB PNG), ink masks (8-bit PNG, 0/1) and ``manifest.csv``.

    Columns: image, label, mask, domain, split, device, digit_id; paths relative to ``out_dir``;
    every file written atomically. Returns the manifest path.
    """
    return export_generic(sample, DOMAINS, "digits", out_dir, domains, n_per_domain, seed=seed,
                          size=size, min_size=MIN_SIZE, splits=splits, attributes=ATTRIBUTES,
                          image_to_array=to_uint8_rgb, progress=progress)
