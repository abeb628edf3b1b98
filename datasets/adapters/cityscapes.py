"""Cityscapes -> manifest with trainId (or shiftkit-class) masks.

On disk: ``<root>/leftImg8bit/<split>/<city>/<city>_<seq>_<frame>_leftImg8bit.png`` and
``<root>/gtFine/<split>/<city>/<city>_<seq>_<frame>_gtFine_labelIds.png`` (plus ``_color``,
``_instanceIds``, ``_polygons.json``). Cityscapes' own ``*_gtFine_labelTrainIds.png`` (written
by cityscapesscripts) are used when present; otherwise labelIds are converted and written next
to the manifest under ``masks_cityscapes/``.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from ..errors import DataError
from ..progress import progress_bar
from ._base import relative_to, require, write_frame
from .driving import LABELID_TO_TRAINID, TRAINID_TO_SHIFTKIT, convert_mask

__all__ = ["cityscapes_frame", "cityscapes"]

_SPLIT = {"train": "train", "val": "val", "test": "test"}


def cityscapes_frame(root: str | os.PathLike[str], out_dir: str | os.PathLike[str], *, classes: str = "trainid",
                     domain: str = "cityscapes", progress: bool = True) -> pd.DataFrame:
    """Manifest rows; masks in trainIds (``classes="trainid"``, 19 classes + 255) or shiftkit
    dashcam classes (``classes="shiftkit"``). Attributes: city, scene ("urban"), timeofday, weather."""
    if classes not in ("trainid", "shiftkit"):
        raise DataError(f"classes={classes!r}: expected 'trainid' or 'shiftkit'")
    root, out_dir = Path(root), Path(out_dir)
    images = sorted(require(root / "leftImg8bit", "Cityscapes leftImg8bit/ folder").glob("*/*/*_leftImg8bit.png"))
    rows = []
    for img in progress_bar(images, desc="cityscapes", enabled=progress):
        split, city = img.parent.parent.name, img.parent.name
        stem = img.name[: -len("_leftImg8bit.png")]
        gt = root / "gtFine" / split / city
        train_ids = gt / f"{stem}_gtFine_labelTrainIds.png"
        label_ids = gt / f"{stem}_gtFine_labelIds.png"
        mask = ""
        if classes == "trainid" and train_ids.is_file():
            mask = relative_to(train_ids, out_dir)
        elif label_ids.is_file() and split != "test":  # test masks are all void
            dst = out_dir / "masks_cityscapes" / classes / split / city / f"{stem}.png"
            luts = (LABELID_TO_TRAINID,) if classes == "trainid" else (LABELID_TO_TRAINID, TRAINID_TO_SHIFTKIT)
            mask = relative_to(convert_mask(label_ids, dst, *luts), out_dir)
        rows.append({"image": relative_to(img, out_dir), "label": -1, "mask": mask, "domain": domain,
                     "split": _SPLIT.get(split, ""), "city": city, "scene": "urban", "timeofday": "daytime",
                     "weather": "clear"})
    return pd.DataFrame(rows)


def cityscapes(root: str | os.PathLike[str], out: str | os.PathLike[str] | None = None, **kwargs) -> Path:
    """Write a Cityscapes manifest (default ``<root>/manifest_cityscapes.csv``); see `cityscapes_frame`."""
    out = Path(out) if out is not None else Path(root) / "manifest_cityscapes.csv"
    return write_frame(cityscapes_frame(root, out.parent, **kwargs), out)
