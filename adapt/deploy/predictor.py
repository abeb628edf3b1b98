"""The predictor a loaded model answers through: predictions with a status and a shift flag.

:func:`shiftkit.adapt.deploy.loading.load` returns a :class:`Predictor`. Predictions carry a status
(``"error"``, with no label, when the output is not finite) and a three-valued shift flag
(``"unknown"`` when the model stores no target statistics); ``to_dict()`` is strict JSON.

Shift score: the Mahalanobis distance of an image's encoder features to the target
features the model was adapted on (Ledoit-Wolf shrunk covariance),
``d(x) = sqrt((f(x) - mu)^T P (f(x) - mu))``, and the flag ``"outside"`` when it exceeds the
99th percentile of those target images' own held-out distances.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from shiftkit.adapt.deploy.model_format import MIN_IMAGE_SIDE
from shiftkit.datasets.errors import DataError

__all__ = ["Prediction", "Predictor"]


def _shift_stats(feats: np.ndarray, quantile: float = 0.99) -> tuple[np.ndarray, np.ndarray, float]:
    """Mean, shrunk precision and flag threshold of target features ``(N, D)``.

    The threshold is the ``quantile`` of *held-out* distances (5-fold): in-sample distances
    are optimistically small when ``N`` is not much larger than ``D``, which would flag
    ordinary new target images.
    """
    from sklearn.covariance import LedoitWolf
    from sklearn.model_selection import KFold

    feats = np.asarray(feats, dtype=np.float64)
    n = feats.shape[0]
    if n < 10:
        raise DataError(f"shift statistics need at least 10 target images, got {n}")
    held_out = np.empty(n)
    for fit_idx, test_idx in KFold(n_splits=5, shuffle=True, random_state=0).split(feats):
        lw = LedoitWolf().fit(feats[fit_idx])
        held_out[test_idx] = _mahalanobis(feats[test_idx], lw.location_, lw.precision_)
    lw = LedoitWolf().fit(feats)
    return lw.location_.astype(np.float32), lw.precision_.astype(np.float32), float(np.quantile(held_out, quantile))


def _mahalanobis(feats: np.ndarray, mean: np.ndarray, prec: np.ndarray) -> np.ndarray:
    z = np.asarray(feats, dtype=np.float64) - mean
    return np.sqrt(np.maximum(np.einsum("nd,de,ne->n", z, prec.astype(np.float64), z), 0.0))


def _finite_or_none(v: float) -> float | None:
    return float(v) if np.isfinite(v) else None


@dataclass
class Prediction:
    """Per-image outputs of :meth:`Predictor.predict`.

    Attributes:
        proba: ``(N, K)`` class probabilities (segmentation: per-image mean class share).
        label: ``(N,)`` predicted class index; ``-1`` where ``status`` is ``"error"``. A binary
            classifier predicts class 1 when P(class 1) >= ``decision_threshold``.
        status: ``(N,)`` ``"ok"``, or ``"error"`` when the network's output was not finite
            (then ``label`` is -1 and :meth:`to_dict` gives no label); ``errors`` says why.
        shift: ``(N,)`` ``"inside"``, ``"outside"`` (shift score above the threshold: treat
            the prediction with caution) or ``"unknown"`` (the model stores no statistics of
            the images it was adapted on, e.g. a source-only model, or the score is not finite).
        shift_score: ``(N,)`` Mahalanobis distance of the features to the adapted-on target
            (NaN when unknown).
        outside: ``(N,)`` bool, ``shift == "outside"`` (``False`` also for ``"unknown"``:
            read ``shift``).
        mask: ``(N, H, W)`` int64 predicted masks at input resolution (segmentation only).
        class_names: the ``K`` names.
        decision_threshold: binary classification: the threshold on P(class 1) the labels
            used (the model file's, 0.5 when it records none); None otherwise.
    """

    proba: np.ndarray
    label: np.ndarray
    shift_score: np.ndarray
    outside: np.ndarray
    class_names: list[str]
    mask: np.ndarray | None = None
    threshold: float | None = None
    extra: dict = field(default_factory=dict)
    shift: np.ndarray | None = None
    status: np.ndarray | None = None
    errors: list[str | None] = field(default_factory=list)
    decision_threshold: float | None = None

    def __post_init__(self) -> None:
        n = len(self.label)
        if self.status is None:
            self.status = np.array(["ok"] * n, dtype=object)
        if self.shift is None:
            self.shift = np.array(["inside" if o else "outside" for o in self.outside], dtype=object)
        if not self.errors:
            self.errors = [None] * n

    @property
    def ok(self) -> np.ndarray:
        """``(N,)`` bool: the image got a usable prediction."""
        return np.asarray(self.status == "ok", dtype=bool)

    def to_dict(self) -> dict:
        """Strict-JSON dict, one entry per image (``json.dumps(..., allow_nan=False)`` works).

        An image whose output was not finite gets ``"status": "error"``, ``"label": null`` and
        ``"proba": null``; an unknown shift gets ``"shift": "unknown"`` and
        ``"outside_adapted_domain": null``.
        """
        out = []
        for i in range(len(self.label)):
            ok = self.status[i] == "ok"
            d: dict[str, Any] = {
                "status": str(self.status[i]),
                "label": self.class_names[int(self.label[i])] if ok else None,
                "proba": {n: float(p) for n, p in zip(self.class_names, self.proba[i], strict=True)} if ok else None,
                "shift": str(self.shift[i]),
                "shift_score": _finite_or_none(self.shift_score[i]),
                "outside_adapted_domain": None if self.shift[i] == "unknown" else bool(self.shift[i] == "outside"),
            }
            if not ok:
                d["error"] = self.errors[i]
            out.append(d)
        extra = {} if self.decision_threshold is None else {"decision_threshold": self.decision_threshold}
        return {"predictions": out, "threshold": self.threshold, **extra, **self.extra}


class Predictor:
    """A loaded model ready to predict on arrays, image files or DICOMs (see :func:`load`)."""

    def __init__(self, model: nn.Module, sidecar: dict, shift_mean: np.ndarray | None, shift_precision: np.ndarray | None,
                 device: torch.device, *, source: str = ""):
        self.model = model.eval().to(device)
        self.sidecar = sidecar
        self.source = source
        self.class_names: list[str] = list(sidecar.get("class_names", []))
        self.task: str = sidecar.get("task", "classification")
        self.device = device
        self._mean, self._prec = shift_mean, shift_precision
        shift = sidecar.get("shift") or {}
        self.threshold: float | None = shift.get("threshold")
        #: Binary classifier: class 1 when P(class 1) >= this (the file's ``decision_threshold``;
        #: 0.5 for a file that records none); None for multi-class and segmentation (argmax).
        self.decision_threshold: float | None = None
        if self.task == "classification" and len(self.class_names) == 2:
            recorded = sidecar.get("decision_threshold")
            self.decision_threshold = 0.5 if recorded is None else float(recorded)
        pre = sidecar.get("preprocessing", {})
        self.in_channels: int | None = pre.get("in_channels")
        self.image_size: tuple[int, int] | None = tuple(pre["image_size"]) if pre.get("image_size") else None
        self.min_size: int = int(pre.get("min_size", MIN_IMAGE_SIDE))
        self.reader: str = pre.get("reader", "shiftkit")
        self._pipeline: list | None = None
        if pre.get("pipeline"):
            from shiftkit.adapt.deploy.preprocessing import build_pipeline

            self._pipeline = build_pipeline(pre["pipeline"])

    # ------------------------------------------------------------------ inputs
    def _check_size(self, arr: np.ndarray, where: str) -> None:
        h, w = arr.shape[-2:]
        if min(h, w) < self.min_size:
            raise DataError(f"{where}: image of {h}x{w} pixels is smaller than the {self.min_size} px minimum "
                            "this model accepts (preprocessing.min_size); it would be mostly interpolation")

    def _run_pipeline(self, item: Any, where: str) -> np.ndarray:
        """Apply the recorded MONAI transforms, checking the size after the loading step."""
        from shiftkit.adapt.deploy.preprocessing import IMAGE_KEY

        d: Any = {IMAGE_KEY: item}
        for i, t in enumerate(self._pipeline or []):
            try:
                d = t(d)
            except Exception as exc:
                raise DataError(f"{where}: preprocessing step {i} ({type(t).__name__}) failed: "
                                f"{type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}") from None
            if i == 0:
                self._check_size(np.asarray(d[IMAGE_KEY]), where)
        x = d[IMAGE_KEY]
        arr = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
        return np.ascontiguousarray(arr, dtype=np.float32)

    def _to_chw(self, item: Any, where: str) -> np.ndarray:
        from shiftkit.adapt.deploy.preprocessing import starts_with_loader

        loads = self.reader == "monai" and self._pipeline is not None and starts_with_loader(
            self.sidecar["preprocessing"]["pipeline"])
        if isinstance(item, (str, os.PathLike)):
            if loads:
                arr = self._run_pipeline(str(item), where)
                return self._channels(arr, where)
            from shiftkit.datasets import read_image

            arr = read_image(item, channels=self.in_channels)
        else:
            if loads:
                raise DataError(f"{where}: this model was trained on files read by MONAI LoadImaged (its reader "
                                "orients and scales images in its own way); pass image file paths so the same "
                                "preprocessing is applied")
            from shiftkit.datasets.io import coerce_image

            arr = coerce_image(item, where=where)
        if not np.isfinite(arr).all():
            raise DataError(f"{where}: image holds NaN/Inf values")
        self._check_size(arr, where)
        if self._pipeline:
            arr = self._run_pipeline(torch.from_numpy(arr), where)
        return self._channels(arr, where)

    def _channels(self, arr: np.ndarray, where: str) -> np.ndarray:
        if arr.ndim != 3:
            raise DataError(f"{where}: preprocessing gave shape {arr.shape}, expected (C, H, W)")
        if not np.isfinite(arr).all():
            raise DataError(f"{where}: image holds NaN/Inf values after preprocessing")
        if self.in_channels and arr.shape[0] not in (self.in_channels, 1, 3):
            raise DataError(f"{where}: {arr.shape[0]} channels, the model expects {self.in_channels}")
        from shiftkit.datasets.io import convert_channels  # one RGB <-> grey rule for files and arrays

        return np.ascontiguousarray(convert_channels(arr, self.in_channels, where), dtype=np.float32)

    def _inputs(self, data: Any) -> list[np.ndarray]:
        if isinstance(data, (str, os.PathLike)):
            return [self._to_chw(data, str(data))]
        if isinstance(data, (np.ndarray, torch.Tensor)) and data.ndim == 4:
            if len(data) == 0:
                raise DataError("predict: empty batch (0 images)")
            return [self._to_chw(x, f"image {i}") for i, x in enumerate(data)]
        if isinstance(data, (np.ndarray, torch.Tensor)):
            return [self._to_chw(data, "image")]
        if isinstance(data, (list, tuple)):
            if len(data) == 0:
                raise DataError("predict: empty list (0 images)")
            return [self._to_chw(x, str(x) if isinstance(x, (str, os.PathLike)) else f"image {i}")
                    for i, x in enumerate(data)]
        raise DataError(f"predict: expected an array, a path or a list of them, got {type(data).__name__}")

    # ------------------------------------------------------------------ predict
    @torch.no_grad()
    def predict(self, data: Any) -> Prediction:
        """Predict on one image or many.

        Args:
            data: a path (PNG/JPEG/DICOM/NIfTI), an array/tensor ``(H, W)``, ``(C, H, W)`` or
                ``(N, C, H, W)`` with values in [0, 1] (integer arrays are scaled by their dtype's
                maximum), or a list of these. Files go through the preprocessing recorded with the
                model (a MONAI pipeline that reads files accepts paths only).

        Returns:
            :class:`Prediction`; an image whose output is not finite gets ``status "error"``
            and no label.

        Raises:
            DataError: an input that is not an image, holds NaN/Inf, is smaller than the
                model's ``min_size``, or has channels the model cannot take.
        """
        imgs = self._inputs(data)
        probas, masks, feats = [], [], []
        for img in imgs:
            x = torch.from_numpy(img)[None].to(self.device)
            h, w = x.shape[-2:]
            if self.image_size and (h, w) != tuple(self.image_size):
                x = F.interpolate(x, size=tuple(self.image_size), mode="bilinear", align_corners=False, antialias=True)
            if self.task == "segmentation":
                logits, fmap = self.model.forward_with_features(x)
                f = fmap.mean(dim=(2, 3))
                logits = F.interpolate(logits.float(), size=(h, w), mode="bilinear", align_corners=False)
                p = torch.softmax(logits, 1)
                m = p.argmax(1)[0]
                masks.append(m.cpu().numpy().astype(np.int64))
                probas.append(p[0].mean(dim=(1, 2)).cpu().numpy())
            else:
                f = self.model.encoder(x)
                probas.append(torch.softmax(self.model.head(f).float(), 1)[0].cpu().numpy())
            feats.append(f.float().cpu().numpy()[0])
        proba = np.stack(probas)
        feats_arr = np.stack(feats)
        n = len(imgs)
        finite = np.isfinite(proba).all(1) & np.isfinite(feats_arr).all(1)
        status = np.where(finite, "ok", "error").astype(object)
        errors: list[str | None] = [None if ok else "the network's output is not finite (NaN/Inf); no label given"
                                    for ok in finite]
        if self.decision_threshold is not None and proba.shape[1] == 2:
            label = np.where(finite, (np.nan_to_num(proba[:, 1], nan=-1.0) >= self.decision_threshold), -1)
        else:
            label = np.where(finite, np.nan_to_num(proba, nan=-1.0).argmax(1), -1)
        label = label.astype(np.int64)
        if self._mean is not None and self._prec is not None and self.threshold is not None:
            with np.errstate(invalid="ignore", over="ignore"):
                score = _mahalanobis(np.nan_to_num(feats_arr, nan=np.inf) if not finite.all() else feats_arr,
                                     self._mean, self._prec)
            score = np.where(finite & np.isfinite(score), score, np.nan)
            shift = np.where(np.isnan(score), "unknown", np.where(score > float(self.threshold), "outside", "inside"))
        else:
            score = np.full(n, np.nan)
            shift = np.full(n, "unknown")
        shift = shift.astype(object)
        if self.task == "segmentation":
            for i in np.flatnonzero(~finite):
                masks[i] = np.full_like(masks[i], -1)  # no class for a failed image
        return Prediction(
            proba=proba, label=label, shift_score=score, outside=np.asarray(shift == "outside", dtype=bool),
            class_names=self.class_names,
            mask=np.stack(masks) if masks and len({m.shape for m in masks}) == 1 else (masks or None),
            threshold=self.threshold, shift=shift, status=status, errors=errors,
            decision_threshold=self.decision_threshold,
        )

    def predict_proba(self, data: Any) -> np.ndarray:
        """``(N, K)`` probabilities only (rows of NaN where ``status`` is ``"error"``)."""
        return self.predict(data).proba

    def adapt(self, target_images: Any, *, method: str | None = None, **kwargs: Any) -> Any:
        """Adapt the loaded model to a new site's unlabelled images, with no source data.

        Delegates to :func:`shiftkit.adapt.methods.source_free.adapt_source_free` (a registered
        source-free method; default TENT, ``registry.DEFAULT_SOURCE_FREE``; ``kwargs`` go to
        the method), then re-centres the shift score on the new
        images. ``target_images``: anything :meth:`predict` accepts. Returns the fitted method
        (its ``warnings_`` say whether the stream looked label-correlated or collapsed).

        >>> p = load("models/dann"); p.adapt(new_site_images)  # doctest: +SKIP
        """
        from shiftkit.adapt.methods.source_free import adapt_source_free

        x = torch.from_numpy(np.stack(self._inputs(target_images)))
        if self.image_size and tuple(x.shape[-2:]) != tuple(self.image_size):
            x = F.interpolate(x, size=tuple(self.image_size), mode="bilinear", align_corners=False, antialias=True)
        kwargs.setdefault("device", str(self.device))
        fitted = adapt_source_free(self.model, x, method, **kwargs)
        self.model = fitted.model_.eval().to(self.device)  # methods adapt a copy
        if self._mean is not None and self.task == "classification" and len(x) >= 10:
            with torch.no_grad():
                feats = torch.cat([self.model.encoder(b.to(self.device)).float().cpu() for b in x.split(128)]).numpy()
            self._mean, self._prec, self.threshold = _shift_stats(feats)
        return fitted

    # ---- monitoring after deployment (implemented in shiftkit.adapt.deploy.monitoring) ----------
    def set_reference(self, data: Any, labels: Any = None, *, save: str | os.PathLike[str] | None = None,
                      **monitor_kwargs: Any) -> Any:
        """Fit drift monitoring and label-free estimates on reference images (and labels);
        ``save=model_dir`` keeps them next to the model. See :mod:`shiftkit.adapt.deploy.monitoring`."""
        from shiftkit.adapt.deploy.monitoring import set_reference

        return set_reference(self, data, labels, save=save, **monitor_kwargs)

    def load_reference(self, folder: str | os.PathLike[str], **monitor_kwargs: Any) -> Any:
        """Attach the reference saved in ``folder`` by ``set_reference(..., save=folder)``."""
        from shiftkit.adapt.deploy.monitoring import load_reference

        return load_reference(self, folder, **monitor_kwargs)

    def monitor(self, batch: Any, *, attributes: Any = None, online: bool = False) -> Any:
        """Drift verdict of one incoming batch (stateless): :class:`shiftkit.evaluation.monitor.BatchDrift`.
        For a stream with an online alarm use :meth:`stream`."""
        from shiftkit.adapt.deploy.monitoring import monitor

        return monitor(self, batch, attributes=attributes, online=online)

    def estimate_performance(self, batch: Any) -> dict:
        """Label-free accuracy estimates (ATC, DoC, CBPE) and the estimated class prior of a batch,
        each with an interval and a ``trusted`` verdict (stateless)."""
        from shiftkit.adapt.deploy.monitoring import estimate_performance

        return estimate_performance(self, batch)

    def check(self, batch: Any, *, attributes: Any = None) -> Any:
        """Stateless drift verdict + estimates of one batch: :class:`shiftkit.adapt.deploy.monitoring.BatchCheck`."""
        from shiftkit.adapt.deploy.monitoring import check

        return check(self, batch, attributes=attributes)

    def stream(self) -> Any:
        """A new :class:`shiftkit.adapt.deploy.monitoring.MonitorStream` (explicit online state: update, summary, reset)."""
        from shiftkit.adapt.deploy.monitoring import MonitorStream

        return MonitorStream(self)

