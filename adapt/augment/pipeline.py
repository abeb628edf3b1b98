"""`Augmenter`: a seeded albumentations pipeline on numpy images and on shiftkit dict items.

Why a wrapper and not a bare `A.Compose`:

* albumentations 2.0.8's `Compose(seed=s)` hands the SAME seed to every child transform, so two
  transforms with the same `p` always fire together. Here each transform gets its own seed,
  derived from (seed, call) with `numpy.random.SeedSequence`.
* A `torch` DataLoader copies the transform into each worker with the same RNG state, so every
  worker would replay the same augmentations. `__call__(..., seed=k)` reseeds the whole tree for
  that one call; `AugmentedDataset` passes (seed, epoch, index), making an item's augmentation
  independent of worker count and order.
* Images are processed as float32 in [0, 1] whatever dtype came in (uint8, uint16, float) and
  given back in the input dtype, so 8-bit quantisation never happens on 16-bit radiographs.
* Transforms that need reference images (FDA, HistogramMatching, PixelDistributionAdaptation)
  get them through albumentations' metadata interface; the pool is converted once per channel
  count so a grey pool can restyle RGB images and vice versa.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import albumentations as A  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from shiftkit.adapt.augment.custom import OnThreeChannels  # noqa: E402
from shiftkit.datasets.errors import DataError  # noqa: E402

__all__ = ["Augmenter", "to_float_hwc", "from_float_hwc", "combine"]


def to_float_hwc(image: np.ndarray, *, name: str = "image") -> tuple[np.ndarray, np.dtype]:
    """Return (image as float32 H x W x C in [0, 1], original dtype). Accepts H x W too."""
    if not isinstance(image, np.ndarray):
        raise DataError(f"{name}: expected a numpy array (H, W, C), got {type(image).__name__}")
    if image.ndim == 2:
        image = image[:, :, None]
    if image.ndim != 3 or image.shape[-1] not in (1, 3):
        raise DataError(f"{name}: expected shape (H, W) or (H, W, C) with C in (1, 3), got {image.shape}")
    dtype = image.dtype
    if dtype == np.uint8:
        out = image.astype(np.float32) / 255.0
    elif dtype == np.uint16:
        out = image.astype(np.float32) / 65535.0
    elif dtype in (np.float32, np.float64, np.float16):
        out = image.astype(np.float32, copy=False)
        if out.size and (float(out.min()) < -1e-3 or float(out.max()) > 1.0 + 1e-3):
            raise DataError(
                f"{name}: float images must lie in [0, 1], got range "
                f"[{float(out.min()):.3g}, {float(out.max()):.3g}]"
            )
        out = np.clip(out, 0.0, 1.0)
    else:
        raise DataError(f"{name}: unsupported dtype {dtype} (use uint8, uint16 or float in [0, 1])")
    return np.ascontiguousarray(out), dtype


def from_float_hwc(image: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Inverse of `to_float_hwc`: clip to [0, 1] and convert back to `dtype`."""
    image = np.clip(image, 0.0, 1.0)
    if dtype == np.uint8:
        return np.round(image * 255.0).astype(np.uint8)
    if dtype == np.uint16:
        return np.round(image * 65535.0).astype(np.uint16)
    return image.astype(dtype, copy=False)


def _walk(transform: Any) -> list[Any]:
    """Every transform in the tree, composes included, depth first."""
    out = [transform]
    children: Sequence[Any] = ()
    if isinstance(transform, A.BaseCompose):
        children = transform.transforms
    elif isinstance(transform, OnThreeChannels):
        children = [transform.inner]
    for child in children:
        out.extend(_walk(child))
    return out


class Augmenter:
    """A seeded pipeline of albumentations transforms.

    Args:
        transforms: albumentations transforms, applied in order.
        seed: base seed. Call k (counting from 0) of an `Augmenter` with seed s is reproducible:
            it only depends on (s, k), or on (s, `seed` passed to the call) when one is given.
            `None` draws fresh entropy per call.
        metadata: extra named data passed to every call (reference-image pools for FDA,
            HistogramMatching, PixelDistributionAdaptation), each a list of H x W x C float32.
        name: shown in previews and reports.

    Call with `image` (H, W) or (H, W, C), C in {1, 3}, uint8/uint16/float in [0, 1], and
    optionally `mask` (H, W) integer labels; returns `{"image", "mask"}` with the image in the
    input dtype and shape and the mask int64 (spatial transforms only; nearest-neighbour).
    """

    def __init__(self, transforms: Sequence[Any], *, seed: int | None = 0,
                 metadata: Mapping[str, Sequence[np.ndarray]] | None = None, name: str = "augment"):
        self.transforms = list(transforms)
        self.compose = A.Compose(self.transforms, p=1.0)
        self.seed = seed
        self.metadata = {k: list(v) for k, v in (metadata or {}).items()}
        self.name = name
        self._calls = 0
        self._meta_cache: dict[tuple[str, int], list[np.ndarray]] = {}
        self._nodes = _walk(self.compose)

    # -- seeding -----------------------------------------------------------------------------
    def _reseed(self, key: Sequence[int] | None) -> None:
        seq = np.random.SeedSequence(None if key is None else [int(k) & 0xFFFFFFFF for k in key])
        states = seq.generate_state(len(self._nodes))
        for node, state in zip(self._nodes, states, strict=True):
            node.set_random_seed(int(state))

    # -- metadata ----------------------------------------------------------------------------
    def _metadata_for(self, channels: int) -> dict[str, list[np.ndarray]]:
        out = {}
        for key, pool in self.metadata.items():
            cached = self._meta_cache.get((key, channels))
            if cached is None:
                cached = [_match_channels(img, channels) for img in pool]
                self._meta_cache[(key, channels)] = cached
            out[key] = cached
        return out

    # -- application -------------------------------------------------------------------------
    def __call__(self, image: np.ndarray, mask: np.ndarray | None = None, *,
                 seed: int | Sequence[int] | None = None) -> dict[str, np.ndarray | None]:
        work, dtype = to_float_hwc(image)
        squeeze = np.asarray(image).ndim == 2
        if seed is not None:
            key = [self.seed or 0, *(seed if isinstance(seed, Sequence) else [seed])]
        elif self.seed is not None:
            key = [self.seed, self._calls]
        else:
            key = None
        self._calls += 1
        self._reseed(key)
        data: dict[str, Any] = {"image": work, **self._metadata_for(work.shape[-1])}
        if mask is not None:
            mask = np.asarray(mask)
            if mask.shape != work.shape[:2]:
                raise DataError(f"mask: shape {mask.shape} does not match image {work.shape[:2]}")
            if not np.issubdtype(mask.dtype, np.integer):
                raise DataError(f"mask: expected integer labels, got dtype {mask.dtype}")
            if mask.size and (mask.min() < np.iinfo(np.int32).min or mask.max() > np.iinfo(np.int32).max):
                raise DataError("mask: labels do not fit in int32")
            # OpenCV warps int32 exactly with nearest-neighbour; int64 it cannot.
            data["mask"] = np.ascontiguousarray(mask.astype(np.int32))
        out = self.compose(**data)
        result_img = from_float_hwc(out["image"], dtype)
        if squeeze:
            result_img = result_img[:, :, 0]
        result_mask = None if mask is None else np.asarray(out["mask"]).astype(np.int64)
        return {"image": result_img, "mask": result_mask}

    def apply_item(self, item: Mapping[str, Any], *, seed: int | Sequence[int] | None = None) -> dict[str, Any]:
        """Augment a shiftkit dict item: `image` float32 tensor (C, H, W) in [0, 1], optional
        `mask` int64 tensor (H, W). Other keys are passed through untouched."""
        if "image" not in item:
            raise DataError("item: has no 'image' key")
        img = item["image"]
        img_np = img.detach().cpu().numpy() if isinstance(img, torch.Tensor) else np.asarray(img)
        if img_np.ndim != 3:
            raise DataError(f"item['image']: expected (C, H, W), got shape {img_np.shape}")
        mask = item.get("mask")
        mask_np = None
        if mask is not None:
            mask_np = mask.detach().cpu().numpy() if isinstance(mask, torch.Tensor) else np.asarray(mask)
        out = self(np.ascontiguousarray(img_np.transpose(1, 2, 0)).astype(np.float32, copy=False),
                   mask_np, seed=seed)
        new = dict(item)
        new["image"] = torch.from_numpy(np.ascontiguousarray(out["image"].transpose(2, 0, 1)))
        if mask_np is not None:
            new["mask"] = torch.from_numpy(out["mask"])
        return new

    def item_transform(self) -> Callable[[Mapping[str, Any]], dict[str, Any]]:
        """A callable item -> item, for a Dataset's `transform=` argument."""
        return self.apply_item

    def __repr__(self) -> str:
        names = ", ".join(type(t).__name__ for t in self.transforms)
        return f"Augmenter(name={self.name!r}, seed={self.seed}, transforms=[{names}])"


def _match_channels(image: np.ndarray, channels: int) -> np.ndarray:
    img, _ = to_float_hwc(image, name="reference image")
    if img.shape[-1] == channels:
        return img
    if channels == 1:
        return np.ascontiguousarray(img.mean(axis=-1, keepdims=True))
    return np.ascontiguousarray(np.repeat(img, channels, axis=-1))


def combine(*augmenters: Augmenter, seed: int | None = 0, name: str | None = None) -> Augmenter:
    """One `Augmenter` running the given ones in order (e.g. restyle toward the target, then a
    preset). Metadata pools are merged; keys must not clash."""
    transforms: list[Any] = []
    metadata: dict[str, list[np.ndarray]] = {}
    for aug in augmenters:
        transforms.extend(aug.transforms)
        for key, pool in aug.metadata.items():
            if key in metadata:
                raise ValueError(f"combine: metadata key {key!r} appears in two augmenters")
            metadata[key] = pool
    return Augmenter(transforms, seed=seed, metadata=metadata,
                     name=name or "+".join(a.name for a in augmenters))
