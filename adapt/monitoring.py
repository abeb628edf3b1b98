"""After deployment: a loaded model watches its incoming batches.

This module connects a :class:`shiftkit.adapt.predictor.Predictor` to the statistics of
:mod:`shiftkit.evaluation.monitor`, :mod:`shiftkit.evaluation.performance_estimation` and
:mod:`shiftkit.evaluation.prevalence`:

1. ``set_reference(predictor, images, labels)``: run the model once over reference images
   (source validation, or an accepted and labelled target window) and fit the drift monitor
   (features + outputs), the label-free performance estimators and the prior estimator (the
   last two need the labels). ``save_reference`` / ``load_reference`` keep that reference
   next to the model as ``monitor_reference.safetensors`` (features, probabilities, labels:
   numbers only, no paths or identifiers).
2. ``monitor(predictor, batch)``: one batch's drift verdict, p-values, the online CUSUM alarm
   and the groups that moved most.
3. ``estimate_performance(predictor, batch)``: ATC / DoC / CBPE accuracy (and CBPE AUROC for
   binary models) with intervals, and the estimated class prior with the corrected threshold.

Segmentation models are monitored on pooled encoder features and per-image mean class shares;
their performance estimate is pixel accuracy over a fixed subsample of pixels per image.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from shiftkit.datasets.errors import DataError
from shiftkit.evaluation.monitor import BatchDrift, DriftMonitor
from shiftkit.evaluation.performance_estimation import Estimate, PerformanceEstimator
from shiftkit.evaluation.prevalence import PriorEstimate, PriorShiftEstimator

__all__ = ["REFERENCE_FILE", "MonitorState", "assess", "estimate_performance", "forward", "load_reference", "monitor",
           "save_reference", "set_reference"]

REFERENCE_FILE = "monitor_reference.safetensors"
PIXELS_PER_IMAGE = 256  # segmentation: pixels per image sampled for the pixel-accuracy estimate


class MonitorState:
    """What a predictor needs to monitor: the fitted statistics and the reference arrays."""

    def __init__(self, features: np.ndarray, proba: np.ndarray, labels: np.ndarray | None,
                 pixel_proba: np.ndarray | None = None, pixel_labels: np.ndarray | None = None,
                 monitor_kwargs: dict | None = None):
        self.features, self.proba, self.labels = features, proba, labels
        self.pixel_proba, self.pixel_labels = pixel_proba, pixel_labels
        self.drift = DriftMonitor(**(monitor_kwargs or {})).fit(features, proba)
        self.performance: PerformanceEstimator | None = None
        self.prior: PriorShiftEstimator | None = None
        if pixel_proba is not None and pixel_labels is not None:
            self.performance = PerformanceEstimator().fit(pixel_proba, pixel_labels)
        elif labels is not None:
            self.performance = PerformanceEstimator().fit(proba, labels)
            if len(np.unique(labels)) == proba.shape[1]:
                self.prior = PriorShiftEstimator().fit(proba, labels)


def _images(predictor: Any, data: Any) -> torch.Tensor:
    """(N, C, H, W) float32 at the model's input size, via the predictor's own input checks."""
    imgs = predictor._inputs(data)
    out = []
    for img in imgs:
        x = torch.from_numpy(img)[None]
        if predictor.image_size and tuple(x.shape[-2:]) != tuple(predictor.image_size):
            x = F.interpolate(x, size=tuple(predictor.image_size), mode="bilinear", align_corners=False, antialias=True)
        out.append(x[0])
    if len({tuple(t.shape) for t in out}) != 1:
        raise DataError("monitor: images of different sizes and no image_size in the model sidecar; resize them first")
    return torch.stack(out)


@torch.no_grad()
def forward(predictor: Any, data: Any, *, batch_size: int = 64, pixels: bool = False,
            seed: int = 0) -> dict[str, np.ndarray]:
    """One batched pass: ``features`` (N, D), ``proba`` (N, K) and, for segmentation with
    ``pixels=True``, ``pixel_proba`` (N * PIXELS_PER_IMAGE, K) and ``pixel_index`` (the sampled
    flat pixel indices, (N, PIXELS_PER_IMAGE))."""
    x_all = _images(predictor, data)
    feats, probas, pix, pix_idx = [], [], [], []
    gen = torch.Generator().manual_seed(seed)
    for i in range(0, len(x_all), batch_size):
        x = x_all[i:i + batch_size].to(predictor.device)
        if predictor.task == "segmentation":
            logits, fmap = predictor.model.forward_with_features(x)
            p = torch.softmax(logits.float(), 1)
            feats.append(fmap.mean(dim=(2, 3)).float().cpu())
            probas.append(p.mean(dim=(2, 3)).cpu())
            if pixels:
                n, k = p.shape[:2]
                flat = p.reshape(n, k, -1)
                idx = torch.randint(0, flat.shape[-1], (n, PIXELS_PER_IMAGE), generator=gen)
                pix.append(torch.gather(flat, 2, idx[:, None, :].expand(n, k, -1).to(flat.device)).permute(0, 2, 1)
                           .reshape(-1, k).cpu())
                pix_idx.append(idx)
        else:
            f = predictor.model.encoder(x)
            feats.append(f.float().cpu())
            probas.append(torch.softmax(predictor.model.head(f).float(), 1).cpu())
    out = {"features": torch.cat(feats).numpy().astype(np.float64), "proba": torch.cat(probas).numpy().astype(np.float64)}
    if pix:
        out["pixel_proba"] = torch.cat(pix).numpy().astype(np.float64)
        out["pixel_index"] = torch.cat(pix_idx).numpy()
        out["mask_shape"] = np.array(x_all.shape[-2:])
    # float32 softmax rows sum to 1 within ~1e-7; renormalise for the estimators' checks
    out["proba"] /= out["proba"].sum(1, keepdims=True)
    return out


def _pixel_labels(masks: Any, pixel_index: np.ndarray, shape: np.ndarray) -> np.ndarray:
    m = np.asarray(masks)
    if m.ndim != 3 or m.shape[0] != pixel_index.shape[0]:
        raise DataError(f"set_reference: masks must be (N, H, W) for {pixel_index.shape[0]} images; got {m.shape}")
    if tuple(m.shape[1:]) != tuple(shape):
        t = torch.from_numpy(m.astype(np.float32))[:, None]
        m = F.interpolate(t, size=tuple(int(s) for s in shape), mode="nearest")[:, 0].numpy().astype(np.int64)
    return np.take_along_axis(m.reshape(m.shape[0], -1), pixel_index, 1).reshape(-1)


def set_reference(predictor: Any, data: Any, labels: Any = None, *, save: str | os.PathLike[str] | None = None,
                  **monitor_kwargs: Any) -> MonitorState:
    """Fit the predictor's monitor on reference images.

    Args:
        predictor: a loaded :class:`~shiftkit.adapt.predictor.Predictor`.
        data: reference images (whatever ``Predictor.predict`` accepts).
        labels: ``(N,)`` class labels (classification) or ``(N, H, W)`` masks (segmentation);
            optional, but the performance and prior estimates need them.
        save: a folder (usually the model's) to write ``monitor_reference.safetensors`` to.
        monitor_kwargs: passed to :class:`~shiftkit.evaluation.monitor.DriftMonitor`.
    """
    seg = predictor.task == "segmentation"
    out = forward(predictor, data, pixels=seg and labels is not None)
    lab = pix_lab = None
    if labels is not None:
        if seg:
            pix_lab = _pixel_labels(labels, out["pixel_index"], out["mask_shape"])
        else:
            lab = np.asarray(labels).astype(np.int64).reshape(-1)
            if lab.shape[0] != out["proba"].shape[0]:
                raise DataError(f"set_reference: {lab.shape[0]} labels for {out['proba'].shape[0]} images")
    state = MonitorState(out["features"], out["proba"], lab, out.get("pixel_proba"), pix_lab, monitor_kwargs)
    predictor._monitor_state = state
    if save is not None:
        save_reference(state, save)
    return state


def save_reference(state: MonitorState, folder: str | os.PathLike[str]) -> Path:
    """Write the reference arrays to ``folder/monitor_reference.safetensors`` atomically."""
    from safetensors.numpy import save

    from shiftkit.datasets.files import atomic_write_bytes

    arrays = {"features": state.features.astype(np.float32), "proba": state.proba.astype(np.float32)}
    if state.labels is not None:
        arrays["labels"] = state.labels.astype(np.int64)
    if state.pixel_proba is not None and state.pixel_labels is not None:
        arrays["pixel_proba"] = state.pixel_proba.astype(np.float32)
        arrays["pixel_labels"] = state.pixel_labels.astype(np.int64)
    path = Path(folder) / REFERENCE_FILE
    atomic_write_bytes(path, save(arrays, metadata={"format": "shiftkit-monitor-reference"}))
    return path


def load_reference(predictor: Any, folder: str | os.PathLike[str], **monitor_kwargs: Any) -> MonitorState:
    """Attach a reference saved by :func:`save_reference` (safetensors only, never unpickled)."""
    from safetensors.numpy import load_file

    from .checkpoint import is_safetensors

    path = Path(folder)
    path = path / REFERENCE_FILE if path.is_dir() else path
    if not path.exists():
        raise DataError(f"{path}: no monitoring reference; create one with predictor.set_reference(images, labels, "
                        f"save=model_dir) or pass --reference REF.csv to `shiftkit monitor`")
    if not is_safetensors(path):
        raise DataError(f"{path}: not a safetensors file; refused")
    a = load_file(str(path))
    state = MonitorState(a["features"].astype(np.float64), _renorm(a["proba"]), a.get("labels"),
                         _renorm(a["pixel_proba"]) if "pixel_proba" in a else None, a.get("pixel_labels"),
                         monitor_kwargs)
    predictor._monitor_state = state
    return state


def _renorm(p: np.ndarray) -> np.ndarray:
    p = p.astype(np.float64)
    return p / p.sum(1, keepdims=True)


def _state(predictor: Any) -> MonitorState:
    state = getattr(predictor, "_monitor_state", None)
    if state is None:
        raise DataError("this predictor has no monitoring reference: call predictor.set_reference(images, labels) "
                        "or predictor.load_reference(model_dir) first")
    return state


def assess(predictor: Any, batch: Any, *, attributes: Any = None, online: bool = True
           ) -> tuple[BatchDrift, dict[str, Any], dict[str, np.ndarray]]:
    """One forward pass, then the drift verdict, the label-free estimates (empty without a
    labelled reference) and the model outputs ``{"features", "proba", ...}`` of the batch."""
    state = _state(predictor)
    seg = predictor.task == "segmentation"
    out = forward(predictor, batch, pixels=seg and state.performance is not None)
    fn = state.drift.update if online else state.drift.test
    drift = fn(out["features"], out["proba"], attributes=attributes)
    est: dict[str, Any] = {}
    if state.performance is not None:
        est.update(state.performance.estimate(out["pixel_proba"] if seg else out["proba"]))
    if state.prior is not None:
        est["prior"] = state.prior.estimate(out["proba"])
    return drift, est, out


def monitor(predictor: Any, batch: Any, *, attributes: Any = None, online: bool = True) -> BatchDrift:
    """Drift verdict of one incoming batch (``online=True`` also advances the CUSUM)."""
    state = _state(predictor)
    out = forward(predictor, batch)
    fn = state.drift.update if online else state.drift.test
    return fn(out["features"], out["proba"], attributes=attributes)


def estimate_performance(predictor: Any, batch: Any) -> dict[str, Estimate | PriorEstimate]:
    """Label-free accuracy estimates of one batch (and its estimated class prior when the
    reference had labels of every class). Segmentation: pixel accuracy."""
    state = _state(predictor)
    if state.performance is None:
        raise DataError("estimate_performance needs a labelled reference: call predictor.set_reference(images, labels)")
    seg = predictor.task == "segmentation"
    out = forward(predictor, batch, pixels=seg)
    res: dict[str, Any] = dict(state.performance.estimate(out["pixel_proba"] if seg else out["proba"]))
    if state.prior is not None:
        res["prior"] = state.prior.estimate(out["proba"])
    return res
