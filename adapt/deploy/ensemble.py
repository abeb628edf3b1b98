"""An ensemble of trained models (averaged class probabilities) as one deployable model.

Label-free selection can fall back to the average of its candidates: the average of several
models' probabilities is, in expectation, at least as good as the average member (the role
model of the EnsV validator), so it never bets on one candidate's confident mistakes.

On disk an ensemble is a directory::

    ensemble/
      ensemble.json          # this module's sidecar: format, combine rule, members and their hashes
      member0/model.safetensors + model.json   # each an ordinary saved model (save_model)
      member1/...

Nothing is pickled: every member is a safetensors file with its own JSON sidecar, loaded and
checked by :func:`shiftkit.adapt.deploy.predictor.load`; ``ensemble.json`` records each member's
sidecar sha256, so a swapped or edited member is refused. ``shiftkit.adapt.load(dir)`` reads
an ensemble directory like any saved model.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from torch import nn

from shiftkit.datasets.errors import ConfigError, DataError

__all__ = ["ENSEMBLE_FILE", "EnsembleModel", "SegEnsembleModel", "ensemble_model", "fitted_ensemble", "is_ensemble",
           "load_ensemble", "save_ensemble"]

#: The sidecar file that marks a directory as an ensemble.
ENSEMBLE_FILE = "ensemble.json"
_FORMAT = "shiftkit-ensemble"
_VERSION = 1


class EnsembleModel(nn.Module):
    """Members' class probabilities averaged; returns their log (so softmax gives the average).

    Classification members are split models (``encoder``, ``head``): ``encoder(x)`` returns
    the members' features concatenated ``(N, sum D_i)`` and ``head(f)`` splits them back, so
    every consumer of a split model (the predictor, ``predict_proba_and_features``) works
    unchanged. Segmentation members: see :class:`SegEnsembleModel`. Build either with
    :func:`ensemble_model`.
    """

    def __init__(self, members: Sequence[nn.Module]):
        super().__init__()
        if len(members) < 2:
            raise ConfigError("ensemble", [f"an ensemble needs at least 2 members, got {len(members)}"])
        self.members = nn.ModuleList(members)
        self.dims = [int(getattr(m, "feature_dim", 0)) for m in members]
        self.feature_dim = sum(self.dims)
        self.arch = {"kind": "ensemble", "members": [dict(getattr(m, "arch", {}) or {}) for m in members]}

    @staticmethod
    def _log_mean(logits: Sequence[torch.Tensor]) -> torch.Tensor:
        probs = torch.stack([torch.softmax(z.float(), 1) for z in logits])
        return probs.mean(0).clamp_min(1e-12).log()

    def encoder(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([m.encoder(x) for m in self.members], 1)

    def head(self, f: torch.Tensor) -> torch.Tensor:
        parts = torch.split(f, self.dims, 1)
        return self._log_mean([m.head(p) for m, p in zip(self.members, parts, strict=True)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x))


class SegEnsembleModel(EnsembleModel):
    """Segmenter members: ``forward_with_features(x)`` -> ``(log mean probability (N, K, H, W),
    the members' feature maps concatenated along channels)``."""

    def forward_with_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        outs = [m.forward_with_features(x) for m in self.members]
        return self._log_mean([o[0] for o in outs]), torch.cat([o[1] for o in outs], 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_with_features(x)[0]


def ensemble_model(members: Sequence[nn.Module], task: str) -> EnsembleModel:
    """The ensemble of ``members`` for ``task`` (``"classification"`` / ``"segmentation"``)."""
    return SegEnsembleModel(members) if task == "segmentation" else EnsembleModel(members)


def fitted_ensemble(members: Sequence[Any], task: str, num_classes: int) -> Any:
    """A fitted method whose model is the ensemble of the fitted ``members`` (no training):
    what ``methods: [auto]`` deploys when its safety rule falls back to the ensemble. It
    predicts, reports and saves (per member, :func:`save_ensemble`) like any fitted method."""
    from shiftkit.adapt.methods import SourceOnly

    first = members[0]
    model = ensemble_model([m.model_ for m in members], task)
    method = SourceOnly(model, task=task, num_classes=num_classes, device=getattr(first, "device", None),
                        batch_size=getattr(first, "batch_size", 32))
    method.model_ = model  # fitted state without a fit: the members were trained already
    method.history_ = []
    method.members_ = list(members)
    return method


class _Member(BaseModel):
    model_config = ConfigDict(extra="forbid")
    path: str = Field(pattern=r"^[A-Za-z0-9_.=-]+$")  # a plain sub-directory name: no separators
    name: str
    sidecar_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")


class _EnsembleSidecar(BaseModel):
    model_config = ConfigDict(extra="forbid")
    format: Literal["shiftkit-ensemble"]
    format_version: Literal[1]
    combine: Literal["mean_probability"]
    task: Literal["classification", "segmentation"]
    members: list[_Member] = Field(min_length=2)
    note: str = ""


def is_ensemble(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is an ensemble directory (holds ``ensemble.json``)."""
    p = Path(path)
    return p.is_dir() and (p / ENSEMBLE_FILE).is_file()


def save_ensemble(members: Sequence[Any], path: str | os.PathLike[str], *, names: Sequence[str] | None = None,
                  note: str = "", **save_kwargs: Any) -> Path:
    """Save fitted methods (or models) as one ensemble directory; returns its ``ensemble.json``.

    Args:
        members: >= 2 fitted methods or built-in models of the same task and classes.
        path: the directory to write (created).
        names: one label per member (e.g. the candidate spec); default ``member<i>``.
        note: free text stored in the sidecar (e.g. why the ensemble was deployed).
        save_kwargs: passed to :func:`shiftkit.adapt.deploy.predictor.save_model` for every member
            (``class_names``, ``target``, ...).
    """
    from shiftkit.adapt.deploy.saving import save_model
    from shiftkit.datasets.files import atomic_write_text

    if len(members) < 2:
        raise ConfigError("save_ensemble", [f"an ensemble needs at least 2 members, got {len(members)}"])
    names = list(names) if names is not None else [f"member{i}" for i in range(len(members))]
    if len(names) != len(members):
        raise ConfigError("save_ensemble", [f"{len(names)} names for {len(members)} members"])
    root = Path(path)
    root.mkdir(parents=True, exist_ok=True)
    entries, tasks = [], set()
    for i, (m, name) in enumerate(zip(members, names, strict=True)):
        sub = f"member{i}"
        _, jpath = save_model(m, root / sub, **save_kwargs)
        side = jpath.read_bytes()
        tasks.add(json.loads(side)["task"])
        entries.append({"path": sub, "name": str(name), "sidecar_sha256": hashlib.sha256(side).hexdigest()})
    if len(tasks) != 1:
        raise ConfigError("save_ensemble", [f"members mix tasks {sorted(tasks)}"])
    sidecar = {"format": _FORMAT, "format_version": _VERSION, "combine": "mean_probability", "task": tasks.pop(),
               "members": entries, "note": note}
    _EnsembleSidecar.model_validate(sidecar)  # what load() checks, so a file that would not load is not written
    return atomic_write_text(root / ENSEMBLE_FILE, json.dumps(sidecar, indent=2, sort_keys=True))


def load_ensemble(path: str | os.PathLike[str], *, device: str | None = None) -> Any:
    """Load an ensemble directory as one :class:`~shiftkit.adapt.deploy.predictor.Predictor`.

    Every member is loaded by :func:`~shiftkit.adapt.deploy.predictor.load` (all of its checks) and must
    match the sha256 recorded in ``ensemble.json``, the ensemble's task, and the first
    member's class names and preprocessing. The ensemble predictor reports no shift score
    (each member's reference statistics live in its own feature space): ``shift`` is
    ``"unknown"``; load a member to monitor shift.
    """
    from shiftkit.adapt.deploy.loading import load
    from shiftkit.adapt.deploy.model_format import ModelFileError
    from shiftkit.adapt.deploy.predictor import Predictor

    root = Path(path)
    jpath = root / ENSEMBLE_FILE
    try:
        raw = json.loads(jpath.read_text(encoding="utf-8"))
        spec = _EnsembleSidecar.model_validate(raw)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelFileError(jpath, [f"unreadable ensemble sidecar ({exc})"]) from None
    except ValidationError as exc:
        raise ModelFileError(jpath, [f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()]) from None
    predictors, problems = [], []
    for m in spec.members:
        sub = root / m.path
        digest = hashlib.sha256((sub / "model.json").read_bytes()).hexdigest() if (sub / "model.json").is_file() else None
        if digest is None:
            raise DataError(f"{jpath}: member {m.name!r}: {sub / 'model.json'} not found")
        if digest != m.sidecar_sha256:
            problems.append(f"members: {m.path}/model.json sha256 differs from the one recorded: the member was "
                            "changed or swapped after saving")
            continue
        predictors.append(load(sub, device=device))
    if problems:
        raise ModelFileError(jpath, problems)
    first = predictors[0]
    for m, p in zip(spec.members, predictors, strict=True):
        if p.task != spec.task:
            problems.append(f"members: {m.path} is {p.task}, the ensemble {spec.task}")
        if p.class_names != first.class_names:
            problems.append(f"members: {m.path} class names {p.class_names} differ from {first.class_names}")
        if p.sidecar.get("preprocessing") != first.sidecar.get("preprocessing"):
            problems.append(f"members: {m.path} records other preprocessing than {spec.members[0].path}")
    if problems:
        raise ModelFileError(jpath, problems)
    model = ensemble_model([p.model for p in predictors], spec.task)
    sidecar = {**first.sidecar, "shift": None, "ensemble": raw,
               "feature_dim": model.feature_dim}
    return Predictor(model, sidecar, None, None, first.device, source=str(jpath))

