"""``load(path) -> Predictor``: read a saved model and check it completely (never unpickles),
and ``load_weights`` for source checkpoints."""

from __future__ import annotations

import json
import os

import torch
from torch import nn

from shiftkit.adapt.deploy.model_format import (
    ModelFileError,
    Sidecar,
    _bound_copy,
    _check_safe,
    _paths,
    _read_sidecar,
    _read_weights,
    _sha256,
)
from shiftkit.adapt.deploy.predictor import Predictor
from shiftkit.adapt.models.backbones import as_split_model, build_classifier, build_mlp, build_segmenter
from shiftkit.adapt.training.checkpoint import load_into
from shiftkit.datasets.errors import ConfigError

__all__ = ["load", "load_weights"]


def load_weights(model: nn.Module, path: str | os.PathLike[str], *, strict: bool = True, key: str | None = None) -> nn.Module:
    """Load a source checkpoint from disk into ``model`` (state dicts only, no code).

    Accepts a ``.safetensors`` file, a PyTorch state-dict file read with
    ``torch.load(weights_only=True)`` (pickled objects other than tensors are refused), or a
    checkpoint written by :func:`shiftkit.adapt.training.trainer.train` (``modules.model`` is used).
    ``key`` selects a sub-dict (e.g. ``"state_dict"``).
    """
    load_into(model, path, strict=strict, key=key)  # the one weight loader (shiftkit.adapt.training.checkpoint)
    return model



def _rebuild(arch: dict, where: str) -> nn.Module:
    kind = arch.get("kind")
    try:
        from shiftkit.adapt.models.ecosystem import is_ecosystem_name, rebuild

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
            ensemble directory written by :func:`shiftkit.adapt.deploy.ensemble.save_ensemble`
            (averaged probabilities of its members, each loaded with every check below).
        model: an un-trained instance of the architecture, needed only for custom modules.
        device: ``"cpu"`` (default) or ``"cuda"``.

    Raises:
        UnsafeModelFileError: the weights file is not safetensors (e.g. a pickle).
        ModelFileError: (a ``DataError``) damaged, edited or inconsistent files; names the file
            and every problem with its key.
        DataError: missing files.
    """
    from shiftkit.adapt.deploy.ensemble import is_ensemble, load_ensemble

    if model is None and is_ensemble(path):  # a directory of saved members (adapt/deploy/ensemble.py)
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

