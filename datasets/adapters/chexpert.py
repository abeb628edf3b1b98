"""CheXpert (v1.0 and v1.0-small) -> manifest.

On disk: ``<root>/train.csv``, ``<root>/valid.csv`` (and ``test.csv`` where present) with columns
``Path, Sex, Age, Frontal/Lateral, AP/PA, No Finding, <13 observations>, Support Devices``;
``Path`` reads ``CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg``, relative
to the folder *above* ``root``. Labels: 1 positive, 0 negative, -1 uncertain, blank not mentioned.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import DataError
from ._base import finding_label, normalise_sex, relative_to, require, write_frame

__all__ = ["OBSERVATIONS", "chexpert_frame", "chexpert"]

#: The 13 pathology columns (not "No Finding", not "Support Devices").
OBSERVATIONS: tuple[str, ...] = (
    "Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Opacity", "Lung Lesion", "Edema", "Consolidation",
    "Pneumonia", "Atelectasis", "Pneumothorax", "Pleural Effusion", "Pleural Other", "Fracture",
)
_SPLITS = {"train.csv": "train", "valid.csv": "val", "test.csv": "test"}


def _image_path(root: Path, rel: str) -> Path:
    p = Path(rel)
    for base in (root.parent, root):
        if (base / p).exists():
            return base / p
    return root / Path(*p.parts[1:]) if len(p.parts) > 1 else root / p  # dataset folder renamed


def chexpert_frame(root: str | os.PathLike[str], *, target: str | Sequence[str] = "any",
                   uncertain: str = "ones", frontal_only: bool = False, domain: str = "chexpert",
                   relative_to_dir: str | os.PathLike[str] | None = None) -> pd.DataFrame:
    """Manifest rows for CheXpert.

    Args:
        target: ``"any"`` (label 1 when any pathology is positive), one observation name, or a
            list of them.
        uncertain: -1 labels become 1 (``"ones"``), 0 (``"zeros"``) or drop the row (``"ignore"``).
        frontal_only: keep frontal views only.
    Attributes: sex (F/M/""), age, view (Frontal/Lateral), projection (AP/PA/""), site.
    """
    root = Path(root)
    csvs = [c for c in _SPLITS if (root / c).is_file()]
    if not csvs:
        require(root / "train.csv", "CheXpert train.csv")
    cols = list(OBSERVATIONS) if target == "any" else ([target] if isinstance(target, str) else list(target))
    base = Path(relative_to_dir) if relative_to_dir is not None else root
    parts = []
    for name in csvs:
        t = pd.read_csv(root / name, dtype=str)
        if "Path" not in t.columns:
            raise DataError(f"{root / name}: no 'Path' column; columns: {list(t.columns)}")
        label = finding_label(t, cols, uncertain)
        keep = label.notna()
        if frontal_only and "Frontal/Lateral" in t.columns:
            keep &= t["Frontal/Lateral"].str.lower().eq("frontal")
        t, label = t[keep], label[keep]
        parts.append(pd.DataFrame({
            "image": [relative_to(_image_path(root, p), base) for p in t["Path"]],
            "label": label.astype(np.int64).to_numpy(),
            "domain": domain,
            "split": _SPLITS[name],
            "sex": normalise_sex(t.get("Sex", pd.Series([""] * len(t)))).to_numpy(),
            "age": pd.to_numeric(t.get("Age"), errors="coerce").to_numpy() if "Age" in t else np.nan,
            "view": t.get("Frontal/Lateral", pd.Series([""] * len(t))).fillna("").to_numpy(),
            "projection": t.get("AP/PA", pd.Series([""] * len(t))).fillna("").to_numpy(),
            "site": "chexpert",
        }))
    return pd.concat(parts, ignore_index=True)


def chexpert(root: str | os.PathLike[str], out: str | os.PathLike[str] | None = None, **kwargs) -> Path:
    """Write a CheXpert manifest (default ``<root>/manifest_chexpert.csv``); see `chexpert_frame`."""
    out = Path(out) if out is not None else Path(root) / "manifest_chexpert.csv"
    return write_frame(chexpert_frame(root, relative_to_dir=out.parent, **kwargs), out)
