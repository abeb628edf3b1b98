"""``save_model``: write a fitted model as safetensors weights + a checked JSON sidecar
(:mod:`shiftkit.adapt.deploy.model_format`), and ``upgrade_model`` for trusted format-1 files."""

from __future__ import annotations

import copy
import hashlib
import json
import os
import platform
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import ValidationError
from torch import nn
from torch.utils.data import DataLoader, Dataset

from shiftkit.adapt.deploy.model_format import (
    FORMAT_VERSION,
    MIN_IMAGE_SIDE,
    ModelFileError,
    Sidecar,
    _check_safe,
    _consistency_problems,
    _paths,
    _read_weights,
    _schema_problems,
)
from shiftkit.adapt.deploy.predictor import _shift_stats
from shiftkit.adapt.models.backbones import SegModel, as_split_model
from shiftkit.adapt.training.trainer import predict_loader
from shiftkit.datasets.errors import ConfigError, DataError
from shiftkit.datasets.files import atomic_write_bytes

__all__ = ["save_model", "upgrade_model"]

_IDENTIFYING = ("patient", "name", "mrn", "accession", "birth", "dob", "ssn", "address", "phone", "study_uid",
                "studyinstanceuid", "seriesinstanceuid", "sopinstanceuid", "path", "file")



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


def _first_image(ds: Dataset) -> torch.Tensor:
    x = ds[0]["image"]
    return x if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))


def _raw_item(ds: Any) -> dict | None:
    """The first item as the dataset's transform receives it (for checking a recorded pipeline)."""
    data = getattr(ds, "data", None)
    if isinstance(data, Sequence) and len(data) and isinstance(data[0], dict):
        return dict(data[0])  # monai.data.Dataset and friends
    if hasattr(ds, "transform") and hasattr(ds, "__getitem__"):
        plain = copy.copy(ds)
        plain.transform = None
        item = plain[0]
        return dict(item) if isinstance(item, dict) else None
    return None


# shiftkit's own training-time wrappers and the attribute holding the wrapped dataset:
# augmentation, importance weights and the label-hiding target view do not happen at inference.
_WRAPPERS = {"AugmentedDataset": "dataset", "WeightedSource": "base", "TargetView": "base"}


def _unwrap_augmentation(ds: Any) -> Any:
    """The user's dataset under shiftkit's training-time wrappers (see ``_WRAPPERS``)."""
    while ds is not None and type(ds).__module__.startswith("shiftkit.") and \
            _WRAPPERS.get(type(ds).__name__) in vars(ds):
        ds = vars(ds)[_WRAPPERS[type(ds).__name__]]
    return ds


def _describe_preprocessing(method_or_model: Any, preprocessing: Any, src: Any, tds: Any) -> dict:
    """The ``preprocessing`` reader/pipeline entries for the sidecar (see :class:`PreprocessingSpec`)."""
    from shiftkit.adapt.deploy.preprocessing import describe_pipeline, pipeline_of

    if preprocessing == "none":
        return {"reader": "arrays", "pipeline": None}
    if preprocessing != "auto":  # an explicit pipeline: a Compose or a list of transforms
        inner = getattr(preprocessing, "transforms", preprocessing)
        desc = describe_pipeline(list(inner) if isinstance(inner, (list, tuple)) else [inner])
    else:
        from shiftkit.datasets import ManifestDataset

        ds = _unwrap_augmentation(src if src is not None else tds)
        tds = _unwrap_augmentation(tds)
        transforms = pipeline_of(ds) if ds is not None else None
        if not transforms:
            if isinstance(ds, ManifestDataset) and ds.reader is not None:
                raise ConfigError("save_model", ["the training data was read by a custom reader function, which "
                                                 "cannot be recorded; pass preprocessing=... (a MONAI pipeline that "
                                                 "reads the files the same way) or preprocessing='none'"])
            return {"reader": "shiftkit" if ds is None or isinstance(ds, ManifestDataset) else "arrays",
                    "pipeline": None}
        desc = describe_pipeline(transforms, _raw_item(ds))
        if tds is not None and tds is not ds and pipeline_of(tds):
            other = describe_pipeline(pipeline_of(tds))
            if other["transforms"] != desc["transforms"]:
                raise ConfigError("save_model", [
                    "source and target data went through different deterministic preprocessing; pass "
                    "preprocessing=... with the pipeline new images should go through"])
    from shiftkit.adapt.deploy.preprocessing import starts_with_loader

    return {"reader": "monai" if starts_with_loader(desc) else "shiftkit", "pipeline": desc}


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
    preprocessing: Any = "auto",
    min_size: int | None = None,
    decision_threshold: float | None = None,
) -> tuple[Path, Path]:
    """Save weights (safetensors) and a JSON sidecar; returns ``(weights_path, sidecar_path)``.

    The sidecar holds the sha256 of the weights file, and a copy of the sidecar is stored in
    the weights file's metadata: :func:`load` refuses a weights file changed after saving and a
    sidecar edited after saving (e.g. swapped class names), naming the file and the key.

    Args:
        method_or_model: a fitted method (``.model_``) or a built-in backbone model (its
            ``.arch`` says how to rebuild it). Custom modules save too; :func:`load` then
            needs ``model=`` to rebuild them.
        path: ``dir/`` (writes ``model.safetensors`` + ``model.json``) or ``name.safetensors``.
        target: the unlabelled target images the model was adapted on; their feature mean
            and covariance are stored for the shift score. ``None`` = the method's fit target;
            without any, predictions say the shift is ``"unknown"``.
        class_names: ``K`` distinct names; default ``"class_0"`` ...
        image_size: ``(H, W)`` inputs are resized to; default the training images' size.
        in_channels: channels the model expects; default from the architecture.
        training_summary: extra JSON-able summary (counts, domain names); keys that look like
            patient identifiers are refused.
        arch: architecture dict overriding ``model.arch``.
        shift_quantile_threshold: override the flag threshold (default: 99th percentile of the
            target images' own held-out distances).
        preprocessing: ``"auto"`` records what the method's training data went through (a MONAI
            dictionary pipeline in ``dataset.transform``: deterministic transforms kept,
            random augmentation dropped; else shiftkit's reader); a MONAI ``Compose`` or list
            of dictionary transforms records that pipeline instead; ``"none"`` records nothing
            (inputs used as given). A pipeline that cannot be recorded raises
            :class:`~shiftkit.adapt.deploy.preprocessing.PreprocessingError` naming the transform.
        min_size: smallest input side (pixels) :meth:`Predictor.predict` accepts; default
            ``min(16, image side)``.
        decision_threshold: binary classifier: the threshold on P(class 1) of the predicted
            labels, in (0, 1); default the method's ``decision_threshold_`` (chosen from source
            data in a run), else none recorded (the predictor then uses 0.5).

    Raises:
        ConfigError: wrong class names, identifiers in the summary, unrecordable preprocessing.
        DataError: non-finite weights (a diverged model is not saved).
    """
    from safetensors.torch import save as st_save

    from shiftkit.adapt.training.data import as_dataset

    model = getattr(method_or_model, "model_", None) or method_or_model
    if not isinstance(model, nn.Module):
        raise ConfigError("save_model", [f"expected a fitted method or an nn.Module, got {type(method_or_model).__name__}"])
    model = as_split_model(model)
    arch = dict(arch or getattr(model, "arch", {}) or {"kind": "custom"})
    k = int(arch.get("num_classes", 0)) or None
    if target is None:
        target = getattr(method_or_model, "fit_target_", None)
    tds = as_dataset(target, name="target") if target is not None else None
    src = getattr(method_or_model, "fit_source_", None)

    tensors = {f"model.{n}": t.detach().cpu().contiguous() for n, t in model.state_dict().items()}
    bad = [n for n, t in tensors.items() if t.is_floating_point() and not torch.isfinite(t).all()]
    if bad:
        raise DataError(f"save_model: the model holds NaN/Inf values in {len(bad)} tensor(s) (e.g. {bad[0]}); "
                        "training diverged, refusing to save it")
    shift: dict[str, Any] | None = None
    if tds is not None:
        device = next(model.parameters()).device
        res = predict_loader(model, DataLoader(tds, batch_size=64, shuffle=False), device, want=("features",))
        if not np.isfinite(res["features"]).all():
            raise DataError("save_model: the model gives NaN/Inf features on the target images; refusing to save it")
        mean, prec, thr = _shift_stats(res["features"])
        tensors["shift.mean"] = torch.from_numpy(mean)
        tensors["shift.precision"] = torch.from_numpy(prec)
        shift = {"method": "mahalanobis-ledoit-wolf", "threshold": float(shift_quantile_threshold or thr),
                 "n_target": len(tds), "quantile": 0.99}
    ref = tds if tds is not None else src
    if ref is not None:
        first = _first_image(ref)
        if image_size is None and first.dim() == 3:
            image_size = (int(first.shape[1]), int(first.shape[2]))
        if in_channels is None and first.dim() == 3:
            in_channels = int(first.shape[0])
    if in_channels is None:
        in_channels = int(arch.get("in_channels", 0)) or None
    if k is None:
        with torch.no_grad():
            for mod in reversed(list(model.modules())):
                if isinstance(mod, (nn.Linear, nn.Conv2d)):
                    k = int(getattr(mod, "out_features", getattr(mod, "out_channels", 0)))
                    break
    names = [str(n) for n in class_names] if class_names is not None else [f"class_{i}" for i in range(k or 0)]
    problems = []
    if k is not None and len(names) != k:
        problems.append(f"class_names has {len(names)} names for {k} classes")
    if len(set(names)) != len(names):
        problems.append(f"class_names holds duplicates: {names}")
    if problems:
        raise ConfigError("save_model", problems)

    summary: dict[str, Any] = {}
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

    side = min(image_size) if image_size else MIN_IMAGE_SIDE
    pre = {"in_channels": in_channels, "image_size": list(image_size) if image_size else None,
           "min_size": int(min_size) if min_size is not None else min(MIN_IMAGE_SIDE, side),
           "value_range": [0.0, 1.0], "resize": "bilinear",
           **_describe_preprocessing(method_or_model, preprocessing, src, tds)}
    if arch.get("normalize"):
        pre["normalize"] = {**arch["normalize"], "applied_by": "network"}
    sidecar: dict[str, Any] = {
        "format": "shiftkit-model",
        "format_version": FORMAT_VERSION,
        "architecture": arch,
        "task": "segmentation" if isinstance(model, SegModel) else "classification",
        "preprocessing": pre,
        "class_names": names,
        "versions": _versions(),
        "training_data": summary,
        "shift": shift,
        "feature_dim": int(getattr(model, "feature_dim", -1)),
    }
    if decision_threshold is None:
        decision_threshold = getattr(method_or_model, "decision_threshold_", None)
    if decision_threshold is not None:  # only when there is one: files without it read as 0.5
        sidecar["decision_threshold"] = float(decision_threshold)
    try:  # the same checks load() makes, so a file that would not load is never written
        checked = Sidecar.model_validate_json(json.dumps({**sidecar, "weights_sha256": "0" * 64}))
    except ValidationError as exc:
        raise ConfigError("save_model", _schema_problems(exc)) from None
    if _consistency_problems(checked):
        raise ConfigError("save_model", _consistency_problems(checked))
    wpath, jpath = _paths(path)
    if Path(path).suffix == "" and not Path(path).exists():
        wpath, jpath = Path(path) / "model.safetensors", Path(path) / "model.json"
    blob = st_save(tensors, metadata={"format": "shiftkit-model",
                                      "shiftkit.sidecar": json.dumps(sidecar, sort_keys=True)})
    sidecar["weights_sha256"] = hashlib.sha256(blob).hexdigest()
    atomic_write_bytes(wpath, blob)
    atomic_write_bytes(jpath, json.dumps(sidecar, indent=2, sort_keys=True, allow_nan=False).encode())
    return wpath, jpath


def upgrade_model(path: str | os.PathLike[str], *, model: nn.Module | None = None) -> tuple[Path, Path]:
    """Rewrite a format-1 model (no weights hash) as format 2, in place; only for files you trust.

    The weights are read with safetensors (never unpickled), the old sidecar is mapped onto the
    format-2 schema and validated, and both files are rewritten atomically.
    """
    from safetensors.torch import save as st_save

    wpath, jpath = _paths(path)
    _check_safe(wpath)
    try:
        old = json.loads(jpath.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelFileError(jpath, [f"unreadable sidecar JSON ({exc})"]) from None
    if not isinstance(old, dict) or old.get("format_version") != 1:
        raise ModelFileError(jpath, ["format_version: only format 1 files need upgrading"])
    tensors, _ = _read_weights(wpath)
    new = {k: v for k, v in old.items() if k in Sidecar.model_fields}
    new["format_version"] = FORMAT_VERSION
    pre = dict(old.get("preprocessing") or {})
    size = pre.get("image_size")
    pre.setdefault("min_size", min(MIN_IMAGE_SIDE, min(size)) if size else MIN_IMAGE_SIDE)
    pre.setdefault("reader", "shiftkit")
    pre.setdefault("pipeline", None)
    new["preprocessing"] = pre
    try:
        spec = Sidecar.model_validate_json(json.dumps({**new, "weights_sha256": "0" * 64}))
    except ValidationError as exc:
        raise ModelFileError(jpath, _schema_problems(exc)) from None
    if _consistency_problems(spec):
        raise ModelFileError(jpath, _consistency_problems(spec))
    blob = st_save(tensors, metadata={"format": "shiftkit-model", "shiftkit.sidecar": json.dumps(new, sort_keys=True)})
    new["weights_sha256"] = hashlib.sha256(blob).hexdigest()
    atomic_write_bytes(wpath, blob)
    atomic_write_bytes(jpath, json.dumps(new, indent=2, sort_keys=True, allow_nan=False).encode())
    from shiftkit.adapt.deploy.loading import load

    load(wpath, model=model)  # the upgraded files pass every check
    return wpath, jpath
