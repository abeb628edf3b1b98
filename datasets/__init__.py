"""Everything that yields images, labels, masks, domains and group attributes.

Public entry points:

- `load_manifest` / `validate_frame`: read and check a manifest table (CSV / TSV / Parquet).
- `read_image` / `read_mask`: PNG, JPEG, DICOM and NIfTI in one orientation.
- `ManifestDataset`, `scan_readable`: a torch Dataset of MONAI-style dicts; skip unreadable files.
- `shiftkit.datasets.synth.radiograph` / `shiftkit.datasets.synth.dashcam`: procedural benchmarks.
- `shiftkit.datasets.adapters`: CheXpert, NIH ChestX-ray14, MIMIC-CXR-JPG, BDD100K, Cityscapes.

This package imports nothing from `shiftkit.adapt` or `shiftkit.evaluation`.
"""

from __future__ import annotations

from .dataset import BadFile, ManifestDataset, scan_readable
from .errors import ConfigError, DataError, ImageReadError, ManifestError, ShiftkitError
from .io import IMAGE_SUFFIXES, read_image, read_mask
from .manifest import CORE_COLUMNS, SPLIT_VALUES, attribute_columns, load_manifest, validate_frame

__all__ = [
    "BadFile", "ManifestDataset", "scan_readable",
    "ConfigError", "DataError", "ImageReadError", "ManifestError", "ShiftkitError",
    "IMAGE_SUFFIXES", "read_image", "read_mask",
    "CORE_COLUMNS", "SPLIT_VALUES", "attribute_columns", "load_manifest", "validate_frame",
]
