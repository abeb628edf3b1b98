"""Image and mask readers: PNG / JPEG / BMP / TIFF (via OpenCV), DICOM (pydicom), NIfTI (nibabel).

Every reader returns the same orientation: row 0 is the top of the picture as a viewer shows it,
shape (C, H, W) for images and (H, W) for masks.

- PNG/JPEG are decoded with OpenCV directly (never MONAI's PIL reader, which transposes 2-D
  images to (W, H) unless ``reverse_indexing=False``); BGR is turned into RGB.
- DICOM: the modality LUT (RescaleSlope / RescaleIntercept) is applied, then the VOI LUT or
  WindowCenter / WindowWidth when the file gives one, then MONOCHROME1 is inverted so that
  dense tissue is always bright. Scale to [0, 1]: by the window's output range when windowed;
  by the stored bit depth (2**BitsStored - 1) for plain unsigned pixels; else (rescaled or
  signed values, e.g. Hounsfield units, without a window) by the image's own min and max.
- NIfTI stores the column axis first (i = x = column, j = y = row; that is what ITK, SimpleITK
  and MONAI write for a 2-D image), so a 2-D slice is transposed to (H, W).

Intensities become float32 in [0, 1]: integer images by their type's range (8-bit / 255,
16-bit / 65535), DICOM by its output range, float images by their own min and max.
Anything that cannot be read raises `ImageReadError` naming the file.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .errors import DataError, ImageReadError

__all__ = ["read_image", "read_mask", "image_format", "coerce_image", "convert_channels", "IMAGE_SUFFIXES"]

_RASTER = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
_DICOM = (".dcm", ".dicom")
_NIFTI = (".nii", ".nii.gz")
IMAGE_SUFFIXES: tuple[str, ...] = _RASTER + _DICOM + _NIFTI


def image_format(path: str | os.PathLike[str]) -> str:
    """``"raster"``, ``"dicom"`` or ``"nifti"`` from the file name (DICOM also by its magic bytes)."""
    name = str(path).lower()
    if name.endswith(_NIFTI):
        return "nifti"
    if name.endswith(_DICOM):
        return "dicom"
    if name.endswith(_RASTER):
        return "raster"
    try:  # DICOM files often have no suffix (MIMIC-CXR, PACS exports): look for "DICM" at 128
        with open(path, "rb") as fh:
            fh.seek(128)
            if fh.read(4) == b"DICM":
                return "dicom"
    except OSError:
        pass
    raise ImageReadError(path, f"unsupported file type; expected one of {', '.join(IMAGE_SUFFIXES)}")


def _check_file(path: Path) -> None:
    try:  # a NUL byte (ValueError) or an over-long name (OSError) is a bad path, not a crash
        exists, regular = path.exists(), path.is_file()
    except (OSError, ValueError) as exc:
        raise ImageReadError(path, f"cannot access the path ({type(exc).__name__}: {exc})") from None
    if not exists:
        raise ImageReadError(path, "file not found")
    if not regular:
        raise ImageReadError(path, "not a regular file")


def _read_raster(path: Path) -> np.ndarray:
    """(H, W) or (H, W, C) array in RGB(A) order, native dtype."""
    import cv2

    data = np.fromfile(path, dtype=np.uint8)
    if data.size == 0:
        raise ImageReadError(path, "empty file")
    try:
        arr = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    except cv2.error as exc:  # e.g. a header claiming more rows than CV_IO_MAX_IMAGE_HEIGHT
        raise ImageReadError(path, f"not a readable image ({str(exc).strip().splitlines()[-1][:200]})") from None
    if arr is None:
        raise ImageReadError(path, "not a readable image (corrupt or truncated?)")
    if path.suffix.lower() == ".png" and not data[-12:].tobytes().endswith(b"IEND\xaeB`\x82"):
        # libpng happily returns the rows it got from a truncated file; refuse them.
        raise ImageReadError(path, "truncated PNG (no IEND chunk)")
    if arr.ndim == 3:
        if arr.shape[2] == 3:
            arr = arr[..., ::-1]
        elif arr.shape[2] == 4:
            arr = arr[..., [2, 1, 0, 3]]
    return np.ascontiguousarray(arr)


def _dicom_dataset(path: Path):
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        return pydicom.dcmread(path)
    except InvalidDicomError as exc:
        raise ImageReadError(path, f"not a DICOM file ({exc})") from None
    except Exception as exc:  # truncated / malformed files raise many different types
        raise ImageReadError(path, f"unreadable DICOM ({type(exc).__name__}: {exc})") from None


def _dicom_pixels(path: Path, ds) -> np.ndarray:
    try:
        return ds.pixel_array
    except AttributeError:
        raise ImageReadError(path, "DICOM file has no pixel data") from None
    except Exception as exc:
        raise ImageReadError(path, f"DICOM pixel data unreadable ({type(exc).__name__}: {exc})") from None


def _first(value) -> float:
    """First value of a possibly multi-valued DICOM element."""
    try:
        return float(value[0])
    except TypeError:
        return float(value)


def _window(path: Path, ds, values: np.ndarray) -> np.ndarray:
    """WindowCenter / WindowWidth onto [0, 1] per DICOM PS3.3 C.11.2.1.2 (first window if several)."""
    try:
        c, w = _first(ds.WindowCenter), _first(ds.WindowWidth)
    except (TypeError, ValueError) as exc:
        raise ImageReadError(path, f"unreadable WindowCenter/WindowWidth ({exc})") from None
    func = str(getattr(ds, "VOILUTFunction", "LINEAR") or "LINEAR").upper()
    if func == "SIGMOID":
        return 1.0 / (1.0 + np.exp(-4.0 * (values - c) / max(w, 1e-6)))
    if func == "LINEAR_EXACT":
        return np.clip((values - c) / max(w, 1e-6) + 0.5, 0.0, 1.0)
    if w < 1:
        raise ImageReadError(path, f"WindowWidth {w} < 1 is invalid for a LINEAR window")
    return np.clip((values - (c - 0.5)) / max(w - 1, 1e-6) + 0.5, 0.0, 1.0)


def _has_rescale(ds) -> bool:
    slope = float(getattr(ds, "RescaleSlope", 1.0) or 1.0)
    intercept = float(getattr(ds, "RescaleIntercept", 0.0) or 0.0)
    return slope != 1.0 or intercept != 0.0


def _read_dicom(path: Path) -> np.ndarray:
    """DICOM -> float32 (H, W[, C]) in [0, 1], bright = dense."""
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    ds = _dicom_dataset(path)
    raw = _dicom_pixels(path, ds)
    photometric = str(getattr(ds, "PhotometricInterpretation", "MONOCHROME2")).upper()
    if photometric in ("RGB", "YBR_FULL", "YBR_FULL_422") or raw.ndim == 3 and raw.shape[-1] == 3:
        if raw.ndim != 3 or raw.shape[-1] != 3:
            raise ImageReadError(path, f"colour DICOM with unexpected pixel shape {raw.shape}")
        if photometric.startswith("YBR"):
            from pydicom.pixels import convert_color_space

            raw = convert_color_space(raw, photometric, "RGB")
        return _normalise(path, raw)
    if raw.ndim != 2:
        raise ImageReadError(path, f"expected a single 2-D frame, got pixel shape {raw.shape}")
    values = np.asarray(apply_modality_lut(raw, ds), dtype=np.float64)
    if "VOILUTSequence" in ds:
        lut = ds.VOILUTSequence[0]
        values = np.asarray(apply_voi_lut(values, ds, prefer_lut=True), dtype=np.float64)
        out_bits = int(lut.LUTDescriptor[2])
        out = np.clip(values / float(2**out_bits - 1), 0.0, 1.0)
    elif "WindowCenter" in ds and "WindowWidth" in ds:
        out = _window(path, ds, values)
    elif _has_rescale(ds) or int(getattr(ds, "PixelRepresentation", 0)) != 0:
        out = _minmax(path, values)  # e.g. Hounsfield units: no natural [0, 1] range without a window
    else:  # plain unsigned detector values: scale by the stored bit depth, like a 16-bit PNG
        bits = int(getattr(ds, "BitsStored", raw.dtype.itemsize * 8))
        out = np.clip(values / float(2**bits - 1), 0.0, 1.0)
    if photometric == "MONOCHROME1":
        out = 1.0 - out
    return out.astype(np.float32)


def _read_nifti(path: Path) -> np.ndarray:
    """NIfTI -> array (H, W) or (H, W, C): axes (i, j) = (column, row) are swapped to (row, column)."""
    import nibabel as nib

    try:
        img = nib.load(str(path))
        data = np.asarray(img.dataobj)
    except Exception as exc:
        raise ImageReadError(path, f"unreadable NIfTI ({type(exc).__name__}: {exc})") from None
    if data.dtype.names:  # RGB24 stored as a structured type
        data = np.stack([data[n] for n in data.dtype.names], axis=-1)
        data = np.squeeze(data)
        if data.ndim != 3:
            raise ImageReadError(path, f"expected a 2-D RGB image, got shape {data.shape}")
        return np.ascontiguousarray(data.transpose(1, 0, 2))
    squeezed = data.reshape([s for i, s in enumerate(data.shape) if i < 2 or s != 1])
    if squeezed.ndim == 2:
        return np.ascontiguousarray(squeezed.T)
    if squeezed.ndim == 3 and squeezed.shape[2] in (3, 4):  # (x, y, channels)
        return np.ascontiguousarray(squeezed.transpose(1, 0, 2))
    raise ImageReadError(path, f"expected a 2-D image (optionally with channels), got shape {data.shape}")


def _minmax(path: Path, values: np.ndarray) -> np.ndarray:
    if not np.all(np.isfinite(values)):
        raise ImageReadError(path, "image contains NaN or infinite values")
    lo, hi = float(values.min()), float(values.max())
    if hi <= lo:
        return np.zeros(values.shape, np.float64)
    return (values - lo) / (hi - lo)


def _normalise(path: Path, arr: np.ndarray) -> np.ndarray:
    """Native dtype -> float32 in [0, 1]."""
    if arr.dtype == np.bool_:
        return arr.astype(np.float32)
    if np.issubdtype(arr.dtype, np.unsignedinteger):
        return (arr.astype(np.float32) / float(np.iinfo(arr.dtype).max)).astype(np.float32)
    return _minmax(path, arr.astype(np.float64)).astype(np.float32)


def _read_any(path: Path) -> tuple[str, np.ndarray]:
    _check_file(path)
    fmt = image_format(path)
    if fmt == "raster":
        return fmt, _read_raster(path)
    if fmt == "dicom":
        try:
            return fmt, _read_dicom(path)
        except ImageReadError:
            raise
        except Exception as exc:  # malformed tags (bad window strings, LUT descriptors...)
            raise ImageReadError(path, f"unusable DICOM ({type(exc).__name__}: {exc})") from None
    return fmt, _read_nifti(path)


def read_image(path: str | os.PathLike[str], *, channels: int | None = None) -> np.ndarray:
    """Read an image as float32 (C, H, W) with values in [0, 1].

    Args:
        path: PNG / JPEG / BMP / TIFF, DICOM (.dcm or no suffix) or NIfTI (.nii / .nii.gz).
        channels: if given (1 or 3), convert: RGB -> grey by ITU-R 601 luma, grey -> RGB by
            repetition. An alpha channel is dropped.

    Raises:
        ImageReadError: missing, empty, corrupt or truncated file, unsupported type or shape.
    """
    p = Path(path)
    fmt, arr = _read_any(p)
    img = arr if fmt == "dicom" else _normalise(p, arr)
    if img.ndim == 2:
        img = img[None]
    elif img.ndim == 3:
        if img.shape[2] == 4:
            img = img[..., :3]
        img = np.ascontiguousarray(img.transpose(2, 0, 1))
    else:
        raise ImageReadError(p, f"unexpected image shape {arr.shape}")
    if img.shape[1] == 0 or img.shape[2] == 0:
        raise ImageReadError(p, f"empty image of shape {arr.shape}")
    if channels is not None:
        try:
            img = convert_channels(img, channels, str(p))
        except DataError:
            raise ImageReadError(p, f"cannot convert {img.shape[0]} channel(s) to {channels}") from None
    return np.ascontiguousarray(img, dtype=np.float32)


def convert_channels(img: np.ndarray, channels: int | None, where: str = "image") -> np.ndarray:
    """``(C, H, W)`` -> ``(channels, H, W)``: RGB -> grey by ITU-R 601 luma
    (0.299 R + 0.587 G + 0.114 B), grey -> RGB by repetition; ``None`` or equal counts: as is.

    Raises:
        DataError: any other conversion, naming ``where``.
    """
    if channels is None or img.shape[0] == channels:
        return img
    if channels == 1 and img.shape[0] == 3:
        return (0.299 * img[0] + 0.587 * img[1] + 0.114 * img[2])[None]
    if channels == 3 and img.shape[0] == 1:
        return np.repeat(img, 3, axis=0)
    raise DataError(f"{where}: {img.shape[0]} channels, expected {channels}")


def coerce_image(image: object, *, channels: int | None = None, where: str = "image") -> np.ndarray:
    """The one image-coercion helper: an in-memory image as float32 ``(C, H, W)`` in [0, 1].

    Args:
        image: numpy array or torch tensor ``(H, W)`` or ``(C, H, W)``; integer dtypes are
            scaled by their maximum (8-bit / 255, 16-bit / 65535), floats kept as they are.
        channels: convert to 1 or 3 channels (:func:`convert_channels`).
        where: the name used in error messages.

    Raises:
        DataError: a non-numeric dtype, another shape (channel-last included), NaN/Inf values,
            or an impossible channel conversion.
    """
    arr = image.detach().cpu().numpy() if hasattr(image, "detach") else np.asarray(image)
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_):
        raise DataError(f"{where}: expected a numeric image array, got dtype {arr.dtype}")
    if np.issubdtype(arr.dtype, np.integer):
        arr = arr.astype(np.float32) / float(np.iinfo(arr.dtype).max)  # 8/16-bit -> [0, 1]
    arr = arr.astype(np.float32)
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3:
        raise DataError(f"{where}: expected an image (H, W) or (C, H, W), got shape {arr.shape}")
    if arr.shape[0] > 4 and arr.shape[-1] in (1, 3, 4):
        raise DataError(f"{where}: shape {arr.shape} looks channel-last (H, W, C); pass (C, H, W), "
                        "e.g. np.moveaxis(image, -1, 0)")
    if not np.isfinite(arr).all():
        raise DataError(f"{where}: image holds NaN/Inf values")
    return np.ascontiguousarray(convert_channels(arr, channels, where), dtype=np.float32)


def read_mask(path: str | os.PathLike[str]) -> np.ndarray:
    """Read a label map as int64 (H, W): each pixel a class index, values kept as stored.

    PNG masks saved as RGB with equal channels (common for exported label maps) are accepted;
    genuinely coloured masks are rejected (their palette is not a class index).
    """
    p = Path(path)
    fmt, arr = _read_any(p)
    if fmt == "dicom":  # masks take the raw stored values, not the display pipeline
        arr = _dicom_pixels(p, _dicom_dataset(p))
    if arr.ndim == 3:
        if arr.shape[2] == 4:
            arr = arr[..., :3]
        if not (np.array_equal(arr[..., 0], arr[..., 1]) and np.array_equal(arr[..., 0], arr[..., 2])):
            raise ImageReadError(p, "mask has colour channels that differ; expected a single-channel label map")
        arr = arr[..., 0]
    if arr.ndim != 2:
        raise ImageReadError(p, f"mask must be 2-D, got shape {arr.shape}")
    if np.issubdtype(arr.dtype, np.floating):
        if not np.all(np.isfinite(arr)) or not np.all(arr == np.round(arr)):
            raise ImageReadError(p, "mask holds non-integer values; expected class indices")
    if arr.size and arr.min() < 0:
        raise ImageReadError(p, f"mask holds negative class index {int(arr.min())}")
    return np.ascontiguousarray(arr, dtype=np.int64)
