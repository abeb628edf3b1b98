"""Manifests: one table row per image, with paths relative to the manifest's folder.

Columns: ``image`` (path, required), ``domain`` (required), optional ``label`` (integer class;
empty = unlabelled, read as -1), optional ``mask`` (path to a label map), optional ``split``
(train / val / test), and any number of attribute columns (sex, age, site, weather...) kept as
they are so audits can group by them.

`load_manifest` checks everything before returning and raises one `ManifestError` listing every
problem with its row number (1-based, counting data rows; CSV line = row + 1).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from .errors import DataError, ManifestError

__all__ = ["load_manifest", "validate_frame", "CORE_COLUMNS", "SPLIT_VALUES", "attribute_columns"]

CORE_COLUMNS: tuple[str, ...] = ("image", "label", "mask", "domain", "split")
SPLIT_VALUES: tuple[str, ...] = ("train", "val", "test")


# Class indices must fit int64 (and no real label set comes near this).
_MAX_LABEL = 2**31 - 1


def attribute_columns(frame: pd.DataFrame) -> list[str]:
    """The columns of ``frame`` that are not core manifest columns (image, label, mask, domain, split)."""
    return [c for c in frame.columns if c not in CORE_COLUMNS]


def _read_table(path: Path) -> pd.DataFrame:
    suffix = path.suffix.lower()
    try:
        if suffix == ".parquet":
            return pd.read_parquet(path)
        if suffix in (".csv", ".txt", ""):
            # keep_default_na=False + explicit na_values: a site called "NA" must survive as text
            return pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""])
        if suffix == ".tsv":
            return pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False, na_values=[""])
    except FileNotFoundError:
        raise ManifestError(str(path), ["manifest file not found"]) from None
    except ImportError as exc:
        raise ManifestError(str(path), [f"cannot read parquet: {exc} (install shiftkit[parquet])"]) from None
    except Exception as exc:
        raise ManifestError(str(path), [f"unreadable table ({type(exc).__name__}: {exc})"]) from None
    raise ManifestError(str(path), [f"unsupported manifest type {suffix!r}; use .csv, .tsv or .parquet"])


def _inside(path: Path, root: Path) -> bool:
    try:
        path.relative_to(root)
        return True
    except ValueError:
        return False


def _resolve(value: object, root: Path) -> Path | str:
    """The absolute, symlink-free path; or, for a value no OS call can take, why not (a str)."""
    p = Path(str(value))
    try:  # NUL bytes raise ValueError, over-long names OSError, symlink loops RuntimeError
        return (p if p.is_absolute() else root / p).resolve()
    except (OSError, ValueError, RuntimeError) as exc:
        return f"{type(exc).__name__}: {exc}"


def _is_file(p: Path) -> bool:
    try:
        return p.is_file()
    except (OSError, ValueError):  # e.g. ENAMETOOLONG is not swallowed by Path.is_file on 3.11
        return False


def _is_blank(value: object) -> bool:
    return value is None or (isinstance(value, float) and np.isnan(value)) or str(value).strip() == ""


def _coerce_attribute(col: pd.Series) -> pd.Series:
    """Numbers stay numbers: a column whose non-blank values all parse as numbers becomes numeric."""
    if not (col.dtype == object or pd.api.types.is_string_dtype(col.dtype)):
        return col
    nonblank = col.dropna()
    if nonblank.empty:
        return col
    num = pd.to_numeric(nonblank, errors="coerce")
    if num.isna().any():
        return col
    out = pd.to_numeric(col, errors="coerce")
    if not out.isna().any() and np.all(out == np.round(out)):
        return out.astype(np.int64)
    return out.astype(np.float64)


def _row_of(problem: str) -> int:
    """Row number of a "row N: ..." problem, for reporting in row order (stable sort)."""
    head = problem.split(":", 1)[0]
    return int(head[4:]) if head.startswith("row ") and head[4:].isdigit() else 0


def _deep_check(images: list[str | None], masks: list[str | None] | None) -> list[str]:
    """Decode every image and mask once; one problem per row that fails, naming row and file."""
    from .errors import ImageReadError
    from .io import read_image, read_mask

    problems = []
    for i, img in enumerate(images, start=1):
        if img is None:
            continue
        mask = masks[i - 1] if masks is not None else None
        try:
            arr = read_image(img)
            if mask is not None:
                m = read_mask(mask)
                if m.shape != arr.shape[1:]:
                    problems.append(f"row {i}: mask {mask} is {m.shape[0]}x{m.shape[1]}, its image "
                                    f"{arr.shape[1]}x{arr.shape[2]}")
        except ImageReadError as exc:
            problems.append(f"row {i}: {exc.path}: {exc.reason}")
    return problems


def validate_frame(
    frame: pd.DataFrame,
    root: str | os.PathLike[str],
    *,
    source: str = "manifest",
    check_files: bool = True,
    allow_outside_root: bool = False,
    num_classes: int | None = None,
    check_images: bool = False,
) -> pd.DataFrame:
    """Validate a raw manifest table and return it normalised (see `load_manifest`).

    ``root`` is the folder relative paths are resolved against.
    """
    problems: list[str] = []
    root_p = Path(root).resolve()
    frame = frame.copy()
    frame.columns = [str(c).strip() for c in frame.columns]
    for col in ("image", "domain"):
        if col not in frame.columns:
            problems.append(f"missing required column {col!r} (columns: {', '.join(map(str, frame.columns))})")
    dup_cols = frame.columns[frame.columns.duplicated()].tolist()
    if dup_cols:
        problems.append(f"duplicate column name(s): {', '.join(dup_cols)}")
    if problems:
        raise ManifestError(source, problems)
    if len(frame) == 0:
        raise ManifestError(source, ["no rows"])

    images: list[str | None] = []
    for i, value in enumerate(frame["image"].tolist(), start=1):
        if _is_blank(value):
            problems.append(f"row {i}: empty image path")
            images.append(None)
            continue
        p = _resolve(value, root_p)
        if isinstance(p, str):
            problems.append(f"row {i}: image path {value!r} is not a usable path ({p})")
            images.append(None)
            continue
        if not allow_outside_root and not _inside(p, root_p):
            problems.append(f"row {i}: image path {value!r} escapes the manifest folder {root_p} "
                            "(pass allow_outside_root=True to allow it)")
        elif check_files and not _is_file(p):
            problems.append(f"row {i}: image file not found: {p}")
        images.append(str(p))

    masks: list[str | None] | None = None
    if "mask" in frame.columns:
        masks = []
        for i, value in enumerate(frame["mask"].tolist(), start=1):
            if _is_blank(value):
                masks.append(None)
                continue
            p = _resolve(value, root_p)
            if isinstance(p, str):
                problems.append(f"row {i}: mask path {value!r} is not a usable path ({p})")
                masks.append(None)
                continue
            if not allow_outside_root and not _inside(p, root_p):
                problems.append(f"row {i}: mask path {value!r} escapes the manifest folder {root_p} "
                                "(pass allow_outside_root=True to allow it)")
            elif check_files and not _is_file(p):
                problems.append(f"row {i}: mask file not found: {p}")
            masks.append(str(p))

    labels: list[int] | None = None
    if "label" in frame.columns:
        labels = []
        for i, value in enumerate(frame["label"].tolist(), start=1):
            if _is_blank(value):
                labels.append(-1)
                continue
            try:
                f = float(str(value).strip())
            except ValueError:
                problems.append(f"row {i}: label {value!r} is not a number")
                labels.append(-1)
                continue
            if not np.isfinite(f) or f != round(f):
                problems.append(f"row {i}: label {value!r} is not an integer class")
            elif f < -1 or f > _MAX_LABEL or (num_classes is not None and f >= num_classes):
                bound = f"0..{num_classes - 1}" if num_classes is not None else f"0..{_MAX_LABEL}"
                problems.append(f"row {i}: label {value!r} out of range (expected {bound}, or -1/empty for unlabelled)")
                labels.append(-1)
                continue
            labels.append(int(f) if np.isfinite(f) and f == round(f) else -1)

    domains: list[str] = []
    for i, value in enumerate(frame["domain"].tolist(), start=1):
        if _is_blank(value):
            problems.append(f"row {i}: empty domain")
            domains.append("")
        else:
            domains.append(str(value).strip())

    splits: list[object] | None = None
    if "split" in frame.columns:
        splits = []
        for i, value in enumerate(frame["split"].tolist(), start=1):
            if _is_blank(value):
                splits.append(None)
                continue
            v = str(value).strip().lower()
            if v not in SPLIT_VALUES:
                problems.append(f"row {i}: unknown split {value!r} (expected one of {', '.join(SPLIT_VALUES)})")
            splits.append(v)

    if check_images and check_files and not problems:
        problems += _deep_check(images, masks)

    seen: dict[tuple[str | None, str | None], int] = {}
    for i, img in enumerate(images, start=1):
        if img is None:
            continue
        key = (img, masks[i - 1] if masks is not None else None)
        if key in seen:
            problems.append(f"row {i}: duplicate of row {seen[key]} (image {img})")
        else:
            seen[key] = i

    if problems:
        raise ManifestError(source, sorted(problems, key=_row_of))

    out = pd.DataFrame({"image": images})
    if labels is not None:
        out["label"] = np.asarray(labels, dtype=np.int64)
    # object dtype keeps None as None: pandas >= 3 would turn it into NaN in a string column.
    if masks is not None:
        out["mask"] = pd.Series(masks, dtype=object)
    out["domain"] = domains
    if splits is not None:
        out["split"] = pd.Series(splits, dtype=object)
    for col in attribute_columns(frame):
        out[col] = _coerce_attribute(frame[col].reset_index(drop=True))
    return out


def load_manifest(
    path: str | os.PathLike[str],
    *,
    root: str | os.PathLike[str] | None = None,
    check_files: bool = True,
    allow_outside_root: bool = False,
    num_classes: int | None = None,
    check_images: bool = False,
) -> pd.DataFrame:
    """Read and validate a manifest (CSV, TSV or Parquet).

    Args:
        path: the manifest file.
        root: folder that relative paths are resolved against (default: the manifest's folder).
        check_files: check that every image and mask file exists.
        allow_outside_root: accept paths (absolute or with ``..``) that leave ``root``; off by
            default so a manifest cannot make a reader open arbitrary files.
        num_classes: if given, labels must lie in 0..num_classes-1 (or be -1 / empty).
        check_images: also decode every image and mask (and compare their sizes), so a corrupt
            or truncated file is reported with its row now rather than mid-training. Costs one
            read of every file.

    Returns:
        DataFrame with ``image`` (absolute path str), ``label`` (int64, -1 = unlabelled) if
        present, ``mask`` (absolute path str or None) if present, ``domain`` (str), ``split``
        (train/val/test or None) if present, then the attribute columns (numeric when every
        value is a number, else text).

    Raises:
        ManifestError: with ``.problems`` listing every problem found (row numbers 1-based).
    """
    if not isinstance(path, (str, os.PathLike)):
        raise DataError(f"manifest path must be a str or path, got {type(path).__name__}")
    p = Path(path)
    frame = _read_table(p)
    base = Path(root) if root is not None else p.resolve().parent
    return validate_frame(frame, base, source=str(p), check_files=check_files,
                          allow_outside_root=allow_outside_root, num_classes=num_classes,
                          check_images=check_images)
