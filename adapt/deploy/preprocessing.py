"""Preprocessing that travels with a saved model.

What the training images went through before they reached the network (how files were read,
how intensities were scaled, how images were resized, how many channels) is written into the
model's sidecar by :func:`shiftkit.adapt.save_model` and applied again by
:func:`shiftkit.adapt.load`. Without it a model trained on MONAI's PNG reader (which returns
2-D images transposed, ``(W, H)``) and per-image ``ScaleIntensityd`` silently predicts on
differently oriented, differently scaled inputs after loading.

A MONAI dictionary pipeline is stored as a whitelisted description, never pickled::

    [{"name": "LoadImaged", "args": {"keys": ["image"], "image_only": true, ...},
      "readers": [{"name": "PILReader", "args": {"reverse_indexing": true}}, ...]},
     {"name": "ScaleIntensityd", "args": {"keys": ["image"], "minv": 0.0, "maxv": 1.0, ...}}, ...]

Only the deterministic transforms that touch the ``image`` key are kept: random augmentation
(anything ``Randomizable``) is for training and is listed under ``dropped``. Constructor
arguments are read back from the transform objects (MONAI keeps them as attributes of the
transform or of the array transform it wraps). Because that read-back could miss an argument,
:func:`describe_pipeline` rebuilds the pipeline from its description and checks that it gives
the same tensor as the original on a real training item; if not, saving refuses with the name
of the transform.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from shiftkit.datasets.errors import ConfigError

__all__ = ["IMAGE_KEY", "MONAI_WHITELIST", "PreprocessingError", "build_pipeline", "describe_pipeline", "pipeline_of"]

IMAGE_KEY = "image"

# Deterministic MONAI dictionary transforms that can be recorded and rebuilt (monai.transforms).
MONAI_WHITELIST: tuple[str, ...] = (
    "LoadImaged", "EnsureChannelFirstd", "ScaleIntensityd", "ScaleIntensityRanged", "ScaleIntensityRangePercentilesd",
    "NormalizeIntensityd", "Resized", "CenterSpatialCropd", "SpatialPadd", "Rotate90d",
    "Flipd", "Transposed", "RepeatChanneld", "EnsureTyped", "ToTensord", "CastToTyped", "AsChannelLastd",
    "SqueezeDimd", "ClipIntensityPercentilesd", "ThresholdIntensityd",
)


def _is_monai_reader(name: str, cls: type | None = None) -> bool:
    """A reader class MONAI itself ships (``monai.data.<name>``, an ``ImageReader``)."""
    import monai.data

    found = getattr(monai.data, str(name), None)
    return (isinstance(found, type) and issubclass(found, monai.data.ImageReader)
            and (cls is None or found is cls))


# Constructor arguments MONAI keeps under another attribute name: {transform: {argument: attribute}}.
_ALIASES: dict[str, dict[str, str]] = {"EnsureChannelFirstd": {"channel_dim": "input_channel_dim"}}


class PreprocessingError(ConfigError):
    """A training pipeline cannot be recorded, or a recorded one cannot be rebuilt."""


# ----------------------------------------------------------------------------- values


def _encode(value: Any, where: str) -> Any:
    """A constructor argument as JSON: dtypes by name, tuples as lists; anything else refused."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value
    if isinstance(value, (np.integer, np.floating, np.bool_)):
        return value.item()
    if isinstance(value, torch.dtype):
        return {"dtype": str(value)}  # "torch.float32"
    if isinstance(value, type) and issubclass(value, np.generic) or isinstance(value, np.dtype):
        return {"dtype": f"numpy.{np.dtype(value).name}"}
    if hasattr(value, "value") and isinstance(getattr(value, "value", None), str):  # str Enums (InterpolateMode)
        return value.value
    if isinstance(value, (list, tuple)):
        return [_encode(v, where) for v in value]
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        return {k: _encode(v, where) for k, v in value.items()}
    raise PreprocessingError("preprocessing", [f"{where}: argument of type {type(value).__name__} cannot be "
                                               "recorded (only numbers, strings, dtypes and lists of them)"])


def _decode(value: Any) -> Any:
    if isinstance(value, dict) and set(value) == {"dtype"}:
        name = str(value["dtype"])
        if name.startswith("torch."):
            dt = getattr(torch, name.split(".", 1)[1], None)
            if isinstance(dt, torch.dtype):
                return dt
        elif name.startswith("numpy."):
            return np.dtype(name.split(".", 1)[1]).type
        raise PreprocessingError("preprocessing", [f"unknown dtype {name!r}"])
    if isinstance(value, list):
        return tuple(_decode(v) for v in value)
    if isinstance(value, dict):
        return {k: _decode(v) for k, v in value.items()}
    return value


def _ctor_args(obj: Any, holders: Sequence[Any], where: str, skip: Sequence[str] = ()) -> dict[str, Any]:
    """Constructor arguments of ``obj`` read back from attributes of the objects in ``holders``.

    An argument with a default that is found nowhere keeps its default (the rebuilt pipeline is
    then compared with the original); a required one that is found nowhere is refused.
    """
    aliases = _ALIASES.get(type(obj).__name__, {})
    args: dict[str, Any] = {}
    for name, p in inspect.signature(type(obj).__init__).parameters.items():
        if name == "self" or name in skip or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        found = False
        for h in holders:
            attrs = vars(h)
            for attr in (aliases.get(name, name), f"_{name}"):
                if attr in attrs and not (attr.startswith("_") and callable(attrs[attr])):
                    args[name] = _encode(attrs[attr], f"{where}.{name}")
                    found = True
                    break
            if found:
                break
        if not found and p.default is p.empty:
            raise PreprocessingError("preprocessing", [f"{where}: cannot read back the required argument "
                                                       f"{name!r}; pass save_model(preprocessing=...) explicitly"])
    return args


# ----------------------------------------------------------------------------- describe


def pipeline_of(dataset: Any) -> list[Any] | None:
    """The transforms a dataset applies to its items (``dataset.transform``), or ``None``."""
    t = getattr(dataset, "transform", None)
    if t is None:
        return None
    inner = getattr(t, "transforms", None)
    if isinstance(inner, (list, tuple)):
        return list(inner)
    return [t]


def _describe_one(t: Any, i: int) -> dict[str, Any] | str:
    """Description dict, or the reason (str) the transform is dropped for inference."""
    from monai.transforms import MapTransform, Randomizable, Transform

    name = type(t).__name__
    where = f"transform {i} ({name})"
    if isinstance(t, Randomizable):
        return f"{name}: random augmentation, training only"
    if not isinstance(t, MapTransform):
        raise PreprocessingError("preprocessing", [
            f"{where}: only MONAI dictionary transforms can be recorded. Pass save_model(preprocessing=...) a MONAI "
            "pipeline that does the same, or preprocessing='none' if the transform was training augmentation only"])
    keys = [str(k) for k in t.keys]
    if IMAGE_KEY not in keys:
        return f"{name}: does not touch '{IMAGE_KEY}'"
    if name not in MONAI_WHITELIST or not type(t).__module__.startswith("monai.transforms"):
        raise PreprocessingError("preprocessing", [
            f"{where}: not a transform shiftkit can record and rebuild; known: {', '.join(MONAI_WHITELIST)}. "
            "Pass save_model(preprocessing=...) a pipeline of known transforms that reproduces it"])
    k = keys.index(IMAGE_KEY)
    children = [v for v in vars(t).values() if isinstance(v, Transform) and v is not t]
    args = _ctor_args(t, [t, *children], where, skip=("keys", "allow_missing_keys", "reader", "lazy"))
    # MapTransforms keep per-key values as tuples on themselves (ensure_tuple_rep): take the image's.
    for a in list(args):
        if a in vars(t) and isinstance(vars(t)[a], tuple) and len(vars(t)[a]) == len(keys):
            args[a] = _encode(vars(t)[a][k], f"{where}.{a}")
    desc: dict[str, Any] = {"name": name, "args": {"keys": [IMAGE_KEY], **args}}
    if name == "LoadImaged":
        loader = t._loader
        readers = []
        for r in loader.readers:
            rname = type(r).__name__
            if not _is_monai_reader(rname, type(r)):
                raise PreprocessingError("preprocessing", [f"{where}: reader {rname} is not one of MONAI's own "
                                                           "readers (monai.data); shiftkit cannot rebuild it"])
            rargs = _ctor_args(r, [r], f"{where}.{rname}")
            if rargs.get("allow_pickle"):
                raise PreprocessingError("preprocessing", [f"{where}: {rname}(allow_pickle=True) would unpickle "
                                                           "input files; shiftkit never records that"])
            extra = vars(r).get("kwargs") or {}
            rargs.update({kk: _encode(vv, f"{where}.{rname}.{kk}") for kk, vv in dict(extra).items()})
            if rargs.get("converter") is not None:
                raise PreprocessingError("preprocessing", [f"{where}: {rname} has a converter function; "
                                                           "functions cannot be recorded"])
            rargs.pop("converter", None)
            readers.append({"name": rname, "args": rargs})
        desc["readers"] = readers
    return desc


def describe_pipeline(transforms: Sequence[Any], raw_item: dict | None = None) -> dict[str, Any]:
    """Record a MONAI dictionary pipeline for inference.

    Args:
        transforms: the pipeline's transforms in order (``Compose(...).transforms``).
        raw_item: one item as the pipeline receives it (e.g. ``{"image": "a.png", "label": 0}``);
            when given, the rebuilt pipeline must reproduce the original's ``image`` tensor on it
            to within 1e-6, else :class:`PreprocessingError` names the first transform that differs.

    Returns:
        ``{"kind": "monai", "transforms": [...], "dropped": [reasons]}`` (JSON-able).
    """
    kept_objs: list[Any] = []
    kept: list[dict] = []
    dropped: list[str] = []
    for i, t in enumerate(transforms):
        d = _describe_one(t, i)
        if isinstance(d, str):
            dropped.append(d)
        else:
            kept.append(d)
            kept_objs.append(t)
    desc = {"kind": "monai", "transforms": kept, "dropped": dropped}
    if raw_item is not None:
        rebuilt = build_pipeline(desc)
        a: Any = dict(raw_item)
        b: Any = {IMAGE_KEY: raw_item[IMAGE_KEY]}
        for t, r, d in zip(kept_objs, rebuilt, kept, strict=True):
            try:
                a, b = t(a), r(b)
            except Exception as exc:
                raise PreprocessingError("preprocessing", [
                    f"{d['name']}: rebuilt from its recorded arguments {d['args']} it fails on a training item "
                    f"({type(exc).__name__}: {str(exc)[:200]}); pass save_model(preprocessing=...) an equivalent "
                    "pipeline of known transforms"]) from None
            xa, xb = np.asarray(a[IMAGE_KEY], dtype=np.float64), np.asarray(b[IMAGE_KEY], dtype=np.float64)
            if xa.shape != xb.shape or not np.allclose(xa, xb, rtol=0, atol=1e-6):
                raise PreprocessingError("preprocessing", [
                    f"{d['name']}: rebuilt from its recorded arguments {d['args']} it gives a different image "
                    f"(shape {xb.shape} vs {xa.shape}); an argument shiftkit cannot read back was set. Pass "
                    "save_model(preprocessing=...) an equivalent pipeline of known transforms"])
    return desc


# ----------------------------------------------------------------------------- rebuild


def build_pipeline(desc: dict[str, Any]) -> list[Callable[[dict], dict]]:
    """Rebuild the recorded transforms (each a MONAI dictionary transform on ``{"image": ...}``).

    Raises :class:`PreprocessingError` for a name outside the whitelist (a tampered or newer
    sidecar) or arguments the installed MONAI does not take.
    """
    import monai.data
    import monai.transforms
    from monai.utils import OptionalImportError

    out = []
    for i, d in enumerate(desc.get("transforms", [])):
        name = d.get("name")
        if name not in MONAI_WHITELIST:
            raise PreprocessingError("preprocessing", [f"transform {i}: {name!r} is not a known transform "
                                                       f"({', '.join(MONAI_WHITELIST)}); refusing to guess"])
        cls = getattr(monai.transforms, name)
        args = {k: _decode(v) for k, v in d.get("args", {}).items()}
        args["keys"] = [IMAGE_KEY]
        try:
            t = cls(**args)
        except (TypeError, ValueError) as exc:
            raise PreprocessingError("preprocessing", [f"transform {i} ({name}): cannot rebuild with {d.get('args')} "
                                                       f"({exc}); was it saved by another MONAI version?"]) from None
        if name == "LoadImaged" and "readers" in d:
            readers = []
            for r in d["readers"]:
                if not _is_monai_reader(r.get("name", "")):
                    raise PreprocessingError("preprocessing", [f"transform {i}: unknown reader {r.get('name')!r}"])
                rcls = getattr(monai.data, r["name"])
                rargs = {k: _decode(v) for k, v in r.get("args", {}).items()}
                if "allow_pickle" in rargs:
                    rargs["allow_pickle"] = False  # never unpickle an input file, whatever the sidecar says
                try:
                    readers.append(rcls(**rargs))
                except OptionalImportError:  # like LoadImage: a reader whose package is absent is skipped
                    continue
                except Exception as exc:
                    raise PreprocessingError("preprocessing", [
                        f"transform {i}: cannot rebuild reader {r['name']} ({type(exc).__name__}: {exc}); "
                        "install the package it needs"]) from None
            t._loader.readers = readers
        out.append(t)
    return out


def starts_with_loader(desc: dict[str, Any] | None) -> bool:
    """True when the recorded pipeline reads files itself (its first transform is LoadImaged)."""
    ts = (desc or {}).get("transforms") or []
    return bool(ts) and ts[0].get("name") == "LoadImaged"
