"""Strict JSON for reports, with identifiers removed: numpy and torch values to numbers and
lists, NaN to null, objects with ``to_dict`` to dicts; keys that name patient identifiers and
strings that look like image file paths become ``"[removed]"``."""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["REMOVED", "to_jsonable"]

# Keys whose values would identify a patient or point at a patient's file.
_ID_KEYS = {"image", "mask", "path", "paths", "file", "filename", "patient", "patient_id", "patientid",
            "study_id", "studyid", "accession", "accession_number", "mrn", "subject_id", "dob",
            "birth_date", "name", "patient_name"}
_IMAGE_PATH = re.compile(
    r"\.(png|jpe?g|dcm|dicom|nii(\.gz)?|tiff?|bmp|gif|nrrd|mha|mhd)$", re.IGNORECASE
)
REMOVED = "[removed]"


def to_jsonable(obj: Any, *, _key: str | None = None) -> Any:
    """Recursively convert to strict JSON types: numpy scalars/arrays to numbers/lists, NaN and
    infinities to None, Paths to str, dataclasses / objects with `to_dict` to dicts; identifier
    keys and image-file-path strings become "[removed]"."""
    if _key is not None and _key.lower() in _ID_KEYS:
        return REMOVED
    if obj is None or isinstance(obj, bool):
        return obj
    if isinstance(obj, (np.bool_,)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        f = float(obj)
        return f if math.isfinite(f) else None
    if isinstance(obj, (str, Path)):
        s = str(obj)
        return REMOVED if _IMAGE_PATH.search(s.strip()) else s
    if hasattr(obj, "to_dict") and callable(obj.to_dict) and not isinstance(obj, Mapping):
        return to_jsonable(obj.to_dict())
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return to_jsonable(dataclasses.asdict(obj))
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if hasattr(obj, "detach") and hasattr(obj, "tolist"):  # torch tensor
        return to_jsonable(obj.detach().cpu().tolist())
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v, _key=str(k)) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set)):
        return [to_jsonable(v) for v in obj]
    return str(obj)
