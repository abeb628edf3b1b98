"""MIMIC-CXR-JPG 2.0.0 (and MIMIC-CXR DICOM) -> manifest.

On disk (``root`` = the ``2.0.0`` folder): ``mimic-cxr-2.0.0-metadata.csv[.gz]`` (dicom_id,
subject_id, study_id, ViewPosition, ...), ``mimic-cxr-2.0.0-chexpert.csv[.gz]`` (subject_id,
study_id, 14 CheXpert labels), ``mimic-cxr-2.0.0-split.csv[.gz]`` (dicom_id, study_id,
subject_id, split = train/validate/test) and images at
``files/p<first 2 digits>/p<subject_id>/s<study_id>/<dicom_id>.jpg`` (``.dcm`` in MIMIC-CXR).
Sex and age live in MIMIC-IV's ``patients.csv`` (subject_id, gender, anchor_age): pass it as
``patients_csv`` to get them. Subject, study and DICOM IDs are used to join, never written.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import DataError
from ._base import finding_label, normalise_sex, relative_to, write_frame
from .chexpert import OBSERVATIONS

__all__ = ["mimic_frame", "mimic"]

_SPLIT = {"train": "train", "validate": "val", "test": "test"}


def _table(root: Path, stem: str) -> pd.DataFrame:
    for suffix in (".csv", ".csv.gz"):
        if (root / f"{stem}{suffix}").is_file():
            return pd.read_csv(root / f"{stem}{suffix}", dtype=str)
    raise DataError(f"{root}: expected {stem}.csv(.gz) (MIMIC-CXR-JPG) not found")


def mimic_frame(root: str | os.PathLike[str], *, target: str | Sequence[str] = "any", uncertain: str = "ones",
                views: Sequence[str] | None = ("PA", "AP"), patients_csv: str | os.PathLike[str] | None = None,
                suffix: str = ".jpg", domain: str = "mimic",
                relative_to_dir: str | os.PathLike[str] | None = None) -> pd.DataFrame:
    """Manifest rows for MIMIC-CXR(-JPG); labels as in `chexpert_frame` (``uncertain`` policy).

    ``views`` keeps these ViewPosition values (None: all). ``suffix`` ".dcm" for MIMIC-CXR DICOMs.
    Attributes: view, sex and age (with ``patients_csv``), site.
    """
    root = Path(root)
    meta = _table(root, "mimic-cxr-2.0.0-metadata")
    labels = _table(root, "mimic-cxr-2.0.0-chexpert")
    split = _table(root, "mimic-cxr-2.0.0-split")
    cols = list(OBSERVATIONS) if target == "any" else ([target] if isinstance(target, str) else list(target))
    labels = labels.assign(_label=finding_label(labels, cols, uncertain))[["subject_id", "study_id", "_label"]]
    t = meta.merge(labels, on=["subject_id", "study_id"], how="inner")
    t = t.merge(split[["dicom_id", "split"]], on="dicom_id", how="left")
    if views is not None and "ViewPosition" in t.columns:
        t = t[t["ViewPosition"].isin(list(views))]
    t = t[t["_label"].notna()]
    if patients_csv is not None:
        pat = pd.read_csv(patients_csv, dtype=str)[["subject_id", "gender", "anchor_age"]]
        t = t.merge(pat, on="subject_id", how="left")
    paths = [root / "files" / f"p{s[:2]}" / f"p{s}" / f"s{st}" / f"{d}{suffix}"
             for s, st, d in zip(t["subject_id"], t["study_id"], t["dicom_id"], strict=True)]
    on_disk = np.array([p.is_file() for p in paths], dtype=bool)
    t = t[on_disk]
    paths = [p for p, ok in zip(paths, on_disk, strict=True) if ok]
    base = Path(relative_to_dir) if relative_to_dir is not None else root
    out = pd.DataFrame({
        "image": [relative_to(p, base) for p in paths],
        "label": t["_label"].astype(np.int64).to_numpy(),
        "domain": domain,
        "split": t["split"].map(_SPLIT).fillna("").to_numpy(),
        "view": t.get("ViewPosition", pd.Series([""] * len(t))).fillna("").to_numpy(),
    })
    if patients_csv is not None:
        out["sex"] = normalise_sex(t["gender"].fillna("")).to_numpy()
        out["age"] = pd.to_numeric(t["anchor_age"], errors="coerce").to_numpy()
    out["site"] = "mimic"
    return out


def mimic(root: str | os.PathLike[str], out: str | os.PathLike[str] | None = None, **kwargs) -> Path:
    """Write a MIMIC-CXR manifest (default ``<root>/manifest_mimic.csv``); see `mimic_frame`."""
    out = Path(out) if out is not None else Path(root) / "manifest_mimic.csv"
    return write_frame(mimic_frame(root, relative_to_dir=out.parent, **kwargs), out)
