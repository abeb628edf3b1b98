"""Procedural, deterministic benchmark generators.

- `radiograph`: chest radiographs from several hospital sites (source ``city``, target ``rural``).
- `dashcam`: RGB road scenes with per-pixel classes (source ``urban_day``, target ``rural_day``).
- `digits`: real handwritten digits (scikit-learn) through acquisition devices (source ``scanner``, target ``camera``).

Each module offers ``sample``, ``SynthDataset``, ``export`` and ``DOMAINS``; `get` maps a
benchmark name to its module.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from ..errors import DataError

BENCHMARKS: tuple[str, ...] = ("radiograph", "dashcam", "digits")


def get(name: str) -> ModuleType:
    """The generator module of benchmark ``name`` (one of `BENCHMARKS`)."""
    if name not in BENCHMARKS:
        raise DataError(f"unknown synthetic benchmark {name!r}; known: {', '.join(BENCHMARKS)}")
    return importlib.import_module(f"{__name__}.{name}")


__all__ = ["BENCHMARKS", "get"]
