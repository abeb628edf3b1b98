"""After deployment: a loaded model watches its incoming batches.

This module connects a :class:`shiftkit.adapt.deploy.predictor.Predictor` to the statistics of
:mod:`shiftkit.evaluation.monitor`, :mod:`shiftkit.evaluation.performance_estimation` and
:mod:`shiftkit.evaluation.prevalence`:

1. ``set_reference(predictor, images, labels)``: run the model once over reference images
   (source validation, or an accepted and labelled target window) and fit the drift monitor
   (features + outputs), the label-free performance estimators and the prior estimator (the
   last two need the labels). ``save_reference`` / ``load_reference`` keep that reference
   next to the model as ``monitor_reference.safetensors`` (features, probabilities, labels:
   numbers only, no paths or identifiers).
2. Stateless, one batch at a time (nothing is remembered between calls):
   ``check(predictor, batch)`` (drift verdict + estimates from one forward pass, a
   :class:`BatchCheck`), ``monitor(predictor, batch)`` (the drift verdict only) and
   ``estimate_performance(predictor, batch)`` (the estimates only). Every estimate is an
   :class:`~shiftkit.evaluation.performance_estimation.Estimate` (or a
   :class:`~shiftkit.evaluation.prevalence.PriorEstimate`) whose ``trusted`` is False, with
   the reason in ``why``, when the batch's drift test rejects.
3. Sequential: ``MonitorStream`` (``predictor.stream()``) holds the online CUSUM of one stream
   explicitly: ``update(batch)``, ``summary()``, ``reset()``. Two streams never share state.

Segmentation models are monitored on pooled encoder features and per-image mean class shares;
their performance estimate is pixel accuracy over a fixed subsample of pixels per image, with
intervals that count images (pixels of one image are not independent).

A batch that holds the same image twice (resampling with replacement, a re-sent study) makes
the two-sample tests reject more often than ``alpha``: the forward pass hashes the images and
warns with :class:`RepeatedImagesWarning`, and the verdict's ``why`` says so.
"""

from __future__ import annotations

import copy
import hashlib
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from shiftkit.datasets.errors import DataError
from shiftkit.evaluation.monitor import BatchDrift, DriftMonitor
from shiftkit.evaluation.performance_estimation import Estimate, PerformanceEstimator, drift_verdict
from shiftkit.evaluation.prevalence import PriorEstimate, PriorShiftEstimator

__all__ = ["REFERENCE_FILE", "BatchCheck", "MonitorState", "MonitorStream", "RepeatedImagesWarning", "assess", "check",
           "estimate_performance", "forward", "load_reference", "monitor", "save_reference", "set_reference"]


class RepeatedImagesWarning(UserWarning):
    """A monitored batch holds identical images; drift p-values are then too small."""


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
            self.performance = PerformanceEstimator(metric="pixel_accuracy").fit(
                pixel_proba, pixel_labels, groups=np.arange(len(pixel_labels)) // PIXELS_PER_IMAGE)
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
    flat pixel indices, (N, PIXELS_PER_IMAGE)); ``repeated`` (0-d) counts images identical to an
    earlier one of the same call (warned about with :class:`RepeatedImagesWarning`)."""
    x_all = _images(predictor, data)
    repeated = repeated_images(x_all)
    if repeated:
        warnings.warn(f"monitor: {repeated} of {len(x_all)} images repeat an earlier image of the same batch "
                      "(identical pixels); repeats make the drift tests reject more often than alpha. Monitor "
                      "distinct images (sample without replacement)", RepeatedImagesWarning, stacklevel=3)
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
    out = {"features": torch.cat(feats).numpy().astype(np.float64), "proba": torch.cat(probas).numpy().astype(np.float64),
           "repeated": np.array(repeated)}
    if pix:
        out["pixel_proba"] = torch.cat(pix).numpy().astype(np.float64)
        out["pixel_index"] = torch.cat(pix_idx).numpy()
        out["mask_shape"] = np.array(x_all.shape[-2:])
    # float32 softmax rows sum to 1 within ~1e-7; renormalise for the estimators' checks
    out["proba"] /= out["proba"].sum(1, keepdims=True)
    return out


def repeated_images(x: torch.Tensor) -> int:
    """How many of the ``(N, ...)`` images equal an earlier one exactly (blake2b of the pixels)."""
    digests = {hashlib.blake2b(t.contiguous().numpy().tobytes(), digest_size=16).digest() for t in x}
    return int(len(x) - len(digests))


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
        predictor: a loaded :class:`~shiftkit.adapt.deploy.predictor.Predictor`.
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

    from shiftkit.adapt.training.checkpoint import is_safetensors

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


@dataclass(frozen=True)
class BatchCheck:
    """Everything known about one batch from one forward pass.

    Attributes:
        drift: the drift test (:class:`~shiftkit.evaluation.monitor.BatchDrift`; ``cusum`` and
            ``alarm`` are set only by :meth:`MonitorStream.update`).
        estimates: ``{"atc", "doc", "cbpe"[, "cbpe_auroc"]}`` label-free estimates, each with
            ``trusted`` / ``why`` (empty without a labelled reference).
        prior: the estimated class prior (classification with every class in the reference).
        trusted: False when the drift test rejected (then no estimate of this batch is to be
            trusted), True otherwise.
        why: the reasons, in words ("" when trusted and nothing to add).
        repeated_images: images identical to an earlier one of the batch.
        proba: ``(m, K)`` the model's probabilities (not part of :meth:`to_dict`).
    """

    drift: BatchDrift
    estimates: dict[str, Estimate] = field(default_factory=dict)
    prior: PriorEstimate | None = None
    trusted: bool = True
    why: str = ""
    repeated_images: int = 0
    proba: np.ndarray | None = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict (no probabilities)."""
        return {"drift": self.drift.to_dict(), "estimates": {k: v.to_dict() for k, v in self.estimates.items()},
                "prior": None if self.prior is None else self.prior.to_dict(), "trusted": self.trusted,
                "why": self.why, "repeated_images": self.repeated_images}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> BatchCheck:
        """Inverse of :meth:`to_dict`."""
        return cls(drift=BatchDrift(**d["drift"]),
                   estimates={k: Estimate.from_dict(v) for k, v in d.get("estimates", {}).items()},
                   prior=None if d.get("prior") is None else PriorEstimate.from_dict(d["prior"]),
                   trusted=bool(d["trusted"]), why=str(d.get("why", "")),
                   repeated_images=int(d.get("repeated_images", 0)))


def _check(state: MonitorState, drift_monitor: DriftMonitor, predictor: Any, batch: Any, attributes: Any,
           online: bool, estimates: bool = True) -> BatchCheck:
    seg = predictor.task == "segmentation"
    out = forward(predictor, batch, pixels=seg and estimates and state.performance is not None)
    fn = drift_monitor.update if online else drift_monitor.test
    drift = fn(out["features"], out["proba"], attributes=attributes)
    trusted, why = drift_verdict(drift)
    rep = int(out["repeated"])
    if rep:
        why = "; ".join(w for w in (why, f"{rep} repeated image(s) in the batch: the drift test rejects too often "
                                         "on repeats") if w)
    est: dict[str, Estimate] = {}
    prior = None
    if estimates and state.performance is not None:
        if seg:
            groups = np.arange(len(out["pixel_proba"])) // PIXELS_PER_IMAGE
            raw = state.performance.estimate(out["pixel_proba"], groups=groups, drift=drift)
        else:
            raw = state.performance.estimate(out["proba"], drift=drift)
        est = {k: (v if not rep else v.with_verdict(v.trusted, f"{rep} repeated image(s) in the batch"))
               for k, v in raw.items()}
    if estimates and state.prior is not None:
        prior = state.prior.estimate(out["proba"], drift=drift)
    return BatchCheck(drift=drift, estimates=est, prior=prior, trusted=bool(trusted), why=why,
                      repeated_images=rep, proba=out["proba"])


def check(predictor: Any, batch: Any, *, attributes: Any = None) -> BatchCheck:
    """Stateless check of one batch: drift verdict and label-free estimates (with the trust
    verdict) from one forward pass. Nothing is remembered; for a stream use :class:`MonitorStream`."""
    state = _state(predictor)
    return _check(state, state.drift, predictor, batch, attributes, online=False)


class MonitorStream:
    """Sequential monitoring of one stream: an explicit CUSUM state of its own.

    Each :meth:`update` runs one forward pass, the drift test, the online CUSUM (see
    :class:`~shiftkit.evaluation.monitor.DriftMonitor`) and the label-free estimates with their
    trust verdict. Streams made from the same predictor share the fitted reference but never
    their state.

    Example:
        >>> stream = predictor.stream()
        >>> for batch in batches:
        ...     step = stream.update(batch)
        ...     step.drift.alarm, step.trusted, step.estimates["cbpe"].interval
        >>> stream.summary(change_point=10)
        >>> stream.reset()
    """

    def __init__(self, predictor: Any, *, estimates: bool = True):
        self.predictor = predictor
        self.state = _state(predictor)
        self.estimates = estimates
        self.drift = copy.copy(self.state.drift)  # shares the fitted reference, not the online state
        self.reset()

    def update(self, batch: Any, *, attributes: Any = None) -> BatchCheck:
        """Check the next batch of the stream and advance the CUSUM."""
        step = _check(self.state, self.drift, self.predictor, batch, attributes, online=True, estimates=self.estimates)
        self.steps.append(step)
        return step

    def summary(self, change_point: int | None = None) -> dict[str, Any]:
        """Batches, per-batch drift rate, alarms, untrusted batches, repeated images and (with a
        known change point) the detection delay in batches."""
        out = self.drift.summary(change_point)
        out["untrusted_batches"] = [i for i, s in enumerate(self.steps) if not s.trusted]
        out["repeated_images"] = int(sum(s.repeated_images for s in self.steps))
        return out

    def reset(self) -> None:
        """Forget the stream: CUSUM to 0, history emptied."""
        self.drift.reset()
        self.steps: list[BatchCheck] = []


def assess(predictor: Any, batch: Any, *, attributes: Any = None, online: bool = False
           ) -> tuple[BatchDrift, dict[str, Any], dict[str, np.ndarray]]:
    """Older form of :func:`check`: ``(drift, estimates incl. "prior", {"proba"})``."""
    state = _state(predictor)
    res = _check(state, state.drift, predictor, batch, attributes, online=online)
    est: dict[str, Any] = dict(res.estimates)
    if res.prior is not None:
        est["prior"] = res.prior
    return res.drift, est, {"proba": res.proba}


def monitor(predictor: Any, batch: Any, *, attributes: Any = None, online: bool = False) -> BatchDrift:
    """Drift verdict of one incoming batch; stateless. ``online=True`` (deprecated: use
    :class:`MonitorStream`) advances the CUSUM kept on the predictor's reference."""
    state = _state(predictor)
    if online:
        warnings.warn("monitor(online=True) advances a CUSUM hidden in the predictor; use "
                      "stream = predictor.stream(); stream.update(batch) instead", DeprecationWarning, stacklevel=3)
    return _check(state, state.drift, predictor, batch, attributes, online=online, estimates=False).drift


def estimate_performance(predictor: Any, batch: Any, *, attributes: Any = None) -> dict[str, Estimate | PriorEstimate]:
    """Label-free accuracy estimates of one batch (and its estimated class prior when the
    reference had labels of every class), each with ``trusted`` / ``why`` from the batch's
    drift test; stateless. Segmentation: pixel accuracy."""
    state = _state(predictor)
    if state.performance is None:
        raise DataError("estimate_performance needs a labelled reference: call predictor.set_reference(images, labels)")
    res = _check(state, state.drift, predictor, batch, attributes, online=False)
    out: dict[str, Any] = dict(res.estimates)
    if res.prior is not None:
        out["prior"] = res.prior
    return out
