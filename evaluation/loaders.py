"""Reading saved features and predictions for the people who do not train: .npy / .npz /
.csv / .parquet / .safetensors. Nothing is ever unpickled (np.load(allow_pickle=False);
safetensors holds raw tensors only). Also `image_statistics_features`, simple per-image
intensity and texture statistics for gap tests when no model features exist.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from shiftkit.datasets.errors import DataError

__all__ = ["load_features", "load_table", "image_statistics_features", "IMAGE_STAT_NAMES"]


def load_table(path: str | os.PathLike[str]) -> pd.DataFrame:
    """A CSV / TSV / Parquet table as a DataFrame; DataError naming the file otherwise."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: file not found")
    suffix = p.suffix.lower()
    try:
        if suffix == ".parquet":
            return pd.read_parquet(p)
        if suffix in (".csv", ".tsv", ".txt"):
            return pd.read_csv(p, sep="\t" if suffix == ".tsv" else ",")
    except (ValueError, ImportError, OSError, pd.errors.ParserError) as exc:
        raise DataError(f"{p}: cannot read table: {exc}") from exc
    raise DataError(f"{p}: unsupported table format {suffix!r} (use .csv, .tsv or .parquet)")


def load_features(path: str | os.PathLike[str], *, key: str | None = None) -> np.ndarray:
    """Features (N, D) float64 from .npy, .npz, .csv/.tsv/.parquet (numeric columns; other
    columns are ignored) or .safetensors (`key` names the tensor; default "features" or the only
    tensor). A 1-D array is read as N samples of one feature; higher ranks are flattened per row.
    """
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: file not found")
    suffix = "".join(p.suffixes[-1:]).lower()
    try:
        if suffix == ".npy":
            arr = np.load(p, allow_pickle=False)
        elif suffix == ".npz":
            with np.load(p, allow_pickle=False) as z:
                names = list(z.files)
                name = key or ("features" if "features" in names else (names[0] if len(names) == 1 else None))
                if name is None or name not in names:
                    raise DataError(f"{p}: holds arrays {names}; choose one with key=")
                arr = z[name]
        elif suffix == ".safetensors":
            from safetensors.numpy import load_file

            tensors = load_file(str(p))
            names = list(tensors)
            name = key or ("features" if "features" in names else (names[0] if len(names) == 1 else None))
            if name is None or name not in tensors:
                raise DataError(f"{p}: holds tensors {names}; choose one with key=")
            arr = tensors[name]
        elif suffix in (".csv", ".tsv", ".txt", ".parquet"):
            frame = load_table(p)
            num = frame.select_dtypes(include=[np.number, "bool"])
            if num.shape[1] == 0:
                raise DataError(f"{p}: no numeric columns; columns are {list(frame.columns)}")
            arr = num.to_numpy(dtype=float)
        else:
            raise DataError(f"{p}: unsupported feature format {suffix!r} (use .npy, .npz, .csv, .parquet or "
                            ".safetensors; pickled files are never read)")
    except DataError:
        raise
    except ValueError as exc:  # includes "Object arrays cannot be loaded when allow_pickle=False"
        raise DataError(f"{p}: cannot read features: {exc}") from exc
    except Exception as exc:  # corrupt files: zip/safetensors header errors
        raise DataError(f"{p}: cannot read features ({type(exc).__name__}: {exc})") from exc
    arr = np.asarray(arr)
    if not np.issubdtype(arr.dtype, np.number) and arr.dtype != np.bool_:
        raise DataError(f"{p}: features must be numeric; got dtype {arr.dtype}")
    if arr.ndim == 1:
        arr = arr[:, None]
    elif arr.ndim > 2:
        arr = arr.reshape(arr.shape[0], -1)
    arr = arr.astype(np.float64)
    bad = ~np.isfinite(arr)
    if bad.any():
        raise DataError(f"{p}: {int(bad.sum())} non-finite value(s), first in row {int(np.argwhere(bad)[0][0])}")
    if arr.shape[0] < 2:
        raise DataError(f"{p}: needs at least 2 rows; got {arr.shape[0]}")
    return arr


IMAGE_STAT_NAMES = ("mean", "std", "p01", "p05", "p25", "p50", "p75", "p95", "p99",
                    "frac_dark", "frac_bright", "grad_mean", "laplacian_var")


def image_statistics_features(image: Any) -> np.ndarray:
    """Per-channel intensity and texture statistics of one image (C, H, W) or (H, W) in [0, 1]:
    mean, std, 1/5/25/50/75/95/99th percentiles, share of pixels < 0.02 and > 0.98, mean
    gradient magnitude (sharpness) and Laplacian variance (blur / noise). Returns (13 C,) float.

    These see acquisition shifts (exposure, gamma, noise, blur, polarity, collimation), not
    semantics; for a gap in what a model sees, pass its features instead.
    """
    img = np.asarray(image, dtype=np.float64)
    if img.ndim == 2:
        img = img[None]
    if img.ndim != 3:
        raise DataError(f"image must be (C, H, W) or (H, W); got shape {img.shape}")
    feats = []
    for ch in img:
        q = np.percentile(ch, [1, 5, 25, 50, 75, 95, 99])
        gy, gx = np.gradient(ch)
        lap = (-4 * ch[1:-1, 1:-1] + ch[:-2, 1:-1] + ch[2:, 1:-1] + ch[1:-1, :-2] + ch[1:-1, 2:]) \
            if min(ch.shape) >= 3 else np.zeros(1)
        feats += [ch.mean(), ch.std(), *q, (ch < 0.02).mean(), (ch > 0.98).mean(),
                  np.hypot(gx, gy).mean(), lap.var()]
    return np.asarray(feats, dtype=np.float64)
