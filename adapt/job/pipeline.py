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

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from shiftkit.adapt.job.config import AUTO_METHOD, RunConfig
from shiftkit.adapt.job.data import (
    domains_for,
    image_error_with_row,
    method_datasets,
    prepare_manifest,
    skipped_rows,
    split_domains,
    test_labels,
    used_sizes,
)
from shiftkit.adapt.job.outputs import (
    bias_section,
    evaluate_method,
    labelled_pixels,
    machine_summary,
    save_models,
    segmentation_class_names,
    segmentation_overlays,
    target_monitor,
)
from shiftkit.adapt.methods.build import BuildContext
from shiftkit.adapt.methods.registry import BASELINE
from shiftkit.datasets.errors import DataError, ImageReadError
from shiftkit.evaluation.results import MethodResult, RunResult

__all__ = ["BuildContext", "RunResult", "build_method", "check_run", "evaluate_method", "fit_method", "run",
           "save_models"]

log = logging.getLogger("shiftkit")

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
    from shiftkit.adapt.models.ecosystem import is_ecosystem_name
    from shiftkit.datasets.errors import ShiftkitError

    weights, name = config.model.weights, config.model.backbone
    if weights is not None and not Path(weights).is_file():
        return [f"model.weights: file not found: {weights}"]
    if not is_ecosystem_name(name) and weights is None and not config.model.options:
        return []
    from shiftkit.adapt.models.backbones import build_classifier, build_segmenter

    build = build_classifier if config.task == "classification" else build_segmenter
    try:
        build(name, 3, 2, weights=weights, **config.model.options)
    except ShiftkitError as exc:
        return [f"model.{'weights' if weights is not None else 'backbone'}: {exc}"]
    except (RuntimeError, TypeError, ValueError, KeyError) as exc:  # the library's own refusal
        return [f"model.backbone: {name!r} with options {config.model.options}: {type(exc).__name__}: "
                f"{str(exc).splitlines()[0][:300] if str(exc) else ''}"]
    return []


def initial_model(config: RunConfig, in_channels: int, num_classes: int) -> Any:
    """The backbone name, or a module holding the user's source checkpoint or pretrained weights."""
    from shiftkit.adapt.models.backbones import build_classifier, build_segmenter

    build = build_classifier if config.task == "classification" else build_segmenter
    if config.model.weights is not None or config.model.options:
        torch.manual_seed(config.train.seed)  # the new head's init follows the model seed
        return build(config.model.backbone, in_channels, num_classes, weights=config.model.weights,
                     **config.model.options)
    if config.model.checkpoint is None:
        return config.model.backbone
    torch.manual_seed(config.train.seed)
    model = build(config.model.backbone, in_channels, num_classes)
    from shiftkit.adapt.training.checkpoint import load_into

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


def _set_threshold(method: Any, config: RunConfig, splits: Any, data: dict[str, Any]) -> None:
    """A binary classifier's operating threshold (``train.decision_threshold``,
    :func:`shiftkit.evaluation.thresholds.resolve_threshold`), from source data only, stored on
    the fitted method as ``decision_threshold_`` (scored with, and saved in its model file)."""
    from shiftkit.evaluation.thresholds import resolve_threshold

    setting = config.train.decision_threshold
    labels = splits.source_train["label"].to_numpy() if "label" in splits.source_train.columns else None
    val_labels = val_proba = None
    if setting == "source_val":
        val_labels = test_labels(data["source_val"], "classification")
        val_proba = method.predict_proba(data["source_val"])
    try:
        threshold = resolve_threshold(setting, source_labels=labels, val_labels=val_labels, val_proba=val_proba)
    except DataError as exc:  # e.g. one class only in the source labels: keep 0.5 and say why
        threshold = 0.5
        log.warning("train.decision_threshold %r: %s; using 0.5", setting, exc)
    method.decision_threshold_ = threshold
    log.info("decision threshold of %s: %.3f (%s)", type(method).__name__, threshold, setting)


def run(config: RunConfig) -> RunResult:
    """Run the whole job described by `config`; return the metrics and the run folder.

    Writes `run_dir/metrics.json` and `run_dir/report.html` (atomically), every method's
    fitted model under `run_dir/models/<name>/` (`shiftkit.adapt.load` reads it) and, for
    embedded benchmarks, the exported data under `run_dir/data/`. With a `tracking` section the
    run is logged to MLflow / TensorBoard (:mod:`shiftkit.adapt.training.tracking`).
    """
    import os

    from shiftkit.adapt.training import tracking

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
    from shiftkit.adapt.methods import method_title
    from shiftkit.adapt.training import distributed
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
    data = method_datasets(splits, config.data.skip_bad)
    try:
        for role in ("source_test", "target_test"):
            data[f"{role}_labels"] = test_labels(data[role], config.task)
    except ImageReadError as exc:
        raise image_error_with_row(exc, frame) from None
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
        raise image_error_with_row(exc, frame) from None

    fitted: dict[str, Any] = {}

    def fit_built(method: Any, name: str | None = None) -> Any:
        monitor = target_monitor(data["target_test"], data["target_test_labels"], config.task)
        if tracker is not None and name is not None:  # the epoch's target scores, logged as it ends
            monitor = tracker.epoch_callback(name, monitor)
        try:
            return fit_method(method, data, monitor)
        except ImageReadError as exc:  # a file that broke mid-run: name its manifest row
            raise image_error_with_row(exc, frame) from None

    selection: dict[str, Any] | None = None
    thresholded: set[str] = set()

    def fit(name: str) -> Any:
        nonlocal selection
        if name not in fitted and name == AUTO_METHOD:  # label-free choice among selection.candidates
            from shiftkit.adapt.harness.auto_select import fit_auto

            context = BuildContext(name=name, config=config, num_classes=num_classes, in_channels=in_channels,
                                   run_dir=run_dir, fit_method=fit)
            fitted[name], selection = fit_auto(config, data, fit, context, fit_built, num_classes=num_classes,
                                               run_dir=run_dir)
        elif name not in fitted:
            log.info("fitting %s", name)
            fitted[name] = fit_built(build_method(name, config, num_classes, run_dir, in_channels, fit_method=fit), name)
            if tracker is not None:
                tracker.log_history(name, fitted[name].history_)
        if config.task == "classification" and num_classes == 2 and name not in thresholded:
            _set_threshold(fitted[name], config, splits, data)  # once per method, after its fit
            thresholded.add(name)
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
        "split_sizes": used_sizes(data),  # after skip_bad dropped unreadable rows
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


