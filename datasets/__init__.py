"""Everything that yields images, labels, masks, domains and group attributes.

Public entry points:

- `load_manifest` / `validate_frame`: read and check a manifest table (CSV / TSV / Parquet).
- `read_image` / `read_mask`: PNG, JPEG, DICOM and NIfTI in one orientation; `coerce_image`:
  an in-memory array or tensor as float32 (C, H, W) in [0, 1].
- `atomic_write_bytes` / `atomic_write_text` / `atomic_path`: the one atomic file writer.
- `ManifestDataset`, `scan_readable`: a torch Dataset of MONAI-style dicts; skip unreadable files.
- `shiftkit.datasets.synth.radiograph` / `shiftkit.datasets.synth.dashcam`: procedural benchmarks.
- `shiftkit.datasets.adapters`: CheXpert, NIH ChestX-ray14, MIMIC-CXR-JPG, BDD100K, Cityscapes.

This package imports nothing from `shiftkit.adapt` or `shiftkit.evaluation`.
"""

from __future__ import annotations

import importlib
from typing import Any

# One style for the three packages: public names map to the module that defines them and are
# imported on first use (``from shiftkit.datasets import read_image`` works as usual).
_EXPORTS = {
    "BadFile": ".dataset",
    "ManifestDataset": ".dataset",
    "scan_readable": ".dataset",
    "ConfigError": ".errors",
    "DataError": ".errors",
    "ImageReadError": ".errors",
    "ManifestError": ".errors",
    "ShiftkitError": ".errors",
    "IMAGE_SUFFIXES": ".io",
    "coerce_image": ".io",
    "read_image": ".io",
    "read_mask": ".io",
    "atomic_path": ".files",
    "atomic_write_bytes": ".files",
    "atomic_write_text": ".files",
    "CORE_COLUMNS": ".manifest",
    "SPLIT_VALUES": ".manifest",
    "attribute_columns": ".manifest",
    "load_manifest": ".manifest",
    "validate_frame": ".manifest",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
