"""Whole evaluation jobs for people who do not train: a bias audit of a predictions table and
a domain-gap test between two feature sets or two manifests.

`shiftkit audit` and `shiftkit gap` are thin wrappers over :func:`audit_predictions` and
:func:`gap_between`; a script or notebook calls the same functions::

    from shiftkit.evaluation.jobs import audit_predictions

    job = audit_predictions("predictions.csv", sensitive=["sex", "age_band"])
    print(job.summary())              # nothing written
    job = audit_predictions("predictions.csv", sensitive="sex", out="audit")  # metrics.json + report.html

Column names: the label and score columns are found from the conventions people already
write -- ``label`` / ``y_true`` / ``target`` and ``score`` / ``y_score`` / ``y_prob`` /
``proba`` -- unless given. When none or several match, the error lists what the table has.

No per-patient value is ever printed or written: reports hold group-level numbers only.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from shiftkit.datasets.errors import DataError

__all__ = [
    "DOMAIN_COLUMNS",
    "LABEL_COLUMNS",
    "SCORE_COLUMNS",
    "JobResult",
    "audit_predictions",
    "detect_column",
    "gap_between",
]

#: Label column names tried in order (scikit-learn / fairlearn write ``y_true``).
LABEL_COLUMNS = ("label", "y_true", "target")
#: Score column names tried in order (P(label = 1)).
SCORE_COLUMNS = ("score", "y_score", "y_prob", "proba")
#: Domain column names of a features table holding both domains (``gap`` with ``--source-domain``).
DOMAIN_COLUMNS = ("domain", "site")
_TABLE_SUFFIXES = (".csv", ".tsv", ".parquet")
_MANIFEST_SUFFIXES = (".csv", ".tsv", ".parquet")

PathLike = str | os.PathLike[str]


@dataclass(frozen=True)
class JobResult:
    """What a job computed and, when asked to write, where.

    metrics: the JSON-ready dict (the content of ``metrics.json``).
    out_dir: the folder written to, or None when nothing was written.
    """

    metrics: dict[str, Any]
    out_dir: Path | None = None

    @property
    def report_path(self) -> Path | None:
        return None if self.out_dir is None else self.out_dir / "report.html"

    @property
    def metrics_path(self) -> Path | None:
        return None if self.out_dir is None else self.out_dir / "metrics.json"

    def summary(self) -> str:
        """Plain-text summary for a terminal (the CLI prints this)."""
        from .report import terminal_summary

        return terminal_summary(self.metrics)


def detect_column(columns: Sequence[str], candidates: Sequence[str], what: str, option: str,
                  given: str | None = None, *, source: str = "the table") -> str:
    """The column that holds ``what``: ``given`` when set, else the one conventional name present.

    Raises:
        DataError: ``given`` is missing; no conventional name is present; or several are
            (ambiguous). The message lists the table's columns and the option to pass.
    """
    cols = [str(c) for c in columns]
    if given:
        if given not in cols:
            raise DataError(f"{source}: {what} column {given!r} not found; columns are {cols}")
        return given
    found = [c for c in candidates if c in cols]
    if len(found) == 1:
        return found[0]
    if not found:
        raise DataError(f"{source}: no {what} column: looked for {list(candidates)}, found columns {cols}; "
                        f"name it with {option} COLUMN")
    raise DataError(f"{source}: ambiguous {what} column: {found} are all present; choose one with {option} COLUMN")


def _table(predictions: PathLike | pd.DataFrame) -> tuple[pd.DataFrame, str]:
    from .loaders import load_table

    if isinstance(predictions, pd.DataFrame):
        return predictions, "the predictions table"
    path = Path(predictions)
    return load_table(path), str(path)


def _write(out: PathLike | None, metrics: dict[str, Any], figures: dict | None, title: str) -> Path | None:
    if out is None:
        return None
    from .report import write_report

    _, html = write_report(Path(out), metrics, figures=figures, title=title)
    return html.parent


def audit_predictions(
    predictions: PathLike | pd.DataFrame,
    sensitive: Sequence[str] | str,
    *,
    out: PathLike | None = None,
    control: Sequence[str] | None = None,
    label_col: str | None = None,
    score_col: str | None = None,
    compare_col: str | None = None,
    threshold: float = 0.5,
    n_boot: int = 200,
    min_group_size: int = 30,
    seed: int = 0,
) -> JobResult:
    """Bias audit of saved predictions (one row per image): per-group and intersectional
    metrics with bootstrap CIs (:func:`shiftkit.evaluation.bias.audit`).

    Args:
        predictions: CSV / TSV / Parquet path, or a DataFrame.
        sensitive: attribute columns (list or comma-separated); ``age_band`` is derived from
            an ``age`` column.
        out: folder for ``metrics.json`` and ``report.html``; None writes nothing.
        control: columns within whose levels disparities are taken (e.g. site).
        label_col, score_col: None detects them (``LABEL_COLUMNS``, ``SCORE_COLUMNS``).
        compare_col: a second model's score column, audited side by side.
        threshold, n_boot, min_group_size, seed: as :func:`~shiftkit.evaluation.bias.audit`.

    Returns:
        :class:`JobResult`; ``metrics["bias"]`` is ``BiasSection.to_dict()``: ``{"audits": {score column:
        audit}, "comparison": ...}`` (the comparison with ``compare_col``).
    """
    from . import bias

    if isinstance(sensitive, str):
        sensitive = [c.strip() for c in sensitive.split(",") if c.strip()]
    frame, source = _table(predictions)
    label_col = detect_column(frame.columns, LABEL_COLUMNS, "label", "--label-col", label_col, source=source)
    score_col = detect_column(frame.columns, SCORE_COLUMNS, "score", "--score-col", score_col, source=source)
    if compare_col and compare_col not in frame.columns:
        raise DataError(f"{source}: compare column {compare_col!r} not found; columns are {list(frame.columns)}")
    control = list(control or [])
    kw = dict(label_col=label_col, threshold=threshold, control=control, n_boot=n_boot,
              min_group_size=min_group_size, seed=seed)
    audits = {score_col: bias.audit(frame, list(sensitive), score_col=score_col, **kw)}
    if compare_col:
        audits[compare_col] = bias.audit(frame, list(sensitive), score_col=compare_col, **kw)
    section = bias.BiasSection.of(audits)
    warnings = list(audits[score_col].warnings)
    if compare_col:
        warnings += [f"[{compare_col}] {w}" for w in audits[compare_col].warnings]
        warnings += [f"disparity widened beyond its CI with {compare_col}: {w}" for w in section.widened_beyond_ci]
    metrics = {
        "run": {"command": "audit", "predictions": Path(source).name if source != "the predictions table" else source,
                "rows": int(len(frame)), "sensitive": ",".join(sensitive), "control": ",".join(control),
                "label_col": label_col, "score_col": score_col, "compare_col": compare_col or "",
                "threshold": threshold, "n_boot": n_boot, "min_group_size": min_group_size},
        "bias": section.to_dict(),
        "warnings": warnings,
    }
    return JobResult(metrics, _write(out, metrics, None, "shiftkit bias audit"))


def _is_manifest(path: Path) -> bool:
    if path.suffix.lower() not in _MANIFEST_SUFFIXES:
        return False
    from .loaders import load_table

    return "image" in load_table(path).columns


def manifest_features(path: PathLike, domain: str | None = None, *, max_images: int = 2000,
                      seed: int = 0, progress: bool = True) -> np.ndarray:
    """Image-statistics features ``(N, len(IMAGE_STAT_NAMES))`` of (a sample of) a manifest's images."""
    from shiftkit.datasets import load_manifest, read_image
    from shiftkit.datasets.progress import progress_bar

    from .loaders import image_statistics_features

    path = Path(path)
    frame = load_manifest(path)
    if domain is not None:
        domains = sorted(set(frame["domain"].astype(str)))
        if domain not in domains:
            raise DataError(f"{path}: no rows with domain {domain!r}; domains are {domains}")
        frame = frame[frame["domain"].astype(str) == domain]
    if len(frame) > max_images:
        frame = frame.sample(n=max_images, random_state=seed)
    feats = [image_statistics_features(read_image(p))
             for p in progress_bar(frame["image"], desc=f"image statistics {path.name}", enabled=progress)]
    return np.stack(feats)


def _table_features(path: Path, domain: str) -> np.ndarray:
    """Numeric columns of the rows of one domain of a features table (domain column detected)."""
    from .loaders import load_table

    if path.suffix.lower() not in _TABLE_SUFFIXES:
        raise DataError(f"{path}: --source-domain/--target-domain need a manifest or a features table "
                        f"({', '.join(_TABLE_SUFFIXES)}) with a domain column")
    frame = load_table(path)
    col = detect_column(frame.columns, DOMAIN_COLUMNS, "domain", "a domain column", source=str(path))
    values = frame[col].astype(str)
    if domain not in set(values):
        raise DataError(f"{path}: no rows with {col} {domain!r}; {col} values are {sorted(set(values))}")
    num = frame.loc[values == domain].drop(columns=[col]).select_dtypes(include=[np.number, "bool"])
    if num.shape[1] == 0:
        raise DataError(f"{path}: no numeric feature columns; columns are {list(frame.columns)}")
    arr = num.to_numpy(dtype=float)
    if not np.isfinite(arr).all():
        raise DataError(f"{path}: non-finite feature values in {col} {domain!r}")
    return arr


def gap_between(
    source: PathLike,
    target: PathLike,
    *,
    out: PathLike | None = None,
    source_domain: str | None = None,
    target_domain: str | None = None,
    key: str | None = None,
    n_permutations: int = 1000,
    max_images: int = 2000,
    seed: int = 0,
    progress: bool = True,
) -> JobResult:
    """Domain gap between two feature sets: MMD^2 test, proxy A-distance, Frechet, CORAL
    (:func:`shiftkit.evaluation.gap.gap_summary`).

    Args:
        source, target: feature files (``.npy/.npz/.csv/.parquet/.safetensors``, one row per
            image) or manifests (a table with an ``image`` column: simple image statistics are
            computed). One manifest, or one features table with a ``domain`` (or ``site``)
            column, can serve as both, split by ``source_domain`` / ``target_domain``.
        out: folder for ``metrics.json`` and ``report.html`` (with a PCA plot); None writes nothing.
        key: tensor name inside ``.npz`` / ``.safetensors`` files.
        n_permutations, max_images, seed: permutation-test size, images sampled per manifest.

    Returns:
        :class:`JobResult`; ``metrics["gap"]["source_vs_target"]`` holds the measures.
    """
    from . import gap, loaders

    kinds, arrays = [], []
    for path, domain in ((Path(source), source_domain), (Path(target), target_domain)):
        if _is_manifest(path):
            arrays.append(manifest_features(path, domain, max_images=max_images, seed=seed, progress=progress))
            kinds.append("image statistics (manifest)")
        elif domain is not None:
            arrays.append(_table_features(path, domain))
            kinds.append("features file")
        else:
            arrays.append(loaders.load_features(path, key=key))
            kinds.append("features file")
    xs, xt = arrays
    if xs.shape[1] != xt.shape[1]:
        raise DataError(f"{source} has {xs.shape[1]} feature columns but {target} has {xt.shape[1]}")
    summary = gap.gap_summary(xs, xt, n_permutations=n_permutations, seed=seed)
    warnings = []
    if "image statistics (manifest)" in kinds:
        warnings.append("features are simple image statistics (intensity, percentiles, sharpness, noise) computed "
                        "from the manifests' images: they see acquisition shift, not what a model sees; export "
                        "model features to .npy/.safetensors for that")
    if summary["mmd_p_value"] <= 0.05 and summary["coral"] < 1e-3 * max(summary["frechet"], 1e-12):
        warnings.append("the domains differ mainly in their means: covariance-only measures (CORAL) miss this")
    metrics = {
        "run": {"command": "gap", "source": Path(source).name, "target": Path(target).name,
                "source_domain": source_domain or "", "target_domain": target_domain or "",
                "features": " / ".join(dict.fromkeys(kinds)), "n_permutations": n_permutations, "seed": seed},
        "gap": {"source_vs_target": summary},
        "warnings": warnings,
    }
    figures = None
    if out is not None:
        from . import plots

        figures = {"Features coloured by domain (PCA)": plots.embedding_figure({"source vs target": (xs, xt)}, seed=seed)}
    return JobResult(metrics, _write(out, metrics, figures, "shiftkit domain gap"))
