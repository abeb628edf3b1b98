"""NIH ChestX-ray14 -> manifest.

On disk: ``<root>/Data_Entry_2017.csv`` (or ``Data_Entry_2017_v2020.csv``) with columns
``Image Index, Finding Labels, Follow-up #, Patient ID, Patient Age, Patient Gender,
View Position, ...``; PNGs in ``<root>/images/`` or ``<root>/images_001/images/`` ...;
``train_val_list.txt`` / ``test_list.txt`` give the official split. ``Finding Labels`` is
``No Finding`` or findings joined by ``|``. Patient ID and follow-up number are never copied.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import DataError
from ._base import normalise_sex, relative_to, write_frame

__all__ = ["nih_frame", "nih"]


def _entry_csv(root: Path) -> Path:
    for name in ("Data_Entry_2017_v2020.csv", "Data_Entry_2017.csv"):
        if (root / name).is_file():
            return root / name
    raise DataError(f"{root}: expected Data_Entry_2017.csv (NIH ChestX-ray14) not found")


def _read_list(path: Path) -> set[str]:
    return set(path.read_text().split()) if path.is_file() else set()


def nih_frame(root: str | os.PathLike[str], *, target: str = "any", domain: str = "nih",
              relative_to_dir: str | os.PathLike[str] | None = None) -> pd.DataFrame:
    """Manifest rows for ChestX-ray14: label 1 = any finding (or ``target``, e.g. ``"Nodule"``).

    Attributes: sex (F/M), age (years), view (PA/AP), site. Images not on disk are skipped
    (the dataset ships in 12 archives; a partial download is common).
    """
    root = Path(root)
    t = pd.read_csv(_entry_csv(root), dtype=str)
    need = {"Image Index", "Finding Labels"}
    if not need <= set(t.columns):
        raise DataError(f"{_entry_csv(root)}: missing column(s) {sorted(need - set(t.columns))}")
    where = {p.name: p for p in root.glob("images*/**/*.png")}
    where.update({p.name: p for p in root.glob("*.png")})
    test, trainval = _read_list(root / "test_list.txt"), _read_list(root / "train_val_list.txt")
    findings = t["Finding Labels"].fillna("").str.split("|")
    if target == "any":
        label = findings.map(lambda f: int(f != ["No Finding"] and f != [""]))
    else:
        label = findings.map(lambda f: int(target in f))
    present = t["Image Index"].map(lambda n: n in where)
    t, label = t[present], label[present]
    base = Path(relative_to_dir) if relative_to_dir is not None else root
    split = t["Image Index"].map(lambda n: "test" if n in test else ("train" if n in trainval else ""))
    return pd.DataFrame({
        "image": [relative_to(where[n], base) for n in t["Image Index"]],
        "label": label.astype(np.int64).to_numpy(),
        "domain": domain,
        "split": split.to_numpy(),
        "sex": normalise_sex(t.get("Patient Gender", pd.Series([""] * len(t)))).to_numpy(),
        "age": pd.to_numeric(t.get("Patient Age"), errors="coerce").to_numpy() if "Patient Age" in t else np.nan,
        "view": t.get("View Position", pd.Series([""] * len(t))).fillna("").to_numpy(),
        "site": "nih",
    })


def nih(root: str | os.PathLike[str], out: str | os.PathLike[str] | None = None, **kwargs) -> Path:
    """Write a ChestX-ray14 manifest (default ``<root>/manifest_nih.csv``); see `nih_frame`."""
    out = Path(out) if out is not None else Path(root) / "manifest_nih.csv"
    return write_frame(nih_frame(root, relative_to_dir=out.parent, **kwargs), out)
