"""The data of a run: domains, the manifest (a benchmark exported to disk or the user's),
source / target splits and the datasets each method is handed (target labels removed)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from shiftkit.adapt.job.config import RunConfig
from shiftkit.datasets.errors import DataError
from shiftkit.datasets.files import atomic_write_text

BENCHMARK_DOMAINS = {
    "radiograph": ("city", "rural"),
    "dashcam": ("urban_day", "rural_day"),
    "digits": ("scanner", "camera"),
}
#: Columns that carry target labels: a classification label, and masks (dashcam masks are the
#: segmentation labels; radiograph lesion masks reveal the finding). The target training split
#: handed to methods has neither; only the explicit oracle and the scoring see them.
LABEL_BEARING_COLUMNS = ("label", "mask")


def domains_for(config: RunConfig) -> tuple[str, str]:
    if config.data.benchmark is not None:
        default_source, default_target = BENCHMARK_DOMAINS[config.data.benchmark]
    else:
        default_source = default_target = None  # validated: manifest configs name both
    return (config.data.source_domain or default_source, config.data.target_domain or default_target)


def prepare_manifest(config: RunConfig, run_dir: Path) -> Path:
    """Return the manifest to read; for a benchmark, export it to disk first (once)."""
    if config.data.manifest is not None:
        return Path(config.data.manifest)
    import importlib

    generator = importlib.import_module(f"shiftkit.datasets.synth.{config.data.benchmark}")
    source, target = domains_for(config)
    data_dir = run_dir / "data"
    manifest = data_dir / "manifest.csv"
    stamp = data_dir / "export.json"
    wanted = {
        "benchmark": config.data.benchmark,
        "domains": [source, target],
        "n_per_domain": config.data.n_per_domain,
        "size": config.data.image_size,
        "seed": config.data.seed,
    }
    if manifest.exists() and stamp.exists() and json.loads(stamp.read_text()) == wanted:
        return manifest
    size: Any = config.data.image_size
    if config.data.benchmark == "dashcam":
        size = (config.data.image_size, 2 * config.data.image_size)
    manifest = generator.export(
        data_dir, [source, target], config.data.n_per_domain, seed=config.data.seed, size=size,
        progress=config.progress,
    )
    atomic_write_text(stamp, json.dumps(wanted))
    return Path(manifest)


@dataclass
class DomainSplits:
    """The five views of the data a run needs (DataFrames of the manifest)."""

    source_train: pd.DataFrame
    source_val: pd.DataFrame
    source_test: pd.DataFrame
    target_train: pd.DataFrame  # label and mask columns removed: methods never see target labels
    target_test: pd.DataFrame
    target_train_labelled: pd.DataFrame  # only for the explicit target oracle

    def counts(self) -> dict[str, int]:
        return {k: len(getattr(self, k)) for k in ("source_train", "source_val", "source_test",
                                                   "target_train", "target_test")}


def split_domains(frame: pd.DataFrame, source: str, target: str, seed: int) -> DomainSplits:
    """Cut the manifest into source train/val/test and target train/test."""
    problems = []
    for role, name in (("source", source), ("target", target)):
        if not (frame["domain"] == name).any():
            known = sorted(frame["domain"].astype(str).unique())
            problems.append(f"{role} domain {name!r} has no rows (domains present: {known})")
    if problems:
        raise DataError("; ".join(problems))

    def by_split(domain: str) -> dict[str, pd.DataFrame]:
        part = frame[frame["domain"] == domain]
        if "split" in part.columns and part["split"].notna().all():
            return {s: part[part["split"] == s] for s in ("train", "val", "test")}
        rng = np.random.default_rng(seed)
        order = rng.permutation(len(part))
        n_train, n_val = int(0.6 * len(part)), int(0.2 * len(part))
        return {
            "train": part.iloc[order[:n_train]],
            "val": part.iloc[order[n_train:n_train + n_val]],
            "test": part.iloc[order[n_train + n_val:]],
        }

    s, t = by_split(source), by_split(target)
    target_train = pd.concat([t["train"], t["val"]])
    for name, part in (("source train", s["train"]), ("source val", s["val"]),
                       ("source test", s["test"]), ("target test", t["test"])):
        if len(part) == 0:
            raise DataError(f"the {name} split is empty; add rows or a 'split' column")
    return DomainSplits(
        source_train=s["train"],
        source_val=s["val"],
        source_test=s["test"],
        target_train=target_train.drop(columns=list(LABEL_BEARING_COLUMNS), errors="ignore"),
        target_test=t["test"],
        target_train_labelled=target_train,
    )


def subsample(features: np.ndarray, limit: int, seed: int) -> np.ndarray:
    if len(features) <= limit:
        return features
    index = np.random.default_rng(seed).choice(len(features), size=limit, replace=False)
    return features[index]


def method_datasets(splits: DomainSplits, skip_bad: bool) -> dict[str, Any]:
    import warnings

    from shiftkit.datasets import ManifestDataset

    out: dict[str, Any] = {}
    for name in ("source_train", "source_val", "source_test", "target_train", "target_test",
                 "target_train_labelled"):
        with warnings.catch_warnings():  # skipped rows are counted in metrics.json instead
            warnings.simplefilter("ignore", UserWarning)
            out[name] = ManifestDataset(getattr(splits, name), skip_bad=skip_bad)
    return out


def skipped_rows(frame: pd.DataFrame, data: dict[str, Any]) -> list[dict[str, Any]]:
    """Rows `skip_bad` dropped: manifest row (1-based), split and reason; never the file path."""
    row_of = {path: i + 1 for i, path in enumerate(frame["image"].tolist())}
    if "mask" in frame.columns:
        row_of.update({m: i + 1 for i, m in enumerate(frame["mask"].tolist()) if isinstance(m, str) and m})
    out: dict[int, dict[str, Any]] = {}
    for name in ("source_train", "source_val", "source_test", "target_train", "target_test"):
        for bad in getattr(data[name], "bad", []):
            row = row_of.get(bad.path, -1)
            out.setdefault(row, {"row": row, "split": name, "reason": bad.reason})
    return [out[r] for r in sorted(out)]


def used_sizes(data: dict[str, Any]) -> dict[str, int]:
    return {k: len(data[k]) for k in ("source_train", "source_val", "source_test", "target_train", "target_test")}


def image_error_with_row(exc: Exception, frame: pd.DataFrame) -> DataError:
    """An unreadable file met during training, named by its manifest row, with the two remedies."""
    path = str(getattr(exc, "path", ""))
    rows = [i + 1 for i, p in enumerate(frame["image"].tolist()) if p == path]
    if not rows and "mask" in frame.columns:
        rows = [i + 1 for i, p in enumerate(frame["mask"].tolist()) if p == path]
    where = f"manifest row {rows[0]}" if rows else "a manifest row"
    return DataError(f"{where}: {exc}. Check every file before training with `shiftkit run --check-images` "
                     "(data.check_images: true), or skip unreadable rows with data.skip_bad: true")


def test_labels(dataset: Any, task: str) -> np.ndarray:
    if task == "classification":
        return np.asarray(dataset.labels)
    return np.stack([np.asarray(dataset[i]["mask"]) for i in range(len(dataset))])

