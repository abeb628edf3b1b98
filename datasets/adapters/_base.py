"""Shared pieces of the dataset adapters: writing manifests, label policies, identifier hygiene.

Privacy rule for every adapter: a manifest never gets a column holding a patient name, patient
or subject ID, study/accession number or birth date, and values read from DICOM headers are
limited to an allow-list (`SAFE_DICOM_TAGS`). Image paths are kept as the dataset ships them
(they are how the file is found); some public datasets put a pseudonymous patient folder in the
path, which the adapter cannot change.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import DataError
from ..files import atomic_write_bytes

__all__ = ["UNCERTAIN_POLICIES", "FORBIDDEN_COLUMNS", "write_frame", "apply_uncertain", "relative_to",
           "require", "SAFE_DICOM_TAGS"]

#: How CheXpert-style uncertain labels (-1) are treated: U-Ones, U-Zeros, or drop the row.
UNCERTAIN_POLICIES: tuple[str, ...] = ("ones", "zeros", "ignore")

#: Lower-cased column names that must never reach a manifest.
FORBIDDEN_COLUMNS = frozenset({
    "patient id", "patient_id", "patientid", "subject_id", "subject id", "study_id", "dicom_id",
    "patientname", "patient name", "patient_name", "patientbirthdate", "birth_date", "birthdate",
    "dob", "accessionnumber", "accession_number", "mrn", "follow-up #",
})

#: DICOM attributes an adapter may copy into a manifest (no identity, no dates).
SAFE_DICOM_TAGS: tuple[str, ...] = ("PatientSex", "PatientAge", "ViewPosition", "Modality", "Manufacturer",
                                    "PhotometricInterpretation", "BodyPartExamined")


def require(path: Path, what: str) -> Path:
    """Return ``path`` or raise `DataError` saying which expected file or folder is missing."""
    if not path.exists():
        raise DataError(f"{path}: expected {what} not found (is this the right dataset root?)")
    return path


def relative_to(path: Path, folder: Path) -> str:
    """``path`` relative to ``folder`` (POSIX separators); absolute when it lies elsewhere."""
    try:
        return path.resolve().relative_to(folder.resolve()).as_posix()
    except ValueError:
        return str(path.resolve())


def write_frame(frame: pd.DataFrame, out: str | os.PathLike[str]) -> Path:
    """Check the frame holds no identifier columns, then write it as CSV atomically."""
    bad = [c for c in frame.columns if str(c).strip().lower() in FORBIDDEN_COLUMNS]
    if bad:  # pragma: no cover - a programming error in an adapter, never user input
        raise AssertionError(f"adapter tried to write identifier column(s) {bad}")
    if len(frame) == 0:
        raise DataError(f"{out}: no images found to write into the manifest")
    path = Path(out)
    atomic_write_bytes(path, frame.to_csv(index=False, lineterminator="\n").encode())
    return path


def apply_uncertain(values: pd.Series, policy: str) -> pd.Series:
    """CheXpert labels (1, 0, -1 uncertain, blank = not mentioned) -> float 1/0, NaN where dropped.

    Blank means the report did not mention the finding, which CheXpert treats as negative.
    """
    if policy not in UNCERTAIN_POLICIES:
        raise DataError(f"uncertain={policy!r}: expected one of {', '.join(UNCERTAIN_POLICIES)}")
    v = pd.to_numeric(values, errors="coerce").fillna(0.0).astype(np.float64)
    unc = v == -1
    if policy == "ones":
        v[unc] = 1.0
    elif policy == "zeros":
        v[unc] = 0.0
    else:
        v[unc] = np.nan
    return v


def finding_label(frame: pd.DataFrame, columns: Sequence[str], policy: str) -> pd.Series:
    """1 if any of ``columns`` is positive after the policy, 0 if all negative, NaN if undecidable."""
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise DataError(f"label column(s) {missing} not in the table; available: {list(frame.columns)}")
    vals = pd.concat([apply_uncertain(frame[c], policy) for c in columns], axis=1)
    pos = (vals == 1).any(axis=1)
    undecided = vals.isna().any(axis=1) & ~pos
    out = pos.astype(np.float64)
    out[undecided] = np.nan
    return out


def normalise_sex(values: pd.Series) -> pd.Series:
    """Male/M/1 -> "M", Female/F -> "F", anything else -> "" (unknown)."""
    s = values.astype(str).str.strip().str.upper()
    return s.map(lambda v: "M" if v in ("M", "MALE") else ("F" if v in ("F", "FEMALE") else ""))
