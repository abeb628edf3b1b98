"""Small dataset helpers: wrap arrays as the dict-yielding datasets the methods consume."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from shiftkit.datasets.errors import DataError

__all__ = ["ArrayDataset", "CachedDataset", "as_dataset", "check_compatible", "check_item"]


def _shape(x: object) -> tuple[int, ...]:
    return tuple(int(d) for d in getattr(x, "shape", ()))


def _looks_channel_last(shape: tuple[int, ...]) -> bool:
    """(H, W, C) with a small last axis and a large first one: the layout PIL/OpenCV/albumentations use."""
    return len(shape) == 3 and shape[-1] in (1, 3, 4) and shape[0] > 4


def _check_label_array(labels: np.ndarray, n: int, name: str) -> np.ndarray:
    """``(N,)`` int64 class indices (-1 = unlabelled) from labels a user passed; explains the rest."""
    lab = np.asarray(labels)
    if lab.ndim == 2 and lab.shape[0] == n and lab.shape[1] == 1:
        lab = lab[:, 0]
    if lab.ndim == 2 and lab.shape[0] == n and lab.shape[1] > 1:
        hint = " (rows sum to 1: one-hot?)" if np.allclose(lab.sum(1), 1) else ""
        raise DataError(f"{name}: shape {lab.shape}{hint}; expected (N,) class indices, e.g. labels.argmax(1)")
    if lab.ndim != 1:
        raise DataError(f"{name}: shape {lab.shape}; expected (N,) = ({n},) class indices")
    if lab.shape[0] != n:
        raise DataError(f"{name}: {lab.shape[0]} labels for {n} images")
    if lab.dtype == np.bool_ or not np.issubdtype(lab.dtype, np.number):
        raise DataError(f"{name}: dtype {lab.dtype}; expected integer class indices")
    if np.issubdtype(lab.dtype, np.floating) and (not np.isfinite(lab).all() or (lab != np.round(lab)).any()):
        raise DataError(f"{name}: non-integer values (e.g. {lab[lab != np.round(lab)][:3].tolist()}); expected "
                        "integer class indices (probabilities or soft labels are not supported)")
    if lab.size and lab.min() < -1:
        raise DataError(f"{name}: value {int(lab.min())}; expected class indices >= 0 (-1 = unlabelled)")
    return lab.astype(np.int64)


class ArrayDataset(Dataset):
    """Items ``{"image": float32 (C, H, W) or (F,), "label": int64 scalar, "index": int}``.

    Args:
        images: array/tensor ``(N, C, H, W)`` (or ``(N, F)`` for vectors). Floats are used as
            given (images in [0, 1]); integer arrays are scaled by their type's maximum (8-bit
            / 255, 16-bit / 65535), as :meth:`shiftkit.adapt.Predictor.predict` does.
        labels: optional ``(N,)`` integer class indices; ``-1`` is stored when absent (unlabelled).
        masks: optional ``(N, H, W)`` integer masks, stored under ``"mask"``.
        domain: domain name stored under ``"domain"``.

    Raises:
        DataError: saying what was expected: images without a channel axis ``(N, H, W)``,
            channel-last ``(N, H, W, C)``, an empty array, float images holding
            8-bit values, one-hot or soft labels, label or mask counts or sizes that do not match.
    """

    def __init__(
        self,
        images: np.ndarray | torch.Tensor,
        labels: np.ndarray | torch.Tensor | Sequence[int] | None = None,
        masks: np.ndarray | torch.Tensor | None = None,
        domain: str = "",
    ):
        arr = images.detach().cpu().numpy() if isinstance(images, torch.Tensor) else np.asarray(images)
        shape = _shape(arr)
        if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_):
            raise DataError(f"images: dtype {arr.dtype}; expected a numeric array (N, C, H, W)")
        if arr.ndim < 2 or arr.ndim > 4:
            raise DataError(f"images: expected (N, C, H, W) or (N, F), got shape {shape}")
        if shape[0] == 0:
            raise DataError(f"images: empty array of shape {shape} (0 images)")
        if arr.ndim == 3:
            raise DataError(f"images: shape {shape} has no channel axis; expected (N, C, H, W), e.g. images[:, None] "
                            "for grey images")
        if arr.ndim == 4 and shape[1] > 4 and shape[3] in (1, 3, 4):
            raise DataError(f"images: shape {shape} looks channel-last (N, H, W, C); expected (N, C, H, W), "
                            "e.g. np.moveaxis(images, -1, 1)")
        if np.issubdtype(arr.dtype, np.integer):
            arr = arr.astype(np.float32) / float(np.iinfo(arr.dtype).max)
        x = torch.as_tensor(np.ascontiguousarray(arr, dtype=np.float32))
        # NaN/Inf pixels are left to the trainer's on_nonfinite policy (stop or skip the batch).
        if x.dim() == 4 and float(torch.nan_to_num(x, posinf=0.0).max()) > 1.5 and bool((x == x.round()).all()):
            raise DataError(f"images: float values up to {float(x.max()):g}, all whole numbers: 8/16-bit pixel values "
                            "stored as float? Scale to [0, 1] (e.g. images / 255)")
        self.images = x
        n = self.images.shape[0]
        if labels is None:
            self.labels = torch.full((n,), -1, dtype=torch.int64)
        else:
            lab = labels.detach().cpu().numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
            self.labels = torch.from_numpy(_check_label_array(lab, n, "labels"))
        self.masks = None
        if masks is not None:
            m = masks.detach().cpu().numpy() if isinstance(masks, torch.Tensor) else np.asarray(masks)
            if m.ndim == 4 and m.shape[1] == 1:
                m = m[:, 0]
            if m.ndim != 3 or m.shape[0] != n or (x.dim() == 4 and m.shape[1:] != tuple(x.shape[2:])):
                raise DataError(f"masks: shape {m.shape}; expected (N, H, W) = ({n}, "
                                f"{', '.join(str(d) for d in x.shape[2:])}) to match the images")
            if np.issubdtype(m.dtype, np.floating) and (m != np.round(m)).any():
                raise DataError("masks: non-integer values; expected class indices per pixel (-1 = ignore)")
            self.masks = torch.as_tensor(m).long()
        self.domain = domain

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def __getitem__(self, i: int) -> dict:
        item = {"image": self.images[i], "label": self.labels[i], "index": int(i), "domain": self.domain}
        if self.masks is not None:
            item["mask"] = self.masks[i]
        return item


def check_item(item: object, name: str, index: int = 0, *, labels: bool = True) -> None:
    """Check one dataset item against the layout every method expects; explain what was expected.

    ``image``: tensor/array ``(C, H, W)`` (or ``(F,)`` vectors); ``label`` (optional): a 0-d
    integer class index; ``mask`` (optional): ``(H, W)`` integers matching the image.
    ``labels=False`` checks the image only: a target's ``label`` and ``mask`` are never read.
    """
    where = f"{name}[{index}]"
    if not isinstance(item, dict) or "image" not in item:
        raise DataError(f"{where}: items must be dicts with an 'image' tensor (C, H, W); got {type(item).__name__}")
    img = item["image"]
    if not isinstance(img, (torch.Tensor, np.ndarray)):
        raise DataError(f"{where}['image']: expected a tensor (C, H, W), got {type(img).__name__} (a file path? "
                        "read it first, e.g. with MONAI LoadImaged + EnsureChannelFirstd)")
    shape = _shape(img)
    if len(shape) == 2:
        raise DataError(f"{where}['image']: shape {shape} has no channel axis; expected (C, H, W), e.g. image[None] "
                        "or MONAI EnsureChannelFirstd")
    if _looks_channel_last(shape):
        raise DataError(f"{where}['image']: shape {shape} looks channel-last (H, W, C); expected (C, H, W), "
                        "e.g. image.permute(2, 0, 1) or MONAI EnsureChannelFirstd")
    if len(shape) not in (1, 3):
        raise DataError(f"{where}['image']: shape {shape}; expected (C, H, W) (2-D images) or (F,) (vectors)")
    if labels and "label" in item and item["label"] is not None:
        lab = item["label"]
        if isinstance(lab, (torch.Tensor, np.ndarray)):
            lshape = _shape(lab)
            if lshape == (1,):
                raise DataError(f"{where}['label']: shape (1,); expected a 0-d class index, e.g. label[0] "
                                "or torch.tensor(int(label))")
            if len(lshape) >= 1:
                raise DataError(f"{where}['label']: shape {lshape} (one-hot?); expected a 0-d class index, "
                                "e.g. label.argmax() (segmentation masks go under 'mask')")
            is_float = lab.is_floating_point() if isinstance(lab, torch.Tensor) else np.issubdtype(lab.dtype, np.floating)
            if is_float and float(lab) != round(float(lab)):
                raise DataError(f"{where}['label']: {float(lab)}; expected an integer class index")
        elif isinstance(lab, float) and lab != round(lab):
            raise DataError(f"{where}['label']: {lab}; expected an integer class index")
    if labels and "mask" in item and isinstance(item["mask"], (torch.Tensor, np.ndarray)) and len(shape) == 3:
        mshape = _shape(item["mask"])
        if mshape not in (tuple(shape[1:]), (1, *shape[1:])):
            raise DataError(f"{where}['mask']: shape {mshape}; expected (H, W) = {tuple(shape[1:])} like its image")


def check_compatible(source: Dataset | None, target: Dataset | None = None, val: Dataset | None = None) -> None:
    """Source, target and validation images must share channels and size (one model, shared batches)."""
    sets = [(n, d) for n, d in (("source", source), ("target", target), ("val", val)) if d is not None]
    if len(sets) < 2:
        return
    shapes = {n: _shape(d[0]["image"]) for n, d in sets}
    ref_name, ref = sets[0][0], shapes[sets[0][0]]
    for n, s in shapes.items():
        if len(s) != len(ref) or (len(s) == 3 and s[0] != ref[0]):
            raise DataError(f"{n} images are {s}, {ref_name} images {ref}: the channels differ; convert one "
                            "(e.g. MONAI RepeatChanneld, or read_image(channels=...))")
        if s != ref:
            raise DataError(f"{n} images are {s} (C, H, W), {ref_name} images {ref}: resize both to one size "
                            "(e.g. MONAI Resized) so they can share a model and a batch")


def as_dataset(data: Dataset | np.ndarray | torch.Tensor, *, name: str = "data",
               check_labels: bool | None = None) -> Dataset:
    """Accept a dict-yielding Dataset, or an array/tensor of images ``(N, C, H, W)``.

    The first item is checked with :func:`check_item` (layout; label shape and dtype unless
    ``check_labels`` is False, which is the default for ``name="target"``: methods never read a
    target's labels, not even to check them).
    """
    if isinstance(data, (np.ndarray, torch.Tensor)):
        return ArrayDataset(data)
    if isinstance(data, Dataset) or (hasattr(data, "__getitem__") and hasattr(data, "__len__")):
        if len(data) == 0:
            raise DataError(f"{name}: the dataset is empty")
        check_item(data[0], name, labels=check_labels if check_labels is not None else name != "target")
        return data
    raise DataError(f"{name}: expected a torch Dataset or an array of images, got {type(data).__name__}")


class CachedDataset(Dataset):
    """Materialise every item of ``base`` once (procedural generators are slow per item).

    Use for small datasets trained over many epochs; memory is ``len(base)`` items. Random
    transforms of ``base`` are frozen by caching, so cache before augmenting.
    """

    def __init__(self, base: Dataset, *, progress: bool = False):
        from shiftkit.datasets.progress import progress_bar

        self.items = [base[i] for i in progress_bar(range(len(base)), desc="cache", enabled=progress)]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        return self.items[i]
