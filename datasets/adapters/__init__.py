"""Turn public datasets already on disk into manifests (nothing is downloaded).

Each adapter has a ``*_frame(root, ...) -> DataFrame`` and a writer ``name(root, out=None, ...)
-> Path`` that writes ``manifest_<name>.csv`` (default: inside ``root``, so relative paths stay
inside the manifest's folder). Patient names, IDs and birth dates never reach a manifest.
"""

from __future__ import annotations

from ._base import UNCERTAIN_POLICIES
from .bdd100k import bdd100k, bdd100k_frame
from .chexpert import chexpert, chexpert_frame
from .cityscapes import cityscapes, cityscapes_frame
from .driving import LABELID_TO_TRAINID, TRAINID_TO_SHIFTKIT
from .mimic import mimic, mimic_frame
from .nih import nih, nih_frame

__all__ = [
    "UNCERTAIN_POLICIES", "LABELID_TO_TRAINID", "TRAINID_TO_SHIFTKIT",
    "bdd100k", "bdd100k_frame", "chexpert", "chexpert_frame", "cityscapes", "cityscapes_frame",
    "mimic", "mimic_frame", "nih", "nih_frame",
]
