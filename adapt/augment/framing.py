"""Frame matching: give source images the flat borders the target's images carry.

Collimator shutters on a radiograph, letterboxing after a resize, a burned-in black frame: bands of
one flat value along the image edges, whose width is a property of the site, not of the patient.
A network that never saw them reads a wide white band as anatomy, and tone restyling makes it
worse (a target histogram with a fifth of its pixels in the border maps the source's brightest
fifth onto the border value). This module measures each target image's flat band per side from
unlabelled images, and paints one target image's bands (widths as fractions of the side, and
their values) onto each source image. Images without flat bands give width 0: matching is then
the identity, so it is safe to leave on for cameras that have none.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import numpy as np  # noqa: E402
from albumentations.core.transforms_interface import ImageOnlyTransform  # noqa: E402

__all__ = ["FrameMatch", "measure_frame", "measure_frames"]

#: A row or column is flat when its standard deviation is below this (intensity, [0, 1] scale):
#: an 8-bit border is exactly flat, a sensor's smoothest sky is not.
FLAT_TOL = 0.004
#: Bands wider than this fraction of the side are not a frame but an image.
MAX_FRACTION = 0.4


def _band(lines: np.ndarray, tol: float) -> tuple[int, np.ndarray]:
    """How many leading ``lines`` ``(L, K, C)`` are flat and equal to the first; their mean ``(C,)``."""
    first = lines[0].mean(axis=0)
    n = 0
    for line in lines[: int(MAX_FRACTION * len(lines))]:
        if line.std(axis=0).max() >= tol or np.abs(line.mean(axis=0) - first).max() >= tol:
            break
        n += 1
    return n, first


def measure_frame(img: np.ndarray, tol: float = FLAT_TOL) -> tuple[np.ndarray, np.ndarray]:
    """The flat border of one ``H x W x C`` image: widths ``(4,)`` (top, bottom, left, right) as
    fractions of the side, and the band values ``(4, C)`` (zeros where a side has no band)."""
    img = np.asarray(img, np.float32)
    if img.ndim == 2:
        img = img[..., None]
    h, w = img.shape[:2]
    sides = (img, img[::-1], img.transpose(1, 0, 2), img.transpose(1, 0, 2)[::-1])
    widths, values = np.zeros(4), np.zeros((4, img.shape[2]))
    for k, lines in enumerate(sides):
        n, value = _band(lines, tol)
        widths[k] = n / (h if k < 2 else w)
        values[k] = value if n else 0.0
    return widths, values


def measure_frames(images: Sequence[np.ndarray], tol: float = FLAT_TOL) -> list[tuple[np.ndarray, np.ndarray]]:
    """:func:`measure_frame` of every image (the pool :class:`FrameMatch` draws from)."""
    return [measure_frame(im, tol) for im in images]


class FrameMatch(ImageOnlyTransform):
    """Paint the flat bands of a random pool image onto the image (pixel-level: masks untouched).

    ``frames`` from :func:`measure_frames` on target images. Where the image's own band is wider
    than the drawn one, its outer part stays: a source image is never un-framed.
    """

    def __init__(self, frames: Sequence[tuple[np.ndarray, np.ndarray]], p: float = 1.0):
        super().__init__(p=p)
        self.frames = [(np.asarray(w, float), np.asarray(v, float)) for w, v in frames]

    @property
    def any_frame(self) -> bool:
        """Whether any pool image has a band at all (without one the transform is the identity)."""
        return any(w.max() > 0 for w, _ in self.frames)

    def get_params(self) -> dict[str, Any]:
        return {"frame": int(self.random_generator.integers(len(self.frames))) if self.frames else -1}

    def apply(self, img: np.ndarray, frame: int = -1, **params: Any) -> np.ndarray:
        if frame < 0:
            return img
        widths, values = self.frames[frame]
        if widths.max() <= 0:
            return img
        out = np.array(img, np.float32, copy=True)
        h, w = out.shape[:2]
        c = out.shape[2] if out.ndim == 3 else 1
        t, b, lft, r = (int(round(f * n)) for f, n in zip(widths, (h, h, w, w), strict=True))

        def fill(k: int) -> np.ndarray:
            v = values[k]
            return np.float32(v.mean()) if out.ndim == 2 else np.resize(v, c).astype(np.float32)

        if t:
            out[:t] = fill(0)
        if b:
            out[h - b:] = fill(1)
        if lft:
            out[:, :lft] = fill(2)
        if r:
            out[:, w - r:] = fill(3)
        return out

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("frames",)
