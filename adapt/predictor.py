"""Saved models for clinical prototypes: ``save_model`` and ``load(path) -> Predictor``.

On disk a model is two files side by side:

* ``<stem>.safetensors``: the weights, plus the adapted-on target feature statistics
  (``shift.mean`` ``(D,)`` and ``shift.precision`` ``(D, D)``);
* ``<stem>.json``: the sidecar (:class:`Sidecar`, format version 2): the sha256 of the weights
  file, architecture (how to rebuild the network), preprocessing (input size, channels, minimum
  size, and the reader or MONAI pipeline the training data went through, see
  :mod:`shiftkit.adapt.preprocessing`), class names, library versions, a training-data summary
  (counts and domain names only, never patient identifiers) and the shift threshold. A copy of
  the sidecar (without the hash) is stored in the weights file's metadata.

:func:`load` validates the sidecar completely, verifies the hash, compares the sidecar with the
copy bound to the weights, and refuses non-finite weights, so a damaged or edited model raises
:class:`ModelFileError` naming the file and key instead of answering. Predictions carry a status
(``"error"``, with no label, when the output is not finite) and a three-valued shift flag
(``"unknown"`` when the model stores no target statistics); ``to_dict()`` is strict JSON.

Loading never unpickles: weights are read with ``safetensors`` and the sidecar with ``json``.
A pickle (``.pt``/``.pth``/``.pkl``) handed to :func:`load` is refused before it is opened
by anything that could run code. :func:`load_weights` also accepts PyTorch state-dict files
but only through ``torch.load(weights_only=True)``, which refuses pickled code.

Shift score: the Mahalanobis distance of an image's encoder features to the target
features the model was adapted on (Ledoit-Wolf shrunk covariance),
``d(x) = sqrt((f(x) - mu)^T P (f(x) - mu))``, and the flag ``"outside"`` when it exceeds the
99th percentile of those target images' own held-out distances.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import platform
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from torch import nn
from torch.utils.data import DataLoader, Dataset

from shiftkit.datasets.errors import ConfigError, DataError
from shiftkit.datasets.files import atomic_write_bytes

from .backbones import SegModel, as_split_model, build_classifier, build_mlp, build_segmenter
from .checkpoint import UnsafeModelFileError, is_safetensors, load_into
from .trainer import predict_loader

__all__ = ["FORMAT_VERSION", "MIN_IMAGE_SIDE", "ModelFileError", "Prediction", "Predictor", "Sidecar",
           "UnsafeModelFileError", "load", "load_weights", "save_model", "upgrade_model"]

# 2: weights sha256, a copy of the sidecar inside the weights file, preprocessing reader/pipeline/min_size.
FORMAT_VERSION = 2
# Smallest image side predict() accepts by default: below it an upsampled input is mostly interpolation.
MIN_IMAGE_SIDE = 16
_PICKLE_SUFFIXES = (".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".bin")
# Keys a training summary may not carry: anything that could identify a patient.
_IDENTIFYING = ("patient", "name", "mrn", "accession", "birth", "dob", "ssn", "address", "phone", "study_uid",
                "studyinstanceuid", "seriesinstanceuid", "sopinstanceuid", "path", "file")


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
    atomic_write_bytes(path, data)  # the one atomic writer (shiftkit.datasets.files)


_is_safetensors = is_safetensors  # one header check (shiftkit.adapt.checkpoint)


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
    load_into(model, path, strict=strict, key=key)  # the one weight loader (shiftkit.adapt.checkpoint)
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
# Sidecar schema (format version 2)
# --------------------------------------------------------------------------------------


class ModelFileError(DataError):
    """A saved model is damaged, was edited after saving, or is inconsistent.

    ``path`` names the file, ``problems`` lists every problem (each names its key).
    """

    def __init__(self, path: object, problems: list[str]):
        self.path = str(path)
        self.problems = list(problems)
        shown = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"{self.path}: {len(self.problems)} problem(s)\n{shown}")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class ArchitectureSpec(BaseModel):
    """How to rebuild the network; builder-specific keys (dropout, hidden, ...) are kept."""

    model_config = ConfigDict(extra="allow", strict=True)
    kind: Literal["classifier", "segmenter", "mlp", "custom"]
    name: str | None = None
    in_channels: int | None = Field(None, ge=1, le=64)
    in_features: int | None = Field(None, ge=1)
    num_classes: int | None = Field(None, ge=1)


class ReaderSpec(_Strict):
    name: str
    args: dict[str, Any] = {}


class TransformSpec(_Strict):
    name: str
    args: dict[str, Any] = {}
    readers: list[ReaderSpec] | None = None


class PipelineSpec(_Strict):
    kind: Literal["monai"]
    transforms: list[TransformSpec]
    dropped: list[str] = []


class PreprocessingSpec(_Strict):
    """What an input goes through before the network (see :mod:`shiftkit.adapt.preprocessing`).

    ``reader``: ``"shiftkit"`` (files read by :func:`shiftkit.datasets.read_image`: row 0 = top,
    values scaled by the type's range to [0, 1]), ``"monai"`` (the recorded ``pipeline`` reads
    the files) or ``"arrays"`` (trained on arrays; files are read as ``"shiftkit"`` does).
    """

    in_channels: int | None = Field(None, ge=1, le=64)
    image_size: tuple[Annotated[int, Field(ge=1)], Annotated[int, Field(ge=1)]] | None = None
    min_size: int = Field(MIN_IMAGE_SIDE, ge=1)
    value_range: tuple[float, float] = (0.0, 1.0)
    resize: Literal["bilinear"] = "bilinear"
    reader: Literal["shiftkit", "monai", "arrays"] = "shiftkit"
    pipeline: PipelineSpec | None = None
    #: Per-channel mean/std the network applies itself to [0, 1] inputs (timm/torchvision/smp
    #: backbones: the pretrained weights' config) and the weights' native input size; a record,
    #: not a step :class:`Predictor` runs (the network's first module does it).
    normalize: dict[str, Any] | None = None


class ShiftSpec(_Strict):
    method: Literal["mahalanobis-ledoit-wolf"]
    threshold: float = Field(gt=0, allow_inf_nan=False)
    n_target: int = Field(ge=10)
    quantile: float = Field(gt=0, lt=1)


class Sidecar(_Strict):
    """The JSON sidecar of a saved model, format version 2 (validated in full by :func:`load`)."""

    format: Literal["shiftkit-model"]
    format_version: Literal[2]
    weights_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    architecture: ArchitectureSpec
    task: Literal["classification", "segmentation"]
    preprocessing: PreprocessingSpec
    class_names: list[str] = Field(min_length=1)
    versions: dict[str, str]
    training_data: dict[str, Any]
    shift: ShiftSpec | None
    feature_dim: int


def _schema_problems(exc: ValidationError) -> list[str]:
    out = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "(top level)"
        if err["type"] == "extra_forbidden":
            out.append(f"{where}: unknown key")
        elif err["type"] == "missing":
            out.append(f"{where}: missing")
        else:
            out.append(f"{where}: {err['msg']} (got {err.get('input')!r})")
    return out


def _consistency_problems(s: Sidecar) -> list[str]:
    """Cross-field checks the schema alone cannot make."""
    problems = []
    names = [n.strip() for n in s.class_names]
    if any(not n for n in names):
        problems.append("class_names: empty class name")
    dups = sorted({n for n in names if names.count(n) > 1})
    if dups:
        problems.append(f"class_names: duplicate name(s) {dups}")
    k = s.architecture.num_classes
    if k is not None and len(names) != k:
        problems.append(f"class_names: {len(names)} names for a {k}-class model (architecture.num_classes)")
    pre, arch = s.preprocessing, s.architecture
    if pre.in_channels is not None and arch.in_channels is not None and pre.in_channels != arch.in_channels:
        problems.append(f"preprocessing.in_channels: {pre.in_channels}, but the network takes "
                        f"{arch.in_channels} (architecture.in_channels)")
    seg_kind = arch.kind == "segmenter"
    if arch.kind != "custom" and seg_kind != (s.task == "segmentation"):
        problems.append(f"task: {s.task!r} does not match architecture.kind {arch.kind!r}")
    if pre.image_size is not None and min(pre.image_size) < pre.min_size:
        problems.append(f"preprocessing.image_size: {list(pre.image_size)} is below min_size {pre.min_size}")
    if pre.reader == "monai" and pre.pipeline is None:
        problems.append("preprocessing.pipeline: missing (reader is 'monai')")
    if s.shift is not None and s.feature_dim < 1:
        problems.append(f"feature_dim: {s.feature_dim} (shift statistics need the feature size)")
    return problems


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _bound_copy(sidecar: dict) -> dict:
    """The sidecar minus its weights hash: the copy stored inside the weights file."""
    return {k: v for k, v in sidecar.items() if k != "weights_sha256"}


# --------------------------------------------------------------------------------------
# Save
# --------------------------------------------------------------------------------------


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
    from .preprocessing import describe_pipeline, pipeline_of

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
    from .preprocessing import starts_with_loader

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
            :class:`~shiftkit.adapt.preprocessing.PreprocessingError` naming the transform.
        min_size: smallest input side (pixels) :meth:`Predictor.predict` accepts; default
            ``min(16, image side)``.

    Raises:
        ConfigError: wrong class names, identifiers in the summary, unrecordable preprocessing.
        DataError: non-finite weights (a diverged model is not saved).
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
    _atomic_write_bytes(blob, wpath)
    _atomic_write_bytes(json.dumps(sidecar, indent=2, sort_keys=True, allow_nan=False).encode(), jpath)
    return wpath, jpath


# --------------------------------------------------------------------------------------
# Load and predict
# --------------------------------------------------------------------------------------


def _finite_or_none(v: float) -> float | None:
    return float(v) if np.isfinite(v) else None


@dataclass
class Prediction:
    """Per-image outputs of :meth:`Predictor.predict`.

    Attributes:
        proba: ``(N, K)`` class probabilities (segmentation: per-image mean class share).
        label: ``(N,)`` predicted class index; ``-1`` where ``status`` is ``"error"``.
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
        return {"predictions": out, "threshold": self.threshold, **self.extra}


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
        pre = sidecar.get("preprocessing", {})
        self.in_channels: int | None = pre.get("in_channels")
        self.image_size: tuple[int, int] | None = tuple(pre["image_size"]) if pre.get("image_size") else None
        self.min_size: int = int(pre.get("min_size", MIN_IMAGE_SIDE))
        self.reader: str = pre.get("reader", "shiftkit")
        self._pipeline: list | None = None
        if pre.get("pipeline"):
            from .preprocessing import build_pipeline

            self._pipeline = build_pipeline(pre["pipeline"])

    # ------------------------------------------------------------------ inputs
    def _check_size(self, arr: np.ndarray, where: str) -> None:
        h, w = arr.shape[-2:]
        if min(h, w) < self.min_size:
            raise DataError(f"{where}: image of {h}x{w} pixels is smaller than the {self.min_size} px minimum "
                            "this model accepts (preprocessing.min_size); it would be mostly interpolation")

    def _run_pipeline(self, item: Any, where: str) -> np.ndarray:
        """Apply the recorded MONAI transforms, checking the size after the loading step."""
        from .preprocessing import IMAGE_KEY

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
        from .preprocessing import starts_with_loader

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
        label = np.where(finite, np.nan_to_num(proba, nan=-1.0).argmax(1), -1).astype(np.int64)
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
        from .methods.source_free import adapt_source_free

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

    def monitor(self, batch: Any, *, attributes: Any = None, online: bool = False) -> Any:
        """Drift verdict of one incoming batch (stateless): :class:`shiftkit.evaluation.monitor.BatchDrift`.
        For a stream with an online alarm use :meth:`stream`."""
        from .monitoring import monitor

        return monitor(self, batch, attributes=attributes, online=online)

    def estimate_performance(self, batch: Any) -> dict:
        """Label-free accuracy estimates (ATC, DoC, CBPE) and the estimated class prior of a batch,
        each with an interval and a ``trusted`` verdict (stateless)."""
        from .monitoring import estimate_performance

        return estimate_performance(self, batch)

    def check(self, batch: Any, *, attributes: Any = None) -> Any:
        """Stateless drift verdict + estimates of one batch: :class:`shiftkit.adapt.monitoring.BatchCheck`."""
        from .monitoring import check

        return check(self, batch, attributes=attributes)

    def stream(self) -> Any:
        """A new :class:`shiftkit.adapt.monitoring.MonitorStream` (explicit online state: update, summary, reset)."""
        from .monitoring import MonitorStream

        return MonitorStream(self)


def _rebuild(arch: dict, where: str) -> nn.Module:
    kind = arch.get("kind")
    try:
        from .backbones_ecosystem import is_ecosystem_name, rebuild

        if is_ecosystem_name(arch.get("name")):  # timm:/tv:/smp: rebuilt by name, options and normalisation
            return rebuild(arch)
        if kind == "classifier":
            return build_classifier(arch["name"], int(arch["in_channels"]), int(arch["num_classes"]),
                                    spatial_dims=int(arch.get("spatial_dims", 2)), dropout=float(arch.get("dropout", 0.0)))
        if kind == "segmenter":
            return build_segmenter(arch["name"], int(arch["in_channels"]), int(arch["num_classes"]),
                                   spatial_dims=int(arch.get("spatial_dims", 2)))
        if kind == "mlp":
            return build_mlp(int(arch["in_features"]), list(arch["hidden"]), int(arch["num_classes"]),
                             activation=str(arch.get("activation", "relu")))
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelFileError(where, [f"architecture: cannot rebuild {arch!r} ({type(exc).__name__}: {exc})"]) from None
    raise ConfigError("load", [f"{where}: architecture {arch!r} is not built in; rebuild it from your own code: in "
                               "Python load(path, model=YourNet()), on the command line --model-factory "
                               "package.module:function (a function returning the untrained network)"])


def _read_sidecar(jpath: Path, wpath: Path) -> tuple[dict, Sidecar]:
    if not jpath.exists():
        raise DataError(f"{jpath}: sidecar JSON not found next to {wpath.name}")
    try:
        raw = json.loads(jpath.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelFileError(jpath, [f"unreadable sidecar JSON ({exc})"]) from None
    if not isinstance(raw, dict) or raw.get("format") != "shiftkit-model":
        raise ModelFileError(jpath, ["format: not a shiftkit model sidecar"])
    version = raw.get("format_version")
    if version == 1:
        raise ModelFileError(jpath, [
            "format_version: 1 stores no hash of the weights, so a damaged or edited model cannot be told apart; "
            "re-save it with this shiftkit, or, if you trust the files, upgrade them with "
            "shiftkit.adapt.predictor.upgrade_model(path)"])
    if isinstance(version, int) and version > FORMAT_VERSION:
        raise ModelFileError(jpath, [f"format_version: {version} is newer than this shiftkit ({FORMAT_VERSION}); "
                                     "upgrade shiftkit"])
    try:
        spec = Sidecar.model_validate_json(json.dumps(raw))
    except ValidationError as exc:
        raise ModelFileError(jpath, _schema_problems(exc)) from None
    problems = _consistency_problems(spec)
    if problems:
        raise ModelFileError(jpath, problems)
    return raw, spec


def _read_weights(wpath: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    from safetensors import safe_open

    try:
        tensors: dict[str, torch.Tensor] = {}
        with safe_open(str(wpath), framework="pt") as fh:
            meta = dict(fh.metadata() or {})
            for key in fh.keys():
                tensors[key] = fh.get_tensor(key)
    except Exception as exc:  # SafetensorError / OSError on a damaged header or truncated data
        raise ModelFileError(wpath, [f"damaged weights file ({type(exc).__name__}: {str(exc)[:200]})"]) from None
    return tensors, meta


def load(path: str | os.PathLike[str], *, model: nn.Module | None = None, device: str | None = None) -> Predictor:
    """Load a model saved by :func:`save_model` (never unpickles) and check it completely.

    Checks, in order: the weights file is safetensors (a pickle is refused unopened); the
    sidecar parses and matches the versioned schema (every field, with cross-checks: class
    names distinct and as many as the network's classes, channels agreeing with the
    architecture, task agreeing with the network kind); the weights file's sha256 equals the
    sidecar's; the sidecar equals the copy stored in the weights (catches edited or swapped
    class names); every weight is finite; the weights fit the architecture; the network maps
    a ``(1, C, H, W)`` input to as many classes as there are names; the recorded preprocessing
    rebuilds.

    Args:
        path: the model directory, its ``.safetensors`` file or its ``.json`` sidecar, or an
            ensemble directory written by :func:`shiftkit.adapt.ensemble.save_ensemble`
            (averaged probabilities of its members, each loaded with every check below).
        model: an un-trained instance of the architecture, needed only for custom modules.
        device: ``"cpu"`` (default) or ``"cuda"``.

    Raises:
        UnsafeModelFileError: the weights file is not safetensors (e.g. a pickle).
        ModelFileError: (a ``DataError``) damaged, edited or inconsistent files; names the file
            and every problem with its key.
        DataError: missing files.
    """
    from .ensemble import is_ensemble, load_ensemble

    if model is None and is_ensemble(path):  # a directory of saved members (adapt/ensemble.py)
        return load_ensemble(path, device=device)
    wpath, jpath = _paths(path)
    _check_safe(wpath)  # before anything else touches the file
    raw, spec = _read_sidecar(jpath, wpath)
    digest = _sha256(wpath)
    if digest != spec.weights_sha256:
        raise ModelFileError(wpath, [f"sha256 {digest[:16]}... differs from weights_sha256 "
                                     f"{spec.weights_sha256[:16]}... recorded in {jpath.name}: the weights file was "
                                     "changed or damaged after saving"])
    tensors, meta = _read_weights(wpath)
    try:
        bound = json.loads(meta.get("shiftkit.sidecar", "null"))
    except json.JSONDecodeError:
        bound = None
    if not isinstance(bound, dict):
        raise ModelFileError(wpath, ["metadata: no sidecar copy inside the weights file"])
    mine = _bound_copy(raw)
    problems = []
    for key in sorted(set(bound) | set(mine)):
        if bound.get(key) != mine.get(key):
            hint = ""
            if key == "class_names" and sorted(bound.get(key) or []) == sorted(mine.get(key) or []):
                hint = " (same names in another order: swapped?)"
            problems.append(f"{key}: {json.dumps(mine.get(key))[:200]} in {jpath.name} differs from "
                            f"{json.dumps(bound.get(key))[:200]} stored with the weights{hint}; the sidecar was "
                            "edited after saving")
    if problems:
        raise ModelFileError(jpath, problems)
    bad = [k for k, t in tensors.items() if t.is_floating_point() and not torch.isfinite(t).all()]
    if bad:
        raise ModelFileError(wpath, [f"tensor {k!r} holds NaN/Inf values" for k in bad[:10]]
                             + ([f"... and {len(bad) - 10} more"] if len(bad) > 10 else []))
    arch = raw["architecture"]
    net = as_split_model(model) if model is not None else _rebuild(arch, str(jpath))
    state = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ModelFileError(wpath, [f"weights do not fit the architecture in {jpath.name}: {str(exc)[:400]}"]) from None
    mean = tensors["shift.mean"].numpy() if "shift.mean" in tensors else None
    prec = tensors["shift.precision"].numpy() if "shift.precision" in tensors else None
    if spec.shift is not None:
        d = spec.feature_dim
        if mean is None or prec is None or mean.shape != (d,) or prec.shape != (d, d):
            raise ModelFileError(wpath, [f"shift statistics missing or not of shape ({d},) / ({d}, {d}) "
                                         "(feature_dim)"])
    try:
        predictor = Predictor(net, raw, mean, prec, torch.device(device or "cpu"), source=str(jpath))
    except ConfigError as exc:
        raise ModelFileError(jpath, [f"preprocessing.pipeline: {p}" for p in exc.problems]) from None
    _probe(predictor, spec, str(jpath))
    return predictor


@torch.no_grad()
def _probe(p: Predictor, spec: Sidecar, where: str) -> None:
    """One forward pass of zeros: the network must take the recorded input and give K classes."""
    c = spec.preprocessing.in_channels or spec.architecture.in_channels
    if c is None or spec.architecture.kind == "mlp":
        return
    h, w = spec.preprocessing.image_size or (64, 64)
    x = torch.zeros(1, c, h, w, device=p.device)
    try:
        if p.task == "segmentation":
            logits, fmap = p.model.forward_with_features(x)
            feats = fmap.mean(dim=(2, 3))
        else:
            feats = p.model.encoder(x)
            logits = p.model.head(feats)
    except Exception as exc:
        raise ModelFileError(where, [f"preprocessing: the network does not take a (1, {c}, {h}, {w}) input "
                                     f"(in_channels / image_size): {type(exc).__name__}: {str(exc)[:200]}"]) from None
    k = int(logits.shape[1])
    if k != len(p.class_names):
        raise ModelFileError(where, [f"class_names: {len(p.class_names)} names, the network gives {k} classes"])
    if spec.shift is not None and int(feats.shape[1]) != spec.feature_dim:
        raise ModelFileError(where, [f"feature_dim: {spec.feature_dim}, the network gives {int(feats.shape[1])}"])


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
    _atomic_write_bytes(blob, wpath)
    _atomic_write_bytes(json.dumps(new, indent=2, sort_keys=True, allow_nan=False).encode(), jpath)
    load(wpath, model=model)  # the upgraded files pass every check
    return wpath, jpath
