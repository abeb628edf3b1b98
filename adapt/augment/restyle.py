"""Target-aware restyling: make source images look like a pool of unlabeled target images.

Three albumentations 2.0.8 transforms, fed through their metadata interface (the pool is passed
in each call's data under `metadata_key`; the constructor's `reference_images` is deprecated):

* `FDA` (Yang & Soatto 2020): swap the low-frequency amplitude spectrum with a target image's:
  global tone, contrast, illumination and colour move; edges and layout stay.
* `HistogramMatching`: match the intensity histogram (per channel) of a target image.
* `PixelDistributionAdaptation`: fit a PCA/standard/min-max pixel model on source and target
  image and map one onto the other.

Pixel-level only: masks pass through unchanged. Reproducible per seed (see `Augmenter`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import albumentations as A  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from shiftkit.adapt.augment.custom import PixelDistributionAdaptationFixed  # noqa: E402
from shiftkit.adapt.augment.pipeline import Augmenter  # noqa: E402
from shiftkit.datasets.errors import DataError  # noqa: E402

__all__ = ["load_target_pool", "target_restyle", "RESTYLE_METHODS"]

RESTYLE_METHODS = ("fda", "histogram", "pda", "mixed")
_KEYS = {"fda": "shiftkit_fda_pool", "histogram": "shiftkit_hm_pool", "pda": "shiftkit_pda_pool"}


def load_target_pool(source: Any, *, max_images: int = 256, seed: int = 0, domain: str | None = None,
                     split: str | None = None, layout: str = "auto") -> list[np.ndarray]:
    """Collect up to `max_images` unlabeled target images as float32 H x W x C in [0, 1].

    Args:
        source: a manifest path (CSV/TSV/Parquet, read with `shiftkit.datasets.load_manifest`),
            a torch Dataset yielding dicts with an `image` tensor (C, H, W), a list of images, or
            an array/tensor of images: (N, C, H, W) (shiftkit's layout), (N, H, W, C), or (N, H, W).
        max_images: a seeded random subset is taken when there are more.
        seed: seeds the subset.
        domain / split: with a manifest, keep only these rows (labels are never read).
        layout: "auto", "nchw" or "nhwc" for 4-D arrays; "auto" reads channels from the axis of
            size 1 or 3 and refuses when both axes could be channels.

    Raises:
        DataError: an empty pool, a bad shape, or a manifest with no matching rows.
    """
    rng = np.random.default_rng(seed)

    def pick(n: int) -> np.ndarray:
        if n == 0:
            raise DataError("target pool: no images")
        idx = np.arange(n) if n <= max_images else np.sort(rng.choice(n, size=max_images, replace=False))
        return idx

    if isinstance(source, (str, os.PathLike)):
        from shiftkit.datasets import load_manifest, read_image

        frame = load_manifest(Path(source))
        if domain is not None:
            frame = frame[frame["domain"] == domain]
        if split is not None:
            if "split" not in frame.columns:
                raise DataError(f"{source}: split={split!r} asked for but the manifest has no 'split' column")
            frame = frame[frame["split"] == split]
        if len(frame) == 0:
            raise DataError(f"{source}: no rows for domain={domain!r} split={split!r}")
        paths = frame["image"].astype(str).tolist()
        return [np.ascontiguousarray(read_image(paths[i]).transpose(1, 2, 0)) for i in pick(len(paths))]

    if isinstance(source, torch.Tensor):
        source = source.detach().cpu().numpy()
    if isinstance(source, np.ndarray):
        arr = _as_nhwc(source, layout)
        return [_check_pool_image(arr[i], f"target pool[{i}]") for i in pick(len(arr))]

    if hasattr(source, "__getitem__") and hasattr(source, "__len__"):
        items = [source[int(i)] for i in pick(len(source))]
        out = []
        for i, item in enumerate(items):
            if isinstance(item, dict):
                if "image" not in item:
                    raise DataError(f"target pool: item {i} has no 'image' key")
                img = item["image"]
                img = img.detach().cpu().numpy() if isinstance(img, torch.Tensor) else np.asarray(img)
                if img.ndim != 3:
                    raise DataError(f"target pool: item {i} image has shape {img.shape}, expected (C, H, W)")
                out.append(_check_pool_image(img.transpose(1, 2, 0), f"target pool item {i}"))
            else:  # a plain list of H x W (x C) arrays
                img = item.detach().cpu().numpy() if isinstance(item, torch.Tensor) else np.asarray(item)
                out.append(_check_pool_image(img if img.ndim == 3 else img[:, :, None], f"target pool[{i}]"))
        return out
    raise DataError(f"target pool: cannot read images from {type(source).__name__}")


def _as_nhwc(arr: np.ndarray, layout: str) -> np.ndarray:
    if arr.ndim == 3:
        return arr[..., None]
    if arr.ndim != 4:
        raise DataError(f"target pool: expected (N, C, H, W), (N, H, W, C) or (N, H, W), got {arr.shape}")
    if layout == "nchw":
        return arr.transpose(0, 2, 3, 1)
    if layout == "nhwc":
        return arr
    if layout != "auto":
        raise ValueError(f"layout must be 'auto', 'nchw' or 'nhwc', got {layout!r}")
    first, last = arr.shape[1] in (1, 3), arr.shape[-1] in (1, 3)
    if first and last:
        raise DataError(f"target pool: shape {arr.shape} is ambiguous; pass layout='nchw' or 'nhwc'")
    if first:
        return arr.transpose(0, 2, 3, 1)
    if last:
        return arr
    raise DataError(f"target pool: no channel axis of size 1 or 3 in shape {arr.shape}")


def _check_pool_image(img: np.ndarray, name: str) -> np.ndarray:
    img = np.asarray(img)
    if img.ndim != 3 or img.shape[-1] not in (1, 3):
        raise DataError(f"{name}: expected H x W x C with C in (1, 3), got {img.shape}")
    if img.dtype == np.uint8:
        img = img.astype(np.float32) / 255.0
    img = img.astype(np.float32)
    if img.size and (img.min() < -1e-3 or img.max() > 1 + 1e-3):
        raise DataError(f"{name}: values outside [0, 1] ({img.min():.3g}..{img.max():.3g})")
    return np.ascontiguousarray(np.clip(img, 0, 1))


def _restyle_transform(method: str, strength: float, p: float) -> Any:
    s = float(strength)
    if method == "fda":
        # beta = half-width of the swapped low-frequency square, as a fraction of the image side.
        return A.FDA(beta_limit=(0.02 * s, 0.1 * s), metadata_key=_KEYS["fda"], p=p)
    if method == "histogram":
        return A.HistogramMatching(blend_ratio=(0.5 * s, s), metadata_key=_KEYS["histogram"], p=p)
    if method == "pda":
        # The repaired subclass: 2.0.8's own returns white images for any blend below 1.
        return PixelDistributionAdaptationFixed(blend_ratio=(0.5 * s, s), transform_type="standard",
                                                metadata_key=_KEYS["pda"], p=p)
    raise ValueError(f"unknown restyle method {method!r}; choose from {RESTYLE_METHODS}")


def target_restyle(target: Any, *, method: str = "mixed", strength: float = 1.0, p: float = 1.0,
                   seed: int | None = 0, max_images: int = 256, domain: str | None = None,
                   split: str | None = None, methods: Sequence[str] = ("fda", "histogram", "pda")) -> Augmenter:
    """An `Augmenter` that restyles images toward the target pool.

    Args:
        target: the pool: manifest path, Dataset, array, or a list already from `load_target_pool`.
        method: "fda", "histogram", "pda", or "mixed" (one of `methods` at random per image).
        strength: 0..1; FDA beta up to 0.1 * strength, blend ratios up to `strength`.
        p: probability an image is restyled at all (keeping some untouched source images helps
            the model stay good on the source).
        seed: base seed (see `Augmenter`); also seeds the pool subset.
    """
    if not (0.0 <= strength <= 1.0):
        raise ValueError(f"strength must be in [0, 1], got {strength}")
    pool = target if _is_pool(target) else load_target_pool(
        target, max_images=max_images, seed=seed or 0, domain=domain, split=split)
    chosen = list(methods) if method == "mixed" else [method]
    for m in chosen:
        if m not in _KEYS:
            raise ValueError(f"unknown restyle method {m!r}; choose from {RESTYLE_METHODS}")
    if strength == 0:
        return Augmenter([], seed=seed, name="restyle(strength=0)")
    if len(chosen) == 1:
        transforms = [_restyle_transform(chosen[0], strength, p)]
    else:
        transforms = [A.OneOf([_restyle_transform(m, strength, 1.0) for m in chosen], p=p)]
    metadata = {_KEYS[m]: pool for m in chosen}
    return Augmenter(transforms, seed=seed, metadata=metadata, name=f"restyle({method}, strength={strength:g})")


def _is_pool(obj: Any) -> bool:
    return (isinstance(obj, list) and len(obj) > 0
            and all(isinstance(x, np.ndarray) and x.ndim == 3 and x.dtype == np.float32 for x in obj))
