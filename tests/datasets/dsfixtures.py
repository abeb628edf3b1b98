"""Writers for every on-disk format the readers accept (shared by the datasets tests)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

# A patient identity that must never show up in any output.
SECRET_NAME = "Doe^Janet"
SECRET_ID = "PID-9931-77"
SECRET_BIRTH = "19410203"


def write_dicom_file(
    path: Path,
    pixels: np.ndarray,
    *,
    photometric: str = "MONOCHROME2",
    slope: float | None = None,
    intercept: float | None = None,
    window: tuple[float, float] | None = None,
    bits_stored: int | None = None,
    extra: dict | None = None,
) -> Path:
    """Write a minimal, valid DICOM (explicit VR little endian) with pixel data ``pixels``.

    The file carries a patient name, ID and birth date so tests can prove they never leak.
    """
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.PatientName = SECRET_NAME
    ds.PatientID = SECRET_ID
    ds.PatientBirthDate = SECRET_BIRTH
    ds.PatientSex = "F"
    ds.PatientAge = "083Y"
    ds.Modality = "DX"
    ds.ViewPosition = "PA"
    arr = np.ascontiguousarray(pixels)
    ds.Rows, ds.Columns = arr.shape[:2]
    if arr.ndim == 3:
        ds.SamplesPerPixel = 3
        ds.PlanarConfiguration = 0
        photometric = "RGB"
    else:
        ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    bits = arr.dtype.itemsize * 8
    ds.BitsAllocated = bits
    ds.BitsStored = bits_stored or bits
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = 1 if np.issubdtype(arr.dtype, np.signedinteger) else 0
    if slope is not None:
        ds.RescaleSlope = slope
        ds.RescaleIntercept = intercept or 0.0
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = window
    for k, v in (extra or {}).items():
        setattr(ds, k, v)
    ds.PixelData = arr.tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def write_png_file(path: Path, arr: np.ndarray) -> Path:
    """PNG of a grey (H, W) or RGB (H, W, 3) uint8/uint16 array (RGB order)."""
    import cv2

    path.parent.mkdir(parents=True, exist_ok=True)
    out = arr[..., ::-1] if arr.ndim == 3 else arr
    assert cv2.imwrite(str(path), np.ascontiguousarray(out))
    return path
