"""The on-disk format of a saved model: two files side by side, and the checks that read them.

* ``<stem>.safetensors``: the weights, plus the adapted-on target feature statistics
  (``shift.mean`` ``(D,)`` and ``shift.precision`` ``(D, D)``);
* ``<stem>.json``: the sidecar (:class:`Sidecar`, format version 2): the sha256 of the weights
  file, architecture (how to rebuild the network), preprocessing (input size, channels, minimum
  size, and the reader or MONAI pipeline the training data went through, see
  :mod:`shiftkit.adapt.deploy.preprocessing`), class names, library versions, a training-data summary
  (counts and domain names only, never patient identifiers), the shift threshold and, for a
  binary classifier, the decision threshold on P(class 1) its labels use (optional: a file
  without it predicts at 0.5). A copy of the sidecar (without the hash) is stored in the
  weights file's metadata.

Reading never unpickles: weights with ``safetensors``, the sidecar with ``json``; a pickle is
refused before anything that could run code opens it.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Annotated, Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from shiftkit.adapt.training.checkpoint import UnsafeModelFileError, is_safetensors
from shiftkit.datasets.errors import DataError

__all__ = ["FORMAT_VERSION", "MIN_IMAGE_SIDE", "ModelFileError", "Sidecar", "UnsafeModelFileError"]

# 2: weights sha256, a copy of the sidecar inside the weights file, preprocessing reader/pipeline/min_size.
FORMAT_VERSION = 2
# Smallest image side predict() accepts by default: below it an upsampled input is mostly interpolation.
MIN_IMAGE_SIDE = 16
_PICKLE_SUFFIXES = (".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".bin")
# Keys a training summary may not carry: anything that could identify a patient.


def _paths(path: str | os.PathLike[str]) -> tuple[Path, Path]:
    p = Path(path)
    if p.is_dir():
        return p / "model.safetensors", p / "model.json"
    if p.suffix == ".json":
        return p.with_suffix(".safetensors"), p
    if p.suffix == ".safetensors":
        return p, p.with_suffix(".json")
    return p, p.with_suffix(".json")



def _check_safe(path: Path) -> None:
    if not path.exists():
        raise DataError(f"{path}: model file not found")
    if not is_safetensors(path):
        with open(path, "rb") as fh:
            first = fh.read(1)
        kind = "a pickle" if path.suffix in _PICKLE_SUFFIXES or first == b"\x80" else "not safetensors"
        raise UnsafeModelFileError(
            f"{path}: refused ({kind}); shiftkit loads models only from safetensors + JSON sidecar and never "
            "unpickles files. Convert trusted checkpoints with shiftkit.adapt.save_model"
        )



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
    """What an input goes through before the network (see :mod:`shiftkit.adapt.deploy.preprocessing`).

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
    #: Binary classification: the label is class 1 when P(class 1) >= this (chosen from source
    #: data, ``train.decision_threshold``). Absent in older files: 0.5.
    decision_threshold: float | None = Field(None, gt=0, lt=1, allow_inf_nan=False)


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
    if s.decision_threshold is not None and (s.task != "classification" or len(names) != 2):
        problems.append(f"decision_threshold: {s.decision_threshold} is for a binary classifier; this model has "
                        f"task {s.task!r} and {len(names)} classes")
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
            "shiftkit.adapt.deploy.predictor.upgrade_model(path)"])
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

