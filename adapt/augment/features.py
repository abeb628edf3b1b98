"""Cheap hand-made image statistics that each react to one kind of shift.

`shift_features(images) -> (N, D)` float64, no network and no training, vectorised over the batch.
Blocks (why each is there):

* intensity: 16-bin histogram of the grey image + mean, sd and 7 percentiles -> exposure, gamma,
  contrast, inversion, collimation, fog (lifted blacks), night;
* gradients: mean / sd / 50-90-99th percentile of the gradient magnitude -> blur, resolution,
  noise, rain streaks;
* noise: the robust noise sd of Immerkaer (1996), median of the absolute Laplacian residual;
* frequency: share of spectral energy in 6 radial bands -> blur, resolution, noise, JPEG;
* local contrast and dark channel (He et al. 2009: haze lifts the per-patch minimum) -> fog;
* colour (RGB only; zeros for grey): channel means and sds, opponent means (R-G, B-G),
  saturation mean / sd -> colour cast, night.
"""

from __future__ import annotations

import cv2
import numpy as np

__all__ = ["shift_features", "FEATURE_BLOCKS"]

FEATURE_BLOCKS = ("intensity", "gradient", "noise", "frequency", "haze", "colour")
_BANDS = 6


def _as_nhwc(images: np.ndarray | list[np.ndarray]) -> list[np.ndarray]:
    if isinstance(images, np.ndarray):
        if images.ndim == 3:
            images = images[..., None]
        return [images[i] for i in range(images.shape[0])]
    return [im if im.ndim == 3 else im[:, :, None] for im in images]


def _radial_bands(h: int, w: int) -> np.ndarray:
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.rfftfreq(w)[None, :]
    r = np.sqrt(fx**2 + fy**2) / 0.5  # 0 at DC, 1 at Nyquist along an axis
    edges = np.geomspace(1 / 64, 1.0, _BANDS)  # log-spaced; DC and corners beyond Nyquist dropped
    band = np.searchsorted(edges, r, side="right")  # 0 = DC region, 1..BANDS-1, BANDS = beyond
    return band


def _batch(img: np.ndarray, bands: np.ndarray) -> np.ndarray:
    """Features of a batch (N, H, W, C) float32 of one size; vectorised over N."""
    n, h, w, c = img.shape
    # Reductions over a length-3 last axis are slow in numpy; combine channel slices instead.
    chans = [img[..., k] for k in range(c)]
    grey = sum(chans) / c if c > 1 else chans[0]
    cmin = np.minimum(np.minimum(chans[0], chans[1]), chans[2]) if c == 3 else chans[0]
    cmax = np.maximum(np.maximum(chans[0], chans[1]), chans[2]) if c == 3 else chans[0]
    flat = grey.reshape(n, -1)
    cols: list[np.ndarray] = []
    # intensity
    bins = np.clip((flat * 16).astype(np.int64), 0, 15) + 16 * np.arange(n)[:, None]
    cols.append(np.bincount(bins.ravel(), minlength=16 * n).reshape(n, 16) / flat.shape[1])
    cols.append(np.stack([flat.mean(1), flat.std(1)], 1))
    cols.append(np.percentile(flat, [1, 5, 25, 50, 75, 95, 99], axis=1).T)
    # gradients (central differences on the interior)
    gx = (grey[:, 1:-1, 2:] - grey[:, 1:-1, :-2]) / 2
    gy = (grey[:, 2:, 1:-1] - grey[:, :-2, 1:-1]) / 2
    mag = np.sqrt(gx**2 + gy**2).reshape(n, -1)
    cols.append(np.log1p(np.stack([mag.mean(1), mag.std(1)], 1) * 8))
    cols.append(np.log1p(np.percentile(mag, [50, 90, 99], axis=1).T * 8))
    # noise (Immerkaer 1996): [[1,-2,1],[-2,4,-2],[1,-2,1]] cancels linear structure
    g = grey
    res = (g[:, :-2, :-2] - 2 * g[:, :-2, 1:-1] + g[:, :-2, 2:]
           - 2 * g[:, 1:-1, :-2] + 4 * g[:, 1:-1, 1:-1] - 2 * g[:, 1:-1, 2:]
           + g[:, 2:, :-2] - 2 * g[:, 2:, 1:-1] + g[:, 2:, 2:])
    sigma = np.sqrt(np.pi / 2) * np.abs(res).reshape(n, -1).mean(1) / 6.0
    cols.append(np.log(sigma + 1e-4)[:, None])
    # frequency bands: share of (mean-removed) spectral energy per radial band
    spec = np.abs(np.fft.rfft2(grey - grey.mean(axis=(1, 2), keepdims=True), axes=(1, 2))) ** 2
    onehot = (bands.ravel()[:, None] == np.arange(1, _BANDS + 1)[None, :]).astype(np.float64)
    energy = spec.reshape(n, -1) @ onehot
    cols.append(np.log(energy / (spec.reshape(n, -1).sum(1, keepdims=True) + 1e-12) + 1e-8))
    # haze: dark channel (7 x 7 min of the channel minimum) and local contrast
    k7 = cv2.getStructuringElement(cv2.MORPH_RECT, (7, 7))
    dark = np.stack([cv2.erode(np.ascontiguousarray(cmin[i]), k7) for i in range(n)]).reshape(n, -1)
    local_sd = np.empty(n)
    for i in range(n):
        gi = grey[i]
        local_mean = cv2.blur(gi, (7, 7))
        local_sd[i] = np.sqrt(np.maximum(cv2.blur(gi * gi, (7, 7)) - local_mean**2, 0)).mean()
    cols.append(np.stack([dark.mean(1), np.percentile(dark, 90, axis=1), local_sd], 1))
    # colour
    if c == 3:
        means = np.stack([ch.reshape(n, -1).mean(1) for ch in chans], 1)
        sds = np.stack([ch.reshape(n, -1).std(1) for ch in chans], 1)
        sat = ((cmax - cmin) / (cmax + 1e-3)).reshape(n, -1)
        cols += [means, sds, (means[:, 0] - means[:, 1])[:, None], (means[:, 2] - means[:, 1])[:, None],
                 sat.mean(1)[:, None], sat.std(1)[:, None]]
    else:
        cols.append(np.zeros((n, 10)))
    return np.concatenate([np.asarray(col, dtype=np.float64).reshape(n, -1) for col in cols], axis=1)


def shift_features(images: np.ndarray | list[np.ndarray], *, size: int | None = 64) -> np.ndarray:
    """Hand-made shift statistics.

    Args:
        images: (N, H, W, C) or (N, H, W) float in [0, 1], or a list of H x W x C arrays.
        size: images are resized (area interpolation) to size x size first, so pools of any
            resolution compare; `None` keeps sizes (they must then all match).

    Returns:
        (N, 50) float64.
    """
    imgs = _as_nhwc(images)
    if not imgs:
        raise ValueError("shift_features: no images")
    prepared = []
    for img in imgs:
        img = np.asarray(img, dtype=np.float32)
        if size is not None and img.shape[:2] != (size, size):
            c = img.shape[-1]
            img = cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA).reshape(size, size, c)
        prepared.append(img)
    shapes = {im.shape for im in prepared}
    if len(shapes) != 1:
        raise ValueError(f"shift_features: images differ in shape {sorted(shapes)}; pass size=...")
    batch = np.stack(prepared)
    out = []
    for start in range(0, len(batch), 256):  # bounded memory for large pools
        chunk = batch[start:start + 256]
        out.append(_batch(chunk, _radial_bands(*chunk.shape[1:3])))
    return np.concatenate(out)
