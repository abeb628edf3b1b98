"""`ManifestDataset`: a torch Dataset over a manifest, yielding MONAI-style dicts.

Item layout (every value a tensor, str, int or float so ``default_collate`` batches it):

- ``image``: float32 tensor (C, H, W), values in [0, 1] before any transform;
- ``label``: int64 scalar tensor, -1 when unlabelled;
- ``mask``: int64 tensor (H, W) -- only when the manifest has a ``mask`` column. A row without
  a mask gets an all ``-1`` mask (ignore index) so batches stay stackable;
- ``domain``: str; ``index``: int (row position in the frame);
- every attribute column: str, int or float (missing text -> "", missing numbers -> NaN).
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from .errors import DataError, ImageReadError
from .io import read_image, read_mask
from .manifest import attribute_columns, load_manifest

__all__ = ["ManifestDataset", "scan_readable", "BadFile"]


class BadFile(tuple):
    """(row, path, reason) of a file `scan_readable` could not use."""

    __slots__ = ()

    def __new__(cls, row: int, path: str, reason: str) -> BadFile:
        return super().__new__(cls, (row, path, reason))

    @property
    def row(self) -> int:
        return self[0]

    @property
    def path(self) -> str:
        return self[1]

    @property
    def reason(self) -> str:
        return self[2]


def _python_value(v: Any) -> Any:
    """numpy scalars -> Python; missing text -> ""; missing numbers stay float NaN."""
    if v is None:
        return ""
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float) and math.isnan(v):
        return v
    if isinstance(v, (bool, int, float, str)):
        return v
    return str(v)


def _load_pair(image_path: str, mask_path: str | None, channels: int | None) -> tuple[np.ndarray, np.ndarray | None]:
    img = read_image(image_path, channels=channels)
    if mask_path is None:
        return img, None
    mask = read_mask(mask_path)
    if mask.shape != img.shape[1:]:
        raise ImageReadError(mask_path, f"mask shape {mask.shape} does not match image {image_path} "
                                        f"of shape {tuple(img.shape[1:])}")
    return img, mask


def scan_readable(
    frame: pd.DataFrame,
    *,
    channels: int | None = None,
    progress: bool = True,
) -> tuple[pd.DataFrame, list[BadFile]]:
    """Try to read every image (and mask) of a loaded manifest frame.

    Returns ``(good_frame, bad)``: the rows whose files decode (mask the same size as its
    image), with their original index kept, and one `BadFile` (row, path, reason) per row that
    failed, so a long run can skip, count and list them instead of stopping.
    """
    from .progress import progress_bar

    keep: list[bool] = []
    bad: list[BadFile] = []
    masks = frame["mask"].tolist() if "mask" in frame.columns else [None] * len(frame)
    rows = zip(frame["image"].tolist(), masks, strict=True)
    for i, (img, mask) in enumerate(progress_bar(rows, total=len(frame), desc="scan", enabled=progress)):
        try:
            _load_pair(img, mask if isinstance(mask, str) and mask else None, channels)
            keep.append(True)
        except ImageReadError as exc:
            keep.append(False)
            bad.append(BadFile(i + 1, exc.path, exc.reason))
    return frame[np.asarray(keep, dtype=bool)], bad


class ManifestDataset(Dataset):
    """Images, labels, masks and attributes of a manifest as a torch Dataset.

    Args:
        frame: a frame from `load_manifest`, or a manifest path (loaded with defaults).
        transform: callable on the item dict (MONAI dict transforms, `albumentations_transform`
            wrappers...), applied last.
        domains / split: keep only these domains / this split.
        channels: force 1 or 3 channels (see `read_image`).
        skip_bad: scan every file up front (`scan_readable`) and drop unreadable rows; they are
            listed in ``self.bad`` and counted in a warning instead of failing mid-run.
        reader: image reader ``path -> (C, H, W) float32`` (default `read_image`).

    Raises:
        DataError: when the selection is empty (e.g. a domain with no rows).
    """

    def __init__(
        self,
        frame: pd.DataFrame | str | os.PathLike[str],
        transform: Callable[[dict[str, Any]], Any] | None = None,
        *,
        domains: Sequence[str] | str | None = None,
        split: str | None = None,
        channels: int | None = None,
        skip_bad: bool = False,
        reader: Callable[[str], np.ndarray] | None = None,
        progress: bool = False,
    ) -> None:
        if isinstance(frame, (str, os.PathLike)):
            frame = load_manifest(frame)
        if not isinstance(frame, pd.DataFrame):
            raise DataError(f"frame must be a DataFrame or a manifest path, got {type(frame).__name__}")
        if "image" not in frame.columns or "domain" not in frame.columns:
            raise DataError("frame needs 'image' and 'domain' columns (use load_manifest)")
        sel = frame
        if domains is not None:
            wanted = [domains] if isinstance(domains, str) else list(domains)
            sel = sel[sel["domain"].isin(wanted)]
            if len(sel) == 0:
                raise DataError(f"no rows for domain(s) {wanted}; present: {sorted(frame['domain'].unique())}")
        if split is not None:
            if "split" not in sel.columns:
                raise DataError(f"split={split!r} requested but the manifest has no 'split' column")
            sel = sel[sel["split"] == split]
            if len(sel) == 0:
                raise DataError(f"no rows in split {split!r}" + (f" for domain(s) {domains}" if domains else ""))
        self.bad: list[BadFile] = []
        if skip_bad:
            sel, self.bad = scan_readable(sel, channels=channels, progress=progress)
            if self.bad:
                warnings.warn(f"skipped {len(self.bad)} unreadable row(s), e.g. {self.bad[0].path}: "
                              f"{self.bad[0].reason}", stacklevel=2)
        self.frame = sel.reset_index(drop=True)
        self.transform = transform
        self.channels = channels
        self.reader = reader
        self.attributes = attribute_columns(self.frame)
        self.has_mask = "mask" in self.frame.columns
        # Plain lists: indexing a DataFrame per item is slow and not fork-friendly.
        self._images = self.frame["image"].astype(str).tolist()
        self._labels = self.frame["label"].astype(np.int64).tolist() if "label" in self.frame else None
        self._masks = self.frame["mask"].tolist() if self.has_mask else None
        self._domains = self.frame["domain"].astype(str).tolist()
        self._attrs = {c: [_python_value(v) for v in self.frame[c].tolist()] for c in self.attributes}

    def __len__(self) -> int:
        return len(self._images)

    @property
    def labels(self) -> np.ndarray:
        """int64 (N,) labels, -1 where unlabelled."""
        return np.asarray(self._labels if self._labels is not None else [-1] * len(self), dtype=np.int64)

    def __getitem__(self, index: int) -> Any:
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} rows")
        mask_path = self._masks[index] if self._masks is not None else None
        mask_path = mask_path if isinstance(mask_path, str) and mask_path else None
        if self.reader is None:
            image, mask = _load_pair(self._images[index], mask_path, self.channels)
        else:
            image = np.asarray(self.reader(self._images[index]), dtype=np.float32)
            mask = read_mask(mask_path) if mask_path else None
            if mask is not None and mask.shape != image.shape[1:]:
                raise ImageReadError(mask_path, f"mask shape {mask.shape} does not match image "
                                                f"{self._images[index]} of shape {tuple(image.shape[1:])}")
        item: dict[str, Any] = {
            "image": torch.from_numpy(image),
            "label": torch.tensor(self._labels[index] if self._labels is not None else -1, dtype=torch.int64),
        }
        if self.has_mask:
            item["mask"] = (torch.from_numpy(mask) if mask is not None
                            else torch.full(image.shape[1:], -1, dtype=torch.int64))
        item["domain"] = self._domains[index]
        item["index"] = int(index)
        for c in self.attributes:
            item[c] = self._attrs[c][index]
        return self.transform(item) if self.transform is not None else item

    def __repr__(self) -> str:
        doms = sorted(set(self._domains))
        return f"ManifestDataset(n={len(self)}, domains={doms}, masks={self.has_mask})"
