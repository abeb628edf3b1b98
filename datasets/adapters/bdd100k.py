"""BDD100K -> manifest with scene / timeofday / weather attributes and segmentation masks.

On disk (``root`` = the ``bdd100k`` folder):
- ``images/100k/{train,val,test}/<name>.jpg`` with ``labels/bdd100k_labels_images_{train,val}.json``:
  a list of ``{"name", "attributes": {"weather", "scene", "timeofday"}, "labels": [...]}``;
- the 10k segmentation subset: ``images/10k/{train,val}/<stem>.jpg`` with masks (trainIds, 255
  ignore) in ``labels/sem_seg/masks/{train,val}/<stem>.png`` (2020 release) or
  ``seg/labels/{train,val}/<stem>_train_id.png`` with ``seg/images/...`` (2018 release).
``scene`` (city street, highway, residential, ...) gives the urban-to-rural split and
``timeofday`` (daytime, night, dawn/dusk) the day-to-night split: pick them with ``domain_by``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from ..errors import DataError
from ._base import relative_to, write_frame
from .driving import TRAINID_TO_SHIFTKIT, convert_mask

__all__ = ["bdd100k_frame", "bdd100k"]

_ATTRS = ("scene", "timeofday", "weather")


def _attributes(root: Path) -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {}
    for split in ("train", "val"):
        p = root / "labels" / f"bdd100k_labels_images_{split}.json"
        if not p.is_file():
            continue
        try:
            records = json.loads(p.read_text())
        except (OSError, ValueError) as exc:
            raise DataError(f"{p}: unreadable BDD100K label JSON ({exc})") from None
        for r in records:
            a = r.get("attributes") or {}
            out[Path(r.get("name", "")).stem] = {k: str(a.get(k, "undefined")) for k in _ATTRS}
    return out


def _domain(attrs: dict[str, str], domain_by: Sequence[str]) -> str:
    return "_".join(attrs[k].replace(" ", "_").replace("/", "_") for k in domain_by)


def bdd100k_frame(root: str | os.PathLike[str], out_dir: str | os.PathLike[str], *, segmentation: bool = False,
                  domain_by: Sequence[str] | str = ("scene",), classes: str = "trainid") -> pd.DataFrame:
    """Manifest rows for BDD100K.

    Args:
        segmentation: use the 10k subset with masks (else the 100k images, no masks).
        domain_by: attribute(s) that name the domain, e.g. ``"scene"`` -> ``city_street``,
            ``("scene", "timeofday")`` -> ``highway_night``.
        classes: masks as BDD/Cityscapes trainIds, or ``"shiftkit"`` dashcam classes (converted
            masks written under ``<out_dir>/masks_bdd100k/``).
    """
    root, out_dir = Path(root), Path(out_dir)
    domain_by = [domain_by] if isinstance(domain_by, str) else list(domain_by)
    bad = [k for k in domain_by if k not in _ATTRS]
    if bad:
        raise DataError(f"domain_by={bad}: expected attributes among {_ATTRS}")
    attrs = _attributes(root)
    rows = []
    unknown = {k: "undefined" for k in _ATTRS}
    if not segmentation:
        for split in ("train", "val", "test"):
            for img in sorted((root / "images" / "100k" / split).glob("*.jpg")):
                a = attrs.get(img.stem, unknown)
                rows.append({"image": relative_to(img, out_dir), "label": -1, "domain": _domain(a, domain_by),
                             "split": split, **a})
        if not rows:
            raise DataError(f"{root / 'images' / '100k'}: no BDD100K images found")
        return pd.DataFrame(rows)
    for split in ("train", "val"):
        layouts = [(root / "images" / "10k" / split, root / "labels" / "sem_seg" / "masks" / split, "{}.png"),
                   (root / "seg" / "images" / split, root / "seg" / "labels" / split, "{}_train_id.png")]
        for img_dir, mask_dir, pattern in layouts:
            if not mask_dir.is_dir():
                continue
            for img in sorted(img_dir.glob("*.jpg")):
                mask = mask_dir / pattern.format(img.stem)
                if not mask.is_file():
                    continue
                if classes == "shiftkit":
                    mask = convert_mask(mask, out_dir / "masks_bdd100k" / split / f"{img.stem}.png", TRAINID_TO_SHIFTKIT)
                elif classes != "trainid":
                    raise DataError(f"classes={classes!r}: expected 'trainid' or 'shiftkit'")
                a = attrs.get(img.stem, unknown)
                rows.append({"image": relative_to(img, out_dir), "label": -1, "mask": relative_to(mask, out_dir),
                             "domain": _domain(a, domain_by), "split": split, **a})
            break
    if not rows:
        raise DataError(f"{root}: no BDD100K segmentation images with masks found "
                        "(expected labels/sem_seg/masks/<split>/ or seg/labels/<split>/)")
    return pd.DataFrame(rows)


def bdd100k(root: str | os.PathLike[str], out: str | os.PathLike[str] | None = None, **kwargs) -> Path:
    """Write a BDD100K manifest (default ``<root>/manifest_bdd100k.csv``); see `bdd100k_frame`."""
    out = Path(out) if out is not None else Path(root) / "manifest_bdd100k.csv"
    return write_frame(bdd100k_frame(root, out.parent, **kwargs), out)
