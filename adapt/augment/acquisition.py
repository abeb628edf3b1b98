"""Acquisition matching: blur and noise source images as much as the target camera does.

Restyling (`restyle.py`) moves tone, contrast and colour; it leaves sharpness and sensor noise
alone, yet a new scanner or camera changes those first (lower resolution, detector blur, more
quantum noise). This module estimates, from unlabelled images only, the Gaussian blur and white
noise that turn the source images' power spectrum into the target's, and applies exactly that to
source images during training.

The fit is closed-form per grid point: for a zero-mean image with 2-D power spectrum ``P(k)``, a
Gaussian blur of ``sigma`` pixels multiplies it by the squared frequency response of the very
kernel the transform applies (sampled, so at small ``sigma`` it is not the continuous Gaussian's
``exp(-4 pi^2 sigma^2 |f|^2)``; ``f`` in cycles per pixel) and white noise of standard deviation ``n * std(image)`` adds ``n^2 var H W``
(numpy's unnormalised FFT). The radially averaged log spectra of the degraded source images are
compared with the target's after removing a constant offset (a global contrast gain), and the
``(sigma, n)`` of the smallest squared difference is kept. A grid, not a continuous fit: the
criterion is then exact, deterministic and cheap (two FFTs per image).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import cv2  # noqa: E402
import numpy as np  # noqa: E402
from albumentations.core.transforms_interface import ImageOnlyTransform  # noqa: E402

__all__ = ["AcquisitionFit", "AcquisitionMatch", "fit_acquisition", "radial_log_spectrum"]

#: Blur grid, pixels of the image as given: none to about three pixels.
SIGMAS: tuple[float, ...] = (0.0, 0.3, 0.5, 0.7, 0.9, 1.1, 1.4, 1.8, 2.3, 3.0)
#: Noise grid, standard deviation as a fraction of the image's own standard deviation.
NOISES: tuple[float, ...] = (0.0, 0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.45)
_BINS = 16


@dataclass(frozen=True)
class AcquisitionFit:
    """The degradation that best maps source spectra onto target spectra.

    ``sigma``: Gaussian blur sd in pixels; ``noise``: white-noise sd as a fraction of each image's
    standard deviation; ``distance``: mean squared log-spectrum difference at the optimum, and
    ``distance_identity`` the same with no degradation (how much the fit explains).
    """

    sigma: float
    noise: float
    distance: float
    distance_identity: float


def _power(images: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """2-D power spectra ``(N, H, W)`` of the grey, zero-mean images, their variances ``(N,)`` and
    the radial frequency ``|f|`` ``(H, W)`` in cycles per pixel. Images are ``H x W x C``."""
    shapes = {np.asarray(im).shape[:2] for im in images}
    if len(shapes) != 1:
        raise ValueError(f"acquisition fit: images must share one size, got {sorted(shapes)}")
    h, w = shapes.pop()
    grey = np.stack([np.asarray(im, np.float32).reshape(h, w, -1).mean(-1) for im in images]).astype(np.float64)
    grey -= grey.mean(axis=(1, 2), keepdims=True)
    variance = grey.var(axis=(1, 2))
    # A Hann window: the FFT wraps the image around, and the unblurred seam between opposite edges
    # would otherwise put power at every frequency that no blur can take away.
    window = np.hanning(h)[:, None] * np.hanning(w)[None, :]
    power = np.abs(np.fft.fft2(grey * window)) ** 2 / np.mean(window**2)
    fy, fx = np.fft.fftfreq(h)[:, None], np.fft.fftfreq(w)[None, :]
    return power, variance, np.sqrt(fx**2 + fy**2)


def _radial(power: np.ndarray, radius: np.ndarray) -> np.ndarray:
    """Mean log of the image-averaged ``power`` in ``_BINS`` rings from just above DC to Nyquist."""
    edges = np.linspace(0.0, 0.5, _BINS + 1)
    mean = power.mean(axis=0)
    out = []
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        ring = (radius > max(lo, 1e-9)) & (radius <= hi)
        out.append(np.log(mean[ring].mean() + 1e-12) if ring.any() else np.nan)
    return np.asarray(out)


def radial_log_spectrum(images: Sequence[np.ndarray]) -> np.ndarray:
    """Radially averaged log power spectrum ``(16,)`` of ``H x W x C`` images (one size)."""
    power, _, radius = _power(images)
    return _radial(power, radius)


def _kernel(sigma: float) -> np.ndarray:
    """The sampled 1-D Gaussian the transform blurs with (rows, then columns)."""
    half = max(1, int(np.ceil(3.0 * sigma)))
    return cv2.getGaussianKernel(2 * half + 1, sigma, cv2.CV_64F).ravel()


def _response2(sigma: float, h: int, w: int) -> np.ndarray:
    """Squared frequency response ``(H, W)`` of the separable blur on numpy's FFT grid."""
    if sigma <= 0.05:
        return np.ones((h, w))
    k = _kernel(sigma)
    j = np.arange(len(k)) - len(k) // 2

    def along(n: int) -> np.ndarray:
        return np.cos(2.0 * np.pi * np.fft.fftfreq(n)[:, None] * j[None, :]) @ k

    return (along(h)[:, None] * along(w)[None, :]) ** 2


def _distance(a: np.ndarray, b: np.ndarray) -> float:
    d = a - b
    d = d[np.isfinite(d)]
    return float(np.mean((d - d.mean()) ** 2))  # the offset is a global gain: not acquisition


def fit_acquisition(source: Sequence[np.ndarray], target: Sequence[np.ndarray], *,
                    sigmas: Sequence[float] = SIGMAS, noises: Sequence[float] = NOISES) -> AcquisitionFit:
    """Grid-fit the blur and noise that make ``source`` images' spectra look like ``target``'s.

    Args:
        source, target: unlabelled ``H x W x C`` float images in [0, 1], one size for both.
        sigmas: Gaussian blur sds to try, pixels.
        noises: noise sds to try, fractions of each image's standard deviation.

    Returns:
        The best :class:`AcquisitionFit` (ties go to the smaller degradation).
    """
    if len(source) == 0 or len(target) == 0:
        raise ValueError("acquisition fit: needs source and target images")
    p_s, var_s, radius = _power(source)
    p_t, _, radius_t = _power(target)
    if radius.shape != radius_t.shape:
        raise ValueError(f"acquisition fit: source {radius.shape} and target {radius_t.shape} differ in size")
    goal = _radial(p_t, radius)
    n_pix = radius.size
    best = None
    identity = _distance(_radial(p_s, radius), goal)
    for sigma in sorted(sigmas):
        blurred = p_s * _response2(sigma, *radius.shape)
        for noise in sorted(noises):
            degraded = blurred + (noise**2 * var_s * n_pix)[:, None, None]
            d = _distance(_radial(degraded, radius), goal)
            if best is None or d < best[0] - 1e-9:
                best = (d, float(sigma), float(noise))
    assert best is not None
    return AcquisitionFit(sigma=best[1], noise=best[2], distance=best[0], distance_identity=identity)


class AcquisitionMatch(ImageOnlyTransform):
    """Blur by ``sigma`` pixels, then add white noise of ``noise`` times the image's standard
    deviation; each jittered by a factor in ``[1 - jitter, 1 + jitter]`` per image. ``H x W x C``
    float32 in [0, 1] in and out."""

    def __init__(self, sigma: float, noise: float, *, jitter: float = 0.25, p: float = 1.0):
        super().__init__(p=p)
        self.sigma = float(sigma)
        self.noise = float(noise)
        self.jitter = float(jitter)

    def get_params(self) -> dict[str, Any]:
        g = self.random_generator
        lo, hi = 1.0 - self.jitter, 1.0 + self.jitter
        return {"sigma": self.sigma * g.uniform(lo, hi), "noise": self.noise * g.uniform(lo, hi),
                "noise_seed": int(g.integers(0, 2**31 - 1))}

    def apply(self, img: np.ndarray, sigma: float = 0.0, noise: float = 0.0, noise_seed: int = 0,
              **params: Any) -> np.ndarray:
        out = np.asarray(img, np.float32)
        if sigma > 0.05:
            k = _kernel(sigma)
            out = cv2.sepFilter2D(out, -1, k, k, borderType=cv2.BORDER_REFLECT).reshape(img.shape)
        if noise > 0:
            sd = float(out.mean(-1).std()) * noise
            grey_noise = np.random.default_rng(noise_seed).normal(0.0, sd, out.shape[:2]).astype(np.float32)
            out = out + grey_noise[..., None]  # one sensor: the same noise in every channel
        return np.clip(out, 0.0, 1.0)

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("sigma", "noise", "jitter")
