"""What a run writes besides the metrics: monitoring of the target, bias sections,
segmentation overlays, saved models, and the per-method evaluation."""

from __future__ import annotations

import platform
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from shiftkit.adapt.job.config import RunConfig
from shiftkit.adapt.job.data import subsample
from shiftkit.adapt.methods.registry import BASELINE
from shiftkit.evaluation.results import MethodResult


def machine_summary() -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def target_monitor(dataset: Any, labels: np.ndarray, task: str, batch_size: int = 128) -> Any:
    """Per-epoch target-test scores for the learning curves (`target_acc`, `target_auroc` /
    `target_miou`). They are displayed, never used to choose an epoch: the trainer refuses a
    `target_*` early-stopping key unless the run is an explicit oracle."""
    from torch.utils.data import DataLoader

    from shiftkit.adapt.training.inference import predict_loader
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
    from shiftkit.adapt.deploy.ensemble import save_ensemble
    from shiftkit.adapt.deploy.saving import save_model

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
            # binary: the method's operating threshold, chosen from source data (train.decision_threshold)
            threshold = getattr(method, "decision_threshold_", None)
            scores[role] = metrics.classification_metrics(labels, proba, threshold=0.5 if threshold is None
                                                          else float(threshold))
        else:
            names = class_names if class_names is not None and len(class_names) == proba.shape[1] else None
            scores[role] = metrics.segmentation_metrics(labels, proba.argmax(axis=1), proba.shape[1], class_names=names)
    seed = config.train.seed
    feats_s = subsample(feats["source"], config.evaluation.max_gap_points, seed)
    feats_t = subsample(feats["target"], config.evaluation.max_gap_points, seed + 1)
    summary = gap.gap_summary(feats_s, feats_t, n_permutations=config.evaluation.n_permutations, seed=seed)
    return MethodResult(name=name, splits=scores, gap=summary, features=(feats_s, feats_t), target_proba=target_proba)
