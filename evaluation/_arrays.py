"""Input coercion shared by the evaluation modules.

Every public function in `shiftkit.evaluation` accepts numpy arrays, torch tensors, lists and
pandas objects; these helpers turn them into numpy arrays and raise `DataError` naming the
argument when the input cannot be used.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from shiftkit.datasets.errors import DataError


def to_numpy(x: Any, name: str) -> np.ndarray:
    """Return `x` as a numpy array (torch tensors are detached and moved to CPU)."""
    if x is None:
        raise DataError(f"argument {name!r} is None")
    if hasattr(x, "detach") and hasattr(x, "cpu"):  # torch.Tensor, without importing torch here
        x = x.detach().cpu().numpy()
    elif hasattr(x, "to_numpy"):  # pandas Series / DataFrame
        x = x.to_numpy()
    try:
        return np.asarray(x)
    except Exception as exc:  # ragged lists and the like
        raise DataError(f"argument {name!r} cannot be converted to an array: {exc}") from exc


def features_2d(x: Any, name: str, *, min_rows: int = 2) -> np.ndarray:
    """Features as float64 (N, D). A 1-D input is read as N samples of one feature."""
    arr = to_numpy(x, name)
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2:
        raise DataError(f"argument {name!r} must have shape (N, D); got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.number) and arr.dtype != np.bool_:
        raise DataError(f"argument {name!r} must be numeric; got dtype {arr.dtype}")
    arr = arr.astype(np.float64, copy=False)
    if arr.shape[0] < min_rows:
        raise DataError(f"argument {name!r} needs at least {min_rows} rows; got {arr.shape[0]}")
    bad = ~np.isfinite(arr)
    if bad.any():
        row = int(np.argwhere(bad)[0][0])
        raise DataError(f"argument {name!r} has {int(bad.sum())} non-finite value(s), first in row {row}")
    return arr


def same_width(a: np.ndarray, b: np.ndarray, name_a: str, name_b: str) -> None:
    """Raise `DataError` when two feature arrays differ in their number of columns."""
    if a.shape[1] != b.shape[1]:
        raise DataError(
            f"{name_a!r} has {a.shape[1]} feature column(s) but {name_b!r} has {b.shape[1]}; "
            "both domains must be embedded by the same model/layer"
        )


def labels_1d(y: Any, name: str = "y_true") -> np.ndarray:
    """Integer class labels (N,). Float labels must be whole numbers."""
    arr = to_numpy(y, name)
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 1:
        raise DataError(f"argument {name!r} must be 1-D labels; got shape {arr.shape}")
    if arr.dtype == np.bool_:
        return arr.astype(np.int64)
    if not np.issubdtype(arr.dtype, np.number):
        raise DataError(f"argument {name!r} must hold integer class labels; got dtype {arr.dtype}")
    if np.issubdtype(arr.dtype, np.floating):
        if not np.all(np.isfinite(arr)):
            raise DataError(f"argument {name!r} has non-finite label(s), first at row "
                            f"{int(np.argwhere(~np.isfinite(arr))[0][0])}")
        if not np.all(arr == np.round(arr)):
            raise DataError(f"argument {name!r} must hold integer class labels; found fractional values")
    return arr.astype(np.int64)


def probabilities(proba: Any, n: int | None = None, name: str = "proba", *, min_rows: int = 1) -> np.ndarray:
    """Class probabilities as float64 (N, K), K >= 2.

    A 1-D input is read as P(class 1) of a binary problem and expanded to (N, 2). ``n``: the
    row count the labels have (checked when given); ``min_rows``: the fewest rows accepted.
    Rows must lie in [0, 1] and sum to 1 (within 1e-3): logits are refused, not silently
    softmaxed, because a caller passing logits by mistake would get wrong calibration numbers.
    """
    arr = to_numpy(proba, name).astype(np.float64, copy=False)
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim == 1:
        arr = np.stack([1.0 - arr, arr], axis=1)
    if arr.ndim != 2:
        raise DataError(f"argument {name!r} must have shape (N,) or (N, K); got {arr.shape}")
    if n is not None and arr.shape[0] != n:
        raise DataError(f"argument {name!r} has {arr.shape[0]} rows but y_true has {n}")
    if arr.shape[0] < min_rows:
        raise DataError(f"argument {name!r} must hold at least {min_rows} rows; got {arr.shape[0]}")
    if not np.all(np.isfinite(arr)):
        row = int(np.argwhere(~np.isfinite(arr))[0][0])
        raise DataError(f"argument {name!r} has non-finite value(s), first in row {row}")
    if arr.size and (arr.min() < -1e-6 or arr.max() > 1 + 1e-6):
        raise DataError(f"argument {name!r} must hold probabilities in [0, 1] (got range "
                        f"{arr.min():.3g}..{arr.max():.3g}); apply softmax/sigmoid to logits first")
    sums = arr.sum(axis=1)
    if arr.size and np.abs(sums - 1).max() > 1e-3:
        row = int(np.argmax(np.abs(sums - 1)))
        raise DataError(f"argument {name!r}: row {row} sums to {sums[row]:.4f}, not 1")
    arr = np.clip(arr, 0.0, 1.0)
    # Float32 model outputs sum to 1 only within ~1e-7; renormalise so that downstream
    # checks (sklearn's log_loss) see exact probabilities.
    return arr / arr.sum(axis=1, keepdims=True)

