"""Fixtures for the datasets tests: writers for every on-disk format the readers accept."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from dsfixtures import write_dicom_file, write_png_file


@pytest.fixture
def write_dicom() -> Callable[..., Path]:
    return write_dicom_file


@pytest.fixture
def write_png() -> Callable[..., Path]:
    return write_png_file


@pytest.fixture
def ramp_image() -> np.ndarray:
    """A non-square (5 x 7) 8-bit image with a unique value per pixel: any transpose or flip shows."""
    return (np.arange(35, dtype=np.uint8).reshape(5, 7) * 7).astype(np.uint8)
