"""Devices, batches and prediction passes: what training, evaluation and ``predict`` share.

Metrics come from :mod:`shiftkit.evaluation.metrics` (one implementation of each).
"""

from __future__ import annotations

import contextlib
import math

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from shiftkit.adapt.training import distributed as dist_utils
from shiftkit.datasets.errors import ConfigError
from shiftkit.evaluation.metrics import auroc, segmentation_metrics
from shiftkit.evaluation.risk import prediction_entropy

__all__ = ["autocast_ctx", "batch_to", "evaluate", "label_free_metrics", "predict_loader", "resolve_device"]


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``None`` -> this rank's CUDA device when available, else CPU."""
    if device is not None:
        return torch.device(device)
    if torch.cuda.is_available():
        return torch.device("cuda", dist_utils.local_rank() if dist_utils.is_distributed() else torch.cuda.current_device())
    return torch.device("cpu")


def batch_to(batch: dict, device: torch.device, channels_last: bool) -> dict:
    """Move tensor entries to ``device``; 4-D images get channels_last when asked."""
    out = {}
    for k, v in batch.items():
        if isinstance(v, torch.Tensor):
            v = v.to(device, non_blocking=True)
            if k == "image" and channels_last and v.dim() == 4:
                v = v.contiguous(memory_format=torch.channels_last)
        out[k] = v
    return out


def autocast_ctx(device: torch.device, amp: bool) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA (no loss scaler needed for bf16); a no-op elsewhere."""
    if amp and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()




@torch.no_grad()
def predict_loader(
    model: nn.Module,
    loader: DataLoader,
    device: torch.device,
    *,
    amp: bool = False,
    channels_last: bool = False,
    want: tuple[str, ...] = ("proba",),
    progress: bool = False,
) -> dict[str, np.ndarray]:
    """Run ``model`` in eval mode over ``loader``.

    Returns arrays for the requested keys: ``proba`` ``(N, K)`` or ``(N, K, H, W)`` float32,
    ``features`` ``(N, D)`` (via ``model.features`` or ``model.encoder``), ``label`` ``(N,)``,
    ``mask`` ``(N, H, W)``.
    """
    from shiftkit.datasets.progress import progress_bar

    was = model.training
    model.eval()
    out: dict[str, list[np.ndarray]] = {k: [] for k in want}
    try:
        for batch in progress_bar(loader, desc="predict", enabled=progress):
            b = batch_to(batch, device, channels_last)
            x = b["image"]
            with autocast_ctx(device, amp):
                if "features" in want:
                    if hasattr(model, "forward_with_features"):
                        logits, fmap = model.forward_with_features(x)
                        feats = fmap.mean(dim=tuple(range(2, fmap.dim())))
                    else:
                        feats = model.encoder(x)
                        logits = model.head(feats)
                    out["features"].append(feats.float().cpu().numpy())
                else:
                    logits = model(x)
            if "proba" in want:
                out["proba"].append(torch.softmax(logits.float(), dim=1).cpu().numpy())
            if "logits" in want:
                out["logits"].append(logits.float().cpu().numpy())
            for k in ("label", "mask"):
                if k in want:
                    out[k].append(batch[k].numpy())
    finally:
        model.train(was)
    return {k: (np.concatenate(v) if v else np.zeros((0,))) for k, v in out.items()}


def evaluate(
    model: nn.Module,
    data: Dataset,
    *,
    task: str = "classification",
    device: torch.device | str = "cpu",
    batch_size: int = 128,
    amp: bool = False,
    channels_last: bool = False,
    prefix: str = "val_",
) -> dict[str, float]:
    """Labelled metrics on ``data``: ``loss``, ``acc``, ``auroc`` (classification) or
    ``loss``, ``acc`` (pixel accuracy), ``miou`` (segmentation), keys prefixed by ``prefix``."""
    device = torch.device(device)
    loader = DataLoader(data, batch_size=batch_size, shuffle=False)
    want = ("proba", "mask") if task == "segmentation" else ("proba", "label")
    res = predict_loader(model, loader, device, amp=amp, channels_last=channels_last, want=want)
    proba = np.clip(res["proba"], 1e-12, 1.0)
    if task == "segmentation":
        y = res["mask"]
        valid = y >= 0
        yv = np.where(valid, y, 0)
        lp = np.take_along_axis(np.log(proba), yv[:, None], axis=1)[:, 0]
        pred = proba.argmax(1)
        return {
            f"{prefix}loss": float(-(lp[valid]).mean()),
            f"{prefix}acc": float((pred[valid] == y[valid]).mean()),
            f"{prefix}miou": segmentation_metrics(y, pred, proba.shape[1], ignore_index=-1)["miou"],
        }
    y = res["label"].astype(np.int64)
    valid = y >= 0
    if not valid.any():
        raise ConfigError("evaluate", [f"{prefix.rstrip('_')} data has no labels (all label == -1)"])
    y, proba = y[valid], proba[valid]
    return {
        f"{prefix}loss": float(-np.log(proba[np.arange(len(y)), y]).mean()),
        f"{prefix}acc": float((proba.argmax(1) == y).mean()),
        f"{prefix}auroc": auroc(y, proba)[0],
    }


def label_free_metrics(
    model: nn.Module, data: Dataset, names: tuple[str, ...], *, device: torch.device, batch_size: int, amp: bool,
    channels_last: bool,
) -> dict[str, float]:
    """Target metrics computed from predictions only (labels are never read)."""
    if not names:
        return {}
    loader = DataLoader(data, batch_size=batch_size, shuffle=False)
    proba = predict_loader(model, loader, device, amp=amp, channels_last=channels_last)["proba"]
    k = proba.shape[1]
    out = {}
    if "entropy" in names:  # per image (or pixel), normalised by log K to [0, 1]
        out["target_entropy"] = prediction_entropy(np.moveaxis(proba, 1, -1).reshape(-1, k)) / math.log(k)
    if "confidence" in names:
        out["target_confidence"] = float(proba.max(1).mean())
    return out
