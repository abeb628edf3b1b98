"""Label-map conversions shared by the driving adapters (Cityscapes and BDD100K use the same ids)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..files import atomic_write_bytes
from ..io import read_mask
from ..synth._common import encode_png

__all__ = ["LABELID_TO_TRAINID", "TRAINID_TO_SHIFTKIT", "IGNORE", "convert_mask"]

IGNORE = 255

#: Cityscapes labelIds (0..33, -1) -> trainIds (0..18, 255 ignore), from cityscapesscripts' labels.py.
LABELID_TO_TRAINID = np.full(256, IGNORE, np.uint8)
for _label_id, _train_id in {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10, 24: 11,
                             25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18}.items():
    LABELID_TO_TRAINID[_label_id] = _train_id

#: trainIds -> shiftkit dashcam classes (0 road, 2 sidewalk, 3 building, 4 vegetation, 5 terrain,
#: 6 sky, 7 vehicle, 8 person); wall, fence, pole, lights and signs have no shiftkit class -> 255.
TRAINID_TO_SHIFTKIT = np.full(256, IGNORE, np.uint8)
for _train_id, _sk in {0: 0, 1: 2, 2: 3, 8: 4, 9: 5, 10: 6, 11: 8, 12: 8, 13: 7, 14: 7, 15: 7, 16: 7, 17: 7,
                       18: 7}.items():
    TRAINID_TO_SHIFTKIT[_train_id] = _sk


def convert_mask(src: Path, dst: Path, *lookups: np.ndarray) -> Path:
    """Read label map ``src``, map it through each lookup table in turn, write ``dst`` (8-bit PNG)."""
    m = read_mask(src)
    out = np.clip(m, 0, 255).astype(np.uint8)
    for lut in lookups:
        out = lut[out]
    atomic_write_bytes(dst, encode_png(out))
    return dst
