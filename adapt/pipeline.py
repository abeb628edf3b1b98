"""The end-to-end job behind `shiftkit demo` and `shiftkit run`.

data -> source-only model -> adaptation methods -> evaluation on the target test split ->
`runs/<name>/metrics.json`, `report.html` and a terminal summary.

Every method comes from the registry (`shiftkit.adapt.methods.get_method`), builds itself
from the run config (`from_config`) and is fitted on what its `requires` declares.

Target labels are hidden from every method (the target training split is handed over with
its `label` and `mask` columns removed); they are used only to score the finished models, and only a
method that declares a labelled target (`target_oracle`, which says so in its name and in the
report) trains on them.
"""

from __future__ import annotations

import json
import logging
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from shiftkit.adapt.build import BuildContext
from shiftkit.adapt.config import AUTO_METHOD, RunConfig
from shiftkit.adapt.methods.registry import BASELINE
from shiftkit.datasets.errors import DataError, ImageReadError
from shiftkit.datasets.files import atomic_write_text
from shiftkit.evaluation.results import MethodResult, RunResult

__all__ = ["BuildContext", "RunResult", "build_method", "check_run", "evaluate_method", "fit_method", "run",
           "save_models"]

log = logging.getLogger("shiftkit")

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


def check_run(config: RunConfig) -> None:
    """Everything about a run that can be checked before any export or training, at once.

    The config's own schema (keys, types, backbone names for the task) was checked when it was
    parsed; this adds what needs the file system or the benchmark: the manifest and checkpoint
    exist, the benchmark knows the source and target domains, and they differ.

    Raises:
        ConfigError: listing every problem with its key.
    """
    import importlib

    from shiftkit.datasets.errors import ConfigError

    problems = []
    if config.data.manifest is not None and not Path(config.data.manifest).is_file():
        problems.append(f"data.manifest: file not found: {config.data.manifest}")
    if config.model.checkpoint is not None and not Path(config.model.checkpoint).is_file():
        problems.append(f"model.checkpoint: file not found: {config.model.checkpoint}")
    problems += _backbone_problems(config)
    source, target = domains_for(config)
    if config.data.benchmark is not None:
        known = importlib.import_module(f"shiftkit.datasets.synth.{config.data.benchmark}").DOMAINS
        for key, name in (("data.source_domain", source), ("data.target_domain", target)):
            if name not in known:
                problems.append(f"{key}: {name!r} is not a {config.data.benchmark} domain; choose from {list(known)}")
    if source == target:
        problems.append(f"data.source_domain and data.target_domain are both {source!r}")
    if problems:
        raise ConfigError(config.name, problems)


def _backbone_problems(config: RunConfig) -> list[str]:
    """Build the backbone once (3 channels, 2 classes) so that an unknown library name, a wrong
    option, a missing weights file or one whose keys do not fit fails before any training."""
    from shiftkit.adapt.backbones_ecosystem import is_ecosystem_name
    from shiftkit.datasets.errors import ShiftkitError

    weights, name = config.model.weights, config.model.backbone
    if weights is not None and not Path(weights).is_file():
        return [f"model.weights: file not found: {weights}"]
    if not is_ecosystem_name(name) and weights is None and not config.model.options:
        return []
    from shiftkit.adapt.backbones import build_classifier, build_segmenter

    build = build_classifier if config.task == "classification" else build_segmenter
    try:
        build(name, 3, 2, weights=weights, **config.model.options)
    except ShiftkitError as exc:
        return [f"model.{'weights' if weights is not None else 'backbone'}: {exc}"]
    except (RuntimeError, TypeError, ValueError, KeyError) as exc:  # the library's own refusal
        return [f"model.backbone: {name!r} with options {config.model.options}: {type(exc).__name__}: "
                f"{str(exc).splitlines()[0][:300] if str(exc) else ''}"]
    return []


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


def machine_summary() -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def _subsample(features: np.ndarray, limit: int, seed: int) -> np.ndarray:
    if len(features) <= limit:
        return features
    index = np.random.default_rng(seed).choice(len(features), size=limit, replace=False)
    return features[index]


def _datasets(splits: DomainSplits, skip_bad: bool) -> dict[str, Any]:
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


def _used_sizes(data: dict[str, Any]) -> dict[str, int]:
    return {k: len(data[k]) for k in ("source_train", "source_val", "source_test", "target_train", "target_test")}


def _image_error_with_row(exc: Exception, frame: pd.DataFrame) -> DataError:
    """An unreadable file met during training, named by its manifest row, with the two remedies."""
    path = str(getattr(exc, "path", ""))
    rows = [i + 1 for i, p in enumerate(frame["image"].tolist()) if p == path]
    if not rows and "mask" in frame.columns:
        rows = [i + 1 for i, p in enumerate(frame["mask"].tolist()) if p == path]
    where = f"manifest row {rows[0]}" if rows else "a manifest row"
    return DataError(f"{where}: {exc}. Check every file before training with `shiftkit run --check-images` "
                     "(data.check_images: true), or skip unreadable rows with data.skip_bad: true")


def target_monitor(dataset: Any, labels: np.ndarray, task: str, batch_size: int = 128) -> Any:
    """Per-epoch target-test scores for the learning curves (`target_acc`, `target_auroc` /
    `target_miou`). They are displayed, never used to choose an epoch: the trainer refuses a
    `target_*` early-stopping key unless the run is an explicit oracle."""
    from torch.utils.data import DataLoader

    from shiftkit.adapt.inference import predict_loader
    from shiftkit.evaluation import metrics

    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False)

    def callback(epoch: int, model: torch.nn.Module) -> dict[str, float]:
        device = next(model.parameters()).device
        proba = predict_loader(model, loader, device)["proba"]
        if task == "classification":
            m = metrics.classification_metrics(labels, proba)
            return {"target_acc": m["accuracy"], "target_auroc": m["auroc"]}
        m = metrics.segmentation_metrics(labels, proba.argmax(axis=1), proba.shape[1])
        return {"target_acc": m["pixel_accuracy"], "target_miou": m["miou"]}

    return callback


def bias_section(frames: dict[str, pd.DataFrame], scores: dict[str, np.ndarray], seed: int) -> Any:
    """Per-group audit of each method on the target test split (sex, age band), side by side:
    a :class:`shiftkit.evaluation.bias.BiasSection`, or None without attributes or labels."""
    from shiftkit.evaluation import bias

    frame = frames["target_test"]
    sensitive = [c for c in ("sex", "age") if c in frame.columns]
    if not sensitive or "label" not in frame.columns:
        return None
    sensitive = ["age_band" if c == "age" else c for c in sensitive]
    audits = {}
    for name, score in scores.items():
        table = frame.drop(columns=["image", "mask"], errors="ignore").copy()
        table["score"] = score
        audits[name] = bias.audit(table, sensitive, n_boot=100, seed=seed)
    return bias.BiasSection.of(audits) if audits else None


def _test_labels(dataset: Any, task: str) -> np.ndarray:
    if task == "classification":
        return np.asarray(dataset.labels)
    return np.stack([np.asarray(dataset[i]["mask"]) for i in range(len(dataset))])


def initial_model(config: RunConfig, in_channels: int, num_classes: int) -> Any:
    """The backbone name, or a module holding the user's source checkpoint or pretrained weights."""
    from shiftkit.adapt.backbones import build_classifier, build_segmenter

    build = build_classifier if config.task == "classification" else build_segmenter
    if config.model.weights is not None or config.model.options:
        torch.manual_seed(config.train.seed)  # the new head's init follows the model seed
        return build(config.model.backbone, in_channels, num_classes, weights=config.model.weights,
                     **config.model.options)
    if config.model.checkpoint is None:
        return config.model.backbone
    torch.manual_seed(config.train.seed)
    model = build(config.model.backbone, in_channels, num_classes)
    from shiftkit.adapt.checkpoint import load_into

    missing, unexpected = load_into(model, config.model.checkpoint, strict=False)  # never runs code
    if unexpected or len(missing) == len(list(model.state_dict())):
        raise DataError(f"{config.model.checkpoint}: weights do not fit backbone {config.model.backbone!r} "
                        f"(missing {len(missing)}, unexpected {len(unexpected)} tensors)")
    return model


def build_method(name: str, config: RunConfig, num_classes: int, run_dir: Path,
                 in_channels: int | None = None, fit_method: Callable[[str], Any] | None = None) -> Any:
    """Instantiate the registered method ``name`` from the run config (its ``from_config``).

    ``fit_method(name)`` returns another fitted method when this one starts from it (an
    adapting method's ``start: source_only`` adapts the fitted source-only model).
    """
    context = BuildContext(name=name, config=config, num_classes=num_classes, in_channels=in_channels or 1,
                           run_dir=run_dir, fit_method=fit_method)
    return context.build(name)


def fit_method(method: Any, data: dict[str, Any], callback: Any = None) -> Any:
    """Fit ``method`` on the run's data as its ``requires`` declares.

    Target labels reach only methods that declare a labelled target (the oracle); every other
    method gets the target training split without its label column (and ``fit`` hides any
    ``label``/``mask`` key left).
    """
    req = method.requires
    source = data["source_train"] if req.source != "none" else None
    # Unlabelled target images go to every method: a source adapter may read them, and
    # save_model stores their feature statistics for the shift score.
    target = data["target_train_labelled"] if req.target == "labelled" else data["target_train"]
    return method.fit(source, target, val=data["source_val"], callback=callback)


def run(config: RunConfig) -> RunResult:
    """Run the whole job described by `config`; return the metrics and the run folder.

    Writes `run_dir/metrics.json` and `run_dir/report.html` (atomically), every method's
    fitted model under `run_dir/models/<name>/` (`shiftkit.adapt.load` reads it) and, for
    embedded benchmarks, the exported data under `run_dir/data/`. With a `tracking` section the
    run is logged to MLflow / TensorBoard (:mod:`shiftkit.adapt.tracking`).
    """
    import os

    from shiftkit.adapt import tracking

    started = time.perf_counter()
    check_run(config)  # before any export or training
    main = os.environ.get("RANK", "0") == "0"  # under torchrun only rank 0 logs
    with tracking.tracker(config.tracking if main else None, config.name) as tracker:
        if tracker is not None:
            tracker.log_params(config.model_dump(mode="json"))
        result = _run(config, started, tracker)
        if tracker is not None:
            tracker.log_metrics(result.metrics)
            for name in ("report.html", "metrics.json", "models"):
                tracker.log_artifact(result.run_dir / name)
    return result


def _run(config: RunConfig, started: float, tracker: Any = None) -> RunResult:
    from shiftkit.adapt import distributed
    from shiftkit.adapt.methods import method_title
    from shiftkit.datasets import load_manifest
    from shiftkit.evaluation import plots, report

    run_dir = config.run_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    # Under torchrun every rank runs this function; rank 0 alone writes data and the report.
    distributed.init_from_env()
    is_main = distributed.rank() == 0
    if is_main:
        prepare_manifest(config, run_dir)
    distributed.barrier()
    manifest_path = prepare_manifest(config, run_dir)  # now only checks the export stamp
    frame = load_manifest(manifest_path, allow_outside_root=config.data.allow_outside_root,
                          check_images=config.data.check_images)
    source, target = domains_for(config)
    splits = split_domains(frame, source, target, config.data.seed)
    data = _datasets(splits, config.data.skip_bad)
    try:
        for role in ("source_test", "target_test"):
            data[f"{role}_labels"] = _test_labels(data[role], config.task)
    except ImageReadError as exc:
        raise _image_error_with_row(exc, frame) from None
    if config.task == "classification":
        num_classes = int(max(2, frame["label"].max() + 1))
    else:
        num_classes = 9 if config.data.benchmark == "dashcam" else int(frame.attrs.get("num_classes", 2))
    class_names = segmentation_class_names(config, num_classes)

    results: dict[str, MethodResult] = {}
    histories: dict[str, list[dict[str, Any]]] = {}
    skipped = skipped_rows(frame, data)
    warnings: list[str] = []
    if skipped:
        rows = ", ".join(str(r["row"]) for r in skipped[:20]) + (" ..." if len(skipped) > 20 else "")
        warnings.append(f"data.skip_bad: {len(skipped)} unreadable manifest row(s) skipped (rows {rows}); "
                        "see run.skipped_rows")
    n_params: dict[str, int] = {}
    try:
        in_channels = int(data["source_train"][0]["image"].shape[0])
    except ImageReadError as exc:
        raise _image_error_with_row(exc, frame) from None

    fitted: dict[str, Any] = {}

    def fit_built(method: Any, name: str | None = None) -> Any:
        monitor = target_monitor(data["target_test"], data["target_test_labels"], config.task)
        if tracker is not None and name is not None:  # the epoch's target scores, logged as it ends
            monitor = tracker.epoch_callback(name, monitor)
        try:
            return fit_method(method, data, monitor)
        except ImageReadError as exc:  # a file that broke mid-run: name its manifest row
            raise _image_error_with_row(exc, frame) from None

    selection: dict[str, Any] | None = None

    def fit(name: str) -> Any:
        nonlocal selection
        if name not in fitted and name == AUTO_METHOD:  # label-free choice among selection.candidates
            from shiftkit.adapt.auto_select import fit_auto

            context = BuildContext(name=name, config=config, num_classes=num_classes, in_channels=in_channels,
                                   run_dir=run_dir, fit_method=fit)
            fitted[name], selection = fit_auto(config, data, fit, context, fit_built, num_classes=num_classes,
                                               run_dir=run_dir)
        elif name not in fitted:
            log.info("fitting %s", name)
            fitted[name] = fit_built(build_method(name, config, num_classes, run_dir, in_channels, fit_method=fit), name)
            if tracker is not None:
                tracker.log_history(name, fitted[name].history_)
        return fitted[name]

    for name in config.methods:
        method = fit(name)
        results[name] = evaluate_method(method, data, config, name=name, class_names=class_names)
        n_params[name] = sum(p.numel() for p in method.model_.parameters())
        histories[name] = method.history_
        if tracker is not None:  # a no-op for what was logged when the method was fitted
            tracker.log_history(name, method.history_)
        warnings += [f"{name}: {w}" for w in getattr(method, "warnings_", [])]

    run_info: dict[str, Any] = {
        "run_name": config.name,
        "task": config.task,
        "benchmark": config.data.benchmark,
        "source_domain": source,
        "target_domain": target,
        "backbone": config.model.backbone,
        "seed": config.train.seed,
        "data_seed": config.data.seed,
        "epochs": config.train.epochs,
        "split_sizes": _used_sizes(data),  # after skip_bad dropped unreadable rows
        "skipped_rows": skipped,
        "target_labels_used_for": "evaluation only"
        + "".join(f"; the {n} method trains on them" for n in config.methods
                  if fitted[n].requires.target == "labelled"),
        "machine": machine_summary(),
    }
    gaps = None
    if BASELINE in results:
        gaps = {"before (source only)": results[BASELINE].gap}
        for name in config.methods:
            if name != BASELINE and fitted[name].requires.target != "labelled":
                gaps[f"after ({name})"] = results[name].gap
    from shiftkit.evaluation.overfitting import analyse_history

    # Segmentation learns from every labelled pixel, not from an image count.
    n_samples, unit = ((labelled_pixels(splits.source_train), "labelled pixels") if config.task == "segmentation"
                       else (len(data["source_train"]), "labelled images"))
    overfitting = {name: analyse_history(h, n_params=n_params[name], n_samples=max(n_samples, 1), sample_unit=unit)
                   for name, h in histories.items() if h}
    bias_metrics = None
    if config.task == "classification" and is_main:
        binary = {k: r.target_proba[:, 1] for k, r in results.items()
                  if r.target_proba.ndim == 2 and r.target_proba.shape[1] == 2}
        bias_metrics = bias_section({"target_test": splits.target_test}, binary, config.train.seed) or None
    figures = {}
    if config.task == "segmentation" and is_main:
        if class_names is not None:
            run_info["class_names"] = class_names
        if config.evaluation.overlays if config.evaluation.overlays is not None else config.data.benchmark == "dashcam":
            figures.update(segmentation_overlays(fitted, data, config, num_classes, class_names))
    stages = {method_title(k): r.features for k, r in results.items()}
    if stages:
        figures["Features coloured by domain (PCA), per method"] = plots.embedding_figure(
            stages, seed=config.train.seed
        )
    run_info["wall_seconds"] = round(time.perf_counter() - started, 1)
    result = RunResult(run=run_info, methods=results, histories=histories, gap=gaps,
                       overfitting=overfitting or None, bias=bias_metrics, selection=selection, warnings=tuple(warnings), run_dir=run_dir)
    if is_main:
        save_models(fitted, config, run_dir, (source, target))
        report.write_report(run_dir, result, figures=figures, title=f"shiftkit: {config.name}")
    distributed.barrier()
    return RunResult.load(run_dir)  # the saved form, as a later reader of the run folder sees it


def segmentation_class_names(config: RunConfig, num_classes: int) -> list[str] | None:
    """Names of the mask classes: the dashcam benchmark's (road, sky, ...); None when unknown."""
    if config.task != "segmentation" or config.data.benchmark != "dashcam":
        return None
    from shiftkit.datasets.synth.dashcam import CLASSES

    return list(CLASSES) if len(CLASSES) == num_classes else None


def labelled_pixels(frame: pd.DataFrame) -> int:
    """Pixels with a class (mask >= 0) over the rows' masks: what a segmenter learns from."""
    from shiftkit.datasets import read_mask

    if "mask" not in frame.columns:
        return 0
    return int(sum(int((read_mask(m) >= 0).sum()) for m in frame["mask"].tolist() if isinstance(m, str) and m))


def segmentation_overlays(fitted: dict[str, Any], data: dict[str, Any], config: RunConfig, num_classes: int,
                          class_names: list[str] | None, n: int = 2) -> dict[str, Any]:
    """Prediction overlays on ``n`` source and ``n`` target test images, before adaptation (source
    only) and after (each adapting method): ``{caption: Figure}``. Scene data only: the caller
    leaves them out for medical images (``evaluation.overlays``)."""
    from shiftkit.evaluation.plots import segmentation_overlay_figure

    picks = [("source", data["source_test"], i) for i in range(min(n, len(data["source_test"])))]
    picks += [("target", data["target_test"], i) for i in range(min(n, len(data["target_test"])))]
    items = [ds[i] for _, ds, i in picks]
    images = np.stack([np.asarray(it["image"]) for it in items])
    truths = [np.asarray(it["mask"]) for it in items]
    titles = [f"{role} {i + 1}" for role, _, i in picks]
    out: dict[str, Any] = {}
    from shiftkit.adapt.methods import method_title

    for name, method in fitted.items():
        if method.requires.target == "labelled":  # the oracle is not an adaptation
            continue
        stage = "before adaptation" if name == BASELINE else "after adaptation"
        preds = list(method.predict(images))
        out[f"Segmentation overlays: {method_title(name)} ({stage})"] = segmentation_overlay_figure(
            images, truths, preds, num_classes=num_classes, titles=titles, class_names=class_names)
    return out


def save_models(fitted: dict[str, Any], config: RunConfig, run_dir: Path, domains: tuple[str, str]) -> dict[str, Path]:
    """Save each method of ``config.methods`` under ``run_dir/models/<name>/`` with
    :func:`shiftkit.adapt.save_model` (safetensors + JSON sidecar, the target feature statistics
    for the shift score), so ``shiftkit.adapt.load(run_dir / "models" / name)`` predicts what
    the method predicted in the run."""
    from shiftkit.adapt.ensemble import save_ensemble
    from shiftkit.adapt.predictor import save_model

    out = {}
    for name in config.methods:
        folder = run_dir / "models" / name
        summary = {"run": config.name, "registry_method": name, "source_domain": domains[0],
                   "target_domain": domains[1]}
        members = getattr(fitted[name], "members_", None)
        if members:  # `auto` deployed its candidates' ensemble: one saved model per member
            save_ensemble(members, folder, training_summary=summary, note="auto: the safety rule's fallback")
        else:
            save_model(fitted[name], folder, training_summary=summary)
        out[name] = folder
    return out


def evaluate_method(method: Any, splits_data: dict[str, Any], config: RunConfig, *, name: str = "method",
                    class_names: list[str] | None = None) -> MethodResult:
    """Score one fitted method on the source and target test splits, plus its feature gap.

    ``class_names``: segmentation class names for the per-class IoU (default "0", "1", ...).
    The result also holds (in memory only) the gap's feature samples and the target test
    probabilities, for the embedding figure and the bias audit.
    """
    from shiftkit.evaluation import gap, metrics

    scores: dict[str, dict[str, Any]] = {}
    feats: dict[str, np.ndarray] = {}
    target_proba = None
    for role in ("source", "target"):
        proba, feats[role] = method.predict_proba_and_features(splits_data[f"{role}_test"])
        labels = splits_data[f"{role}_test_labels"]
        if role == "target":
            target_proba = proba
        if config.task == "classification":
            scores[role] = metrics.classification_metrics(labels, proba)
        else:
            names = class_names if class_names is not None and len(class_names) == proba.shape[1] else None
            scores[role] = metrics.segmentation_metrics(labels, proba.argmax(axis=1), proba.shape[1], class_names=names)
    seed = config.train.seed
    feats_s = _subsample(feats["source"], config.evaluation.max_gap_points, seed)
    feats_t = _subsample(feats["target"], config.evaluation.max_gap_points, seed + 1)
    summary = gap.gap_summary(feats_s, feats_t, n_permutations=config.evaluation.n_permutations, seed=seed)
    return MethodResult(name=name, splits=scores, gap=summary, features=(feats_s, feats_t), target_proba=target_proba)
