"""Saved models for clinical prototypes: ``save_model`` and ``load(path) -> Predictor``.

On disk a model is two files side by side:

* ``<stem>.safetensors``: the weights, plus the adapted-on target feature statistics
  (``shift.mean`` ``(D,)`` and ``shift.precision`` ``(D, D)``);
* ``<stem>.json``: the sidecar: format version, architecture (how to rebuild the network),
  preprocessing (input size and channels), class names, library versions, a training-data
  summary (counts and domain names only, never patient identifiers) and the shift threshold.

Loading never unpickles: weights are read with ``safetensors`` and the sidecar with ``json``.
A pickle (``.pt``/``.pth``/``.pkl``) handed to :func:`load` is refused before it is opened
by anything that could run code. :func:`load_weights` also accepts PyTorch state-dict files
but only through ``torch.load(weights_only=True)``, which refuses pickled code.

Shift score: the Mahalanobis distance of an image's encoder features to the target
features the model was adapted on (Ledoit-Wolf shrunk covariance), and a flag when it
exceeds the 99th percentile of those target images' own distances.
"""

from __future__ import annotations

import json
import os
import platform
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from shiftkit.datasets.errors import ConfigError, DataError, ShiftkitError

from .backbones import SegModel, as_split_model, build_classifier, build_mlp, build_segmenter
from .trainer import predict_loader

__all__ = ["FORMAT_VERSION", "Prediction", "Predictor", "UnsafeModelFileError", "load", "load_weights", "save_model"]

FORMAT_VERSION = 1
_PICKLE_SUFFIXES = (".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".bin")
# Keys a training summary may not carry: anything that could identify a patient.
_IDENTIFYING = ("patient", "name", "mrn", "accession", "birth", "dob", "ssn", "address", "phone", "study_uid",
                "studyinstanceuid", "seriesinstanceuid", "sopinstanceuid", "path", "file")


class UnsafeModelFileError(ShiftkitError, ValueError):
    """The file is not a safetensors model (e.g. a pickle); it was not deserialised."""


# --------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------


def _paths(path: str | os.PathLike[str]) -> tuple[Path, Path]:
    p = Path(path)
    if p.is_dir():
        return p / "model.safetensors", p / "model.json"
    if p.suffix == ".json":
        return p.with_suffix(".safetensors"), p
    if p.suffix == ".safetensors":
        return p, p.with_suffix(".json")
    return p, p.with_suffix(".json")


def _atomic_write_bytes(data: bytes, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _is_safetensors(path: Path) -> bool:
    """Header check: 8-byte little-endian length, then a JSON object (no code can run)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(9)
            size = int.from_bytes(head[:8], "little") if len(head) >= 8 else 0
            return len(head) == 9 and head[8:9] == b"{" and 0 < size < os.path.getsize(path)
    except OSError:
        return False


def _check_safe(path: Path) -> None:
    if not path.exists():
        raise DataError(f"{path}: model file not found")
    if not _is_safetensors(path):
        with open(path, "rb") as fh:
            first = fh.read(1)
        kind = "a pickle" if path.suffix in _PICKLE_SUFFIXES or first == b"\x80" else "not safetensors"
        raise UnsafeModelFileError(
            f"{path}: refused ({kind}); shiftkit loads models only from safetensors + JSON sidecar and never "
            "unpickles files. Convert trusted checkpoints with shiftkit.adapt.save_model"
        )


def load_weights(model: nn.Module, path: str | os.PathLike[str], *, strict: bool = True, key: str | None = None) -> nn.Module:
    """Load a source checkpoint from disk into ``model`` (state dicts only, no code).

    Accepts a ``.safetensors`` file, a PyTorch state-dict file read with
    ``torch.load(weights_only=True)`` (pickled objects other than tensors are refused), or a
    checkpoint written by :func:`shiftkit.adapt.trainer.train` (``modules.model`` is used).
    ``key`` selects a sub-dict (e.g. ``"state_dict"``).
    """
    p = Path(path)
    if not p.exists():
        raise DataError(f"{p}: checkpoint not found")
    if _is_safetensors(p):
        from safetensors.torch import load_file

        state: Any = load_file(str(p))
    else:
        try:
            state = torch.load(p, map_location="cpu", weights_only=True)
        except Exception as exc:  # UnpicklingError for code-carrying pickles
            raise UnsafeModelFileError(f"{p}: refused: not a plain state dict ({type(exc).__name__}: "
                                       f"{str(exc).splitlines()[0][:200]})") from None
    if key is not None:
        state = state[key]
    elif isinstance(state, dict) and "modules" in state and "model" in state.get("modules", {}):
        state = state["modules"]["model"]
    elif isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    state = {k[len("model."):] if k.startswith("model.") and k not in model.state_dict() else k: v
             for k, v in state.items() if not k.startswith("shift.")}
    try:
        model.load_state_dict(state, strict=strict)
    except RuntimeError as exc:
        raise DataError(f"{p}: weights do not fit the model: {str(exc)[:500]}") from None
    return model


# --------------------------------------------------------------------------------------
# Shift statistics
# --------------------------------------------------------------------------------------


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


def _versions() -> dict[str, str]:
    import monai

    try:
        from importlib.metadata import version

        sk = version("shiftkit")
    except Exception:  # pragma: no cover - source checkout without install
        sk = "unknown"
    return {"shiftkit": sk, "torch": torch.__version__.split("+")[0], "monai": monai.__version__,
            "python": platform.python_version()}


def _check_summary(summary: dict) -> dict:
    bad = [k for k in _walk_keys(summary) if any(t in k.lower().replace(" ", "") for t in _IDENTIFYING)]
    if bad:
        raise ConfigError("save_model", [f"training_summary key {k!r} looks like a patient identifier; "
                                         "store counts and domain names only" for k in bad])
    return summary


def _walk_keys(d: Any) -> list[str]:
    out: list[str] = []
    if isinstance(d, dict):
        for k, v in d.items():
            out.append(str(k))
            out.extend(_walk_keys(v))
    elif isinstance(d, (list, tuple)):
        for v in d:
            out.extend(_walk_keys(v))
    return out


def _dataset_summary(ds: Dataset | None) -> dict | None:
    if ds is None:
        return None
    first = ds[0]
    return {"n_images": len(ds), "domain": str(first.get("domain", "")) if isinstance(first, dict) else ""}


# --------------------------------------------------------------------------------------
# Save
# --------------------------------------------------------------------------------------


def save_model(
    method_or_model: Any,
    path: str | os.PathLike[str],
    *,
    target: Dataset | np.ndarray | torch.Tensor | None = None,
    class_names: list[str] | None = None,
    image_size: tuple[int, int] | None = None,
    in_channels: int | None = None,
    training_summary: dict | None = None,
    arch: dict | None = None,
    shift_quantile_threshold: float | None = None,
) -> tuple[Path, Path]:
    """Save weights (safetensors) and a JSON sidecar; returns ``(weights_path, sidecar_path)``.

    Args:
        method_or_model: a fitted method (``.model_``) or a built-in backbone model (its
            ``.arch`` says how to rebuild it). Custom modules save too; :func:`load` then
            needs ``model=`` to rebuild them.
        path: ``dir/`` (writes ``model.safetensors`` + ``model.json``) or ``name.safetensors``.
        target: the unlabelled target images the model was adapted on; their feature mean
            and covariance are stored for the shift score. ``None`` = the method's fit target.
        class_names: ``K`` names; default ``"class_0"`` ...
        image_size: ``(H, W)`` inputs are resized to; default the target/fit images' size.
        in_channels: channels the model expects; default from the architecture.
        training_summary: extra JSON-able summary (counts, domain names); keys that look like
            patient identifiers are refused.
        arch: architecture dict overriding ``model.arch``.
        shift_quantile_threshold: override the flag threshold (default: 99th percentile of the
            target images' own distances).
    """
    from safetensors.torch import save as st_save

    from .data import as_dataset

    model = getattr(method_or_model, "model_", None) or method_or_model
    if not isinstance(model, nn.Module):
        raise ConfigError("save_model", [f"expected a fitted method or an nn.Module, got {type(method_or_model).__name__}"])
    model = as_split_model(model)
    arch = dict(arch or getattr(model, "arch", {}) or {"kind": "custom"})
    k = int(arch.get("num_classes", 0)) or None
    if target is None:
        target = getattr(method_or_model, "fit_target_", None)
    tds = as_dataset(target, name="target") if target is not None else None

    tensors = {f"model.{n}": t.detach().cpu().contiguous() for n, t in model.state_dict().items()}
    shift: dict[str, Any] | None = None
    if tds is not None:
        device = next(model.parameters()).device
        res = predict_loader(model, DataLoader(tds, batch_size=64, shuffle=False), device, want=("features",))
        mean, prec, thr = _shift_stats(res["features"])
        tensors["shift.mean"] = torch.from_numpy(mean)
        tensors["shift.precision"] = torch.from_numpy(prec)
        shift = {"method": "mahalanobis-ledoit-wolf", "threshold": float(shift_quantile_threshold or thr),
                 "n_target": len(tds), "quantile": 0.99}
        first = tds[0]["image"]
        if image_size is None and first.dim() == 3:
            image_size = (int(first.shape[1]), int(first.shape[2]))
        if in_channels is None:
            in_channels = int(first.shape[0])
    if in_channels is None:
        in_channels = int(arch.get("in_channels", arch.get("in_features", 0))) or None
    if k is None:
        with torch.no_grad():
            for mod in reversed(list(model.modules())):
                if isinstance(mod, (nn.Linear, nn.Conv2d)):
                    k = int(getattr(mod, "out_features", getattr(mod, "out_channels", 0)))
                    break
    names = list(class_names) if class_names is not None else [f"class_{i}" for i in range(k or 0)]
    if k is not None and len(names) != k:
        raise ConfigError("save_model", [f"class_names has {len(names)} names for {k} classes"])

    summary: dict[str, Any] = {}
    src = getattr(method_or_model, "fit_source_", None)
    if src is not None:
        summary["source"] = _dataset_summary(src)
    if tds is not None:
        summary["target"] = _dataset_summary(tds)
    hist = getattr(method_or_model, "history_", None)
    if hist:
        summary["epochs"] = len(hist)
        summary["method"] = type(method_or_model).__name__
    if training_summary:
        summary.update(_check_summary(dict(training_summary)))

    sidecar = {
        "format": "shiftkit-model",
        "format_version": FORMAT_VERSION,
        "architecture": arch,
        "task": "segmentation" if isinstance(model, SegModel) else "classification",
        "preprocessing": {"in_channels": in_channels, "image_size": list(image_size) if image_size else None,
                          "value_range": [0.0, 1.0], "resize": "bilinear"},
        "class_names": names,
        "versions": _versions(),
        "training_data": summary,
        "shift": shift,
        "feature_dim": int(getattr(model, "feature_dim", -1)),
    }
    wpath, jpath = _paths(path)
    if Path(path).suffix == "" and not Path(path).exists():
        wpath, jpath = Path(path) / "model.safetensors", Path(path) / "model.json"
    _atomic_write_bytes(st_save(tensors, metadata={"format": "shiftkit-model"}), wpath)
    _atomic_write_bytes(json.dumps(sidecar, indent=2, sort_keys=True).encode(), jpath)
    return wpath, jpath


# --------------------------------------------------------------------------------------
# Load and predict
# --------------------------------------------------------------------------------------


@dataclass
class Prediction:
    """Per-image outputs of :meth:`Predictor.predict`.

    Attributes:
        proba: ``(N, K)`` class probabilities (segmentation: per-image mean class share).
        label: ``(N,)`` predicted class index.
        mask: ``(N, H, W)`` int64 predicted masks at input resolution (segmentation only).
        shift_score: ``(N,)`` Mahalanobis distance of the features to the adapted-on target.
        outside: ``(N,)`` bool, ``shift_score > threshold``: the image lies outside what the
            model was adapted to; treat its prediction with caution.
        class_names: the ``K`` names.
    """

    proba: np.ndarray
    label: np.ndarray
    shift_score: np.ndarray
    outside: np.ndarray
    class_names: list[str]
    mask: np.ndarray | None = None
    threshold: float | None = None
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        """JSON-able dict, one entry per image."""
        out = []
        for i in range(len(self.label)):
            d = {"proba": {n: float(p) for n, p in zip(self.class_names, self.proba[i], strict=True)},
                 "label": self.class_names[int(self.label[i])], "shift_score": float(self.shift_score[i]),
                 "outside_adapted_domain": bool(self.outside[i])}
            out.append(d)
        return {"predictions": out, "threshold": self.threshold}


class Predictor:
    """A loaded model ready to predict on arrays, image files or DICOMs (see :func:`load`)."""

    def __init__(self, model: nn.Module, sidecar: dict, shift_mean: np.ndarray | None, shift_precision: np.ndarray | None,
                 device: torch.device):
        self.model = model.eval().to(device)
        self.sidecar = sidecar
        self.class_names: list[str] = list(sidecar.get("class_names", []))
        self.task: str = sidecar.get("task", "classification")
        self.device = device
        self._mean, self._prec = shift_mean, shift_precision
        shift = sidecar.get("shift") or {}
        self.threshold: float | None = shift.get("threshold")
        pre = sidecar.get("preprocessing", {})
        self.in_channels: int | None = pre.get("in_channels")
        self.image_size: tuple[int, int] | None = tuple(pre["image_size"]) if pre.get("image_size") else None

    def _to_chw(self, item: Any, where: str) -> np.ndarray:
        if isinstance(item, (str, os.PathLike)):
            from shiftkit.datasets import read_image

            return read_image(item, channels=self.in_channels)
        arr = item.detach().cpu().numpy() if isinstance(item, torch.Tensor) else np.asarray(item)
        if np.issubdtype(arr.dtype, np.integer):
            arr = arr.astype(np.float32) / float(np.iinfo(arr.dtype).max)  # 8/16-bit -> [0, 1]
        arr = arr.astype(np.float32)
        if arr.ndim == 2:
            arr = arr[None]
        if arr.ndim != 3:
            raise DataError(f"{where}: expected an image (H, W) or (C, H, W), got shape {arr.shape}")
        if not np.isfinite(arr).all():
            raise DataError(f"{where}: image holds NaN/Inf values")
        if self.in_channels and arr.shape[0] != self.in_channels:
            if self.in_channels == 1 and arr.shape[0] == 3:
                arr = (0.299 * arr[0] + 0.587 * arr[1] + 0.114 * arr[2])[None]
            elif self.in_channels == 3 and arr.shape[0] == 1:
                arr = np.repeat(arr, 3, 0)
            else:
                raise DataError(f"{where}: {arr.shape[0]} channels, the model expects {self.in_channels}")
        return arr

    def _inputs(self, data: Any) -> list[np.ndarray]:
        if isinstance(data, (str, os.PathLike)):
            return [self._to_chw(data, str(data))]
        if isinstance(data, (np.ndarray, torch.Tensor)) and data.ndim == 4:
            return [self._to_chw(x, f"image {i}") for i, x in enumerate(data)]
        if isinstance(data, (np.ndarray, torch.Tensor)):
            return [self._to_chw(data, "image")]
        if isinstance(data, (list, tuple)):
            return [self._to_chw(x, str(x) if isinstance(x, (str, os.PathLike)) else f"image {i}")
                    for i, x in enumerate(data)]
        raise DataError(f"predict: expected an array, a path or a list of them, got {type(data).__name__}")

    @torch.no_grad()
    def predict(self, data: Any) -> Prediction:
        """Predict on one image or many.

        Args:
            data: a path (PNG/JPEG/DICOM/NIfTI, read by ``shiftkit.datasets.read_image``), an
                array/tensor ``(H, W)``, ``(C, H, W)`` or ``(N, C, H, W)`` with values in [0, 1]
                (integer arrays are scaled by their dtype's maximum), or a list of these.

        Returns:
            :class:`Prediction`.
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
        if self._mean is not None and self._prec is not None:
            score = _mahalanobis(feats_arr, self._mean, self._prec)
            outside = score > float(self.threshold) if self.threshold is not None else np.zeros(len(score), bool)
        else:
            score = np.full(len(imgs), np.nan)
            outside = np.zeros(len(imgs), bool)
        return Prediction(
            proba=proba, label=proba.argmax(1), shift_score=score, outside=outside, class_names=self.class_names,
            mask=np.stack(masks) if masks and len({m.shape for m in masks}) == 1 else (masks or None),
            threshold=self.threshold,
        )

    def predict_proba(self, data: Any) -> np.ndarray:
        """``(N, K)`` probabilities only."""
        return self.predict(data).proba

    # ---- monitoring after deployment (implemented in shiftkit.adapt.monitoring) ----------
    def set_reference(self, data: Any, labels: Any = None, *, save: str | os.PathLike[str] | None = None,
                      **monitor_kwargs: Any) -> Any:
        """Fit drift monitoring and label-free estimates on reference images (and labels);
        ``save=model_dir`` keeps them next to the model. See :mod:`shiftkit.adapt.monitoring`."""
        from .monitoring import set_reference

        return set_reference(self, data, labels, save=save, **monitor_kwargs)

    def load_reference(self, folder: str | os.PathLike[str], **monitor_kwargs: Any) -> Any:
        """Attach the reference saved in ``folder`` by ``set_reference(..., save=folder)``."""
        from .monitoring import load_reference

        return load_reference(self, folder, **monitor_kwargs)

    def monitor(self, batch: Any, *, attributes: Any = None, online: bool = True) -> Any:
        """Drift verdict of one incoming batch: :class:`shiftkit.evaluation.monitor.BatchDrift`."""
        from .monitoring import monitor

        return monitor(self, batch, attributes=attributes, online=online)

    def estimate_performance(self, batch: Any) -> dict:
        """Label-free accuracy estimates (ATC, DoC, CBPE) and the estimated class prior of a batch."""
        from .monitoring import estimate_performance

        return estimate_performance(self, batch)


def _rebuild(arch: dict) -> nn.Module:
    kind = arch.get("kind")
    if kind == "classifier":
        return build_classifier(arch["name"], int(arch["in_channels"]), int(arch["num_classes"]),
                                spatial_dims=int(arch.get("spatial_dims", 2)), dropout=float(arch.get("dropout", 0.0)))
    if kind == "segmenter":
        return build_segmenter(arch["name"], int(arch["in_channels"]), int(arch["num_classes"]),
                               spatial_dims=int(arch.get("spatial_dims", 2)))
    if kind == "mlp":
        return build_mlp(int(arch["in_features"]), list(arch["hidden"]), int(arch["num_classes"]),
                         activation=str(arch.get("activation", "relu")))
    raise ConfigError("load", [f"architecture {arch!r} is not built in; pass model= to rebuild it"])


def load(path: str | os.PathLike[str], *, model: nn.Module | None = None, device: str | None = None) -> Predictor:
    """Load a model saved by :func:`save_model` (never unpickles).

    Args:
        path: the model directory, its ``.safetensors`` file or its ``.json`` sidecar.
        model: an un-trained instance of the architecture, needed only for custom modules.
        device: ``"cpu"`` (default) or ``"cuda"``.

    Raises:
        UnsafeModelFileError: the weights file is not safetensors (e.g. a pickle).
        DataError: missing/invalid sidecar or weights that do not fit.
    """
    from safetensors.torch import load_file

    wpath, jpath = _paths(path)
    _check_safe(wpath)  # before anything else touches the file
    if not jpath.exists():
        raise DataError(f"{jpath}: sidecar JSON not found next to {wpath.name}")
    try:
        sidecar = json.loads(jpath.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise DataError(f"{jpath}: unreadable sidecar ({exc})") from None
    if sidecar.get("format") != "shiftkit-model":
        raise DataError(f"{jpath}: not a shiftkit model sidecar")
    if int(sidecar.get("format_version", 0)) > FORMAT_VERSION:
        raise DataError(f"{jpath}: format version {sidecar['format_version']} is newer than this shiftkit "
                        f"({FORMAT_VERSION}); upgrade shiftkit")
    net = as_split_model(model) if model is not None else _rebuild(sidecar.get("architecture", {}))
    tensors = load_file(str(wpath))
    state = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise DataError(f"{wpath}: weights do not fit the architecture in {jpath.name}: {str(exc)[:400]}") from None
    mean = tensors["shift.mean"].numpy() if "shift.mean" in tensors else None
    prec = tensors["shift.precision"].numpy() if "shift.precision" in tensors else None
    return Predictor(net, sidecar, mean, prec, torch.device(device or "cpu"))
