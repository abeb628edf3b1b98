"""Backbones from timm, torchvision and segmentation-models-pytorch, in shiftkit's split protocol.

Names (``build_classifier`` / ``build_segmenter`` in :mod:`shiftkit.adapt.models.backbones` dispatch here):

* ``timm:<name>``: any timm model (CNNs, ViTs, ...). ``encoder(x)`` is timm's own pooled
  pre-logit feature, ``forward_head(forward_features(x), pre_logits=True)``; ``head`` is the
  model's classifier (``get_classifier()``) taken out of it.
* ``tv:<name>``: a torchvision classification model. The last ``nn.Linear`` of the network is
  the head; the network with that layer replaced by ``Identity`` is the encoder (for ResNets the
  pooled 2048/512-d vector, for DenseNet-121 the pooled 1024-d vector, for ViT the class token).
* ``smp:<Arch>-<encoder>``: a segmentation-models-pytorch model (``Unet``, ``DeepLabV3Plus``,
  ``FPN``, ...) as a :class:`~shiftkit.adapt.models.backbones.SegModel`; features are the deepest
  encoder map, average pooled.

Networks are always built with ``pretrained=False`` / ``weights=None`` / ``encoder_weights=None``:
nothing is downloaded. Weights come from a local file (``weights=PATH``: safetensors, or a
weights-only torch file read by :func:`shiftkit.adapt.training.checkpoint.read_weights`, never unpickled),
mapped the way the library maps them:

* timm: the file goes through timm's own ``load_pretrained`` (the model's checkpoint filter,
  ``adapt_input_conv`` of the first convolution for ``in_chans`` != 3, strict key matching);
* torchvision: a plain ``state_dict`` (DenseNet's old ``norm.1`` keys renamed as torchvision does);
  a one-channel model sums the first convolution's RGB kernels (timm's ``adapt_input_conv``);
* smp: a full smp state dict or the encoder's weights alone; a one-channel model gets smp's own
  ``encoder.set_in_channels(1, pretrained=True)``.

When the file's classifier has the task's number of classes it is kept, otherwise the head is
new (timm's ``reset_classifier`` / a fresh ``nn.Linear`` / smp's segmentation head).

Input normalisation: shiftkit feeds images in [0, 1]; the network starts with a fixed
:class:`Normalize` (mean/std of the library's pretrained config: timm ``pretrained_cfg``,
torchvision weights' transforms, ImageNet statistics for smp encoders). One-channel models use the
mean of the three channel means and stds. The values are stored in the model's ``arch`` (so
:func:`shiftkit.adapt.load` rebuilds them) and in the saved model's ``preprocessing.normalize``.
"""

from __future__ import annotations

import os
import re
from typing import Any

import torch
from torch import nn

from shiftkit.datasets.errors import ConfigError, DataError

__all__ = ["PREFIXES", "Normalize", "WeightsMismatchError", "build_ecosystem_classifier",
           "build_ecosystem_segmenter", "is_ecosystem_name"]

PREFIXES = ("timm:", "tv:", "smp:")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class WeightsMismatchError(DataError):
    """A weights file does not fit the named network; the message names the file and the first keys."""


def is_ecosystem_name(name: Any) -> bool:
    """True for ``timm:...``, ``tv:...`` and ``smp:...`` names."""
    return isinstance(name, str) and name.lower().startswith(PREFIXES)


class Normalize(nn.Module):
    """``(x - mean) / std`` per channel on ``(N, C, H, W)`` images in [0, 1] (fixed, not trained)."""

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...]):
        super().__init__()
        # Not persistent: the values are rebuilt from the architecture record, so state dicts
        # stay the library's own keys under a prefix.
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


def _channel_stats(mean: Any, std: Any, channels: int) -> tuple[list[float], list[float]]:
    mean, std = [float(v) for v in mean], [float(v) for v in std]
    if len(mean) == channels:
        return mean, std
    # One channel (radiographs) or another count: the mean statistics, repeated (timm's
    # adapt_input_conv sums the RGB kernels, i.e. treats the grey image as equal R, G, B).
    return [sum(mean) / len(mean)] * channels, [sum(std) / len(std)] * channels


# ----------------------------------------------------------------------------------- weights


def _read_state(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """The file's tensors, unwrapped as timm's ``load_state_dict`` does (``state_dict_ema``,
    ``model_ema``, ``state_dict``, ``model``; ``module.`` prefixes of DataParallel removed).

    timm's rule rather than :func:`shiftkit.adapt.training.checkpoint.unwrap_state` (the rule for
    shiftkit's own files): library checkpoints keep their EMA weights first and DataParallel
    prefixes, which the library's own loader takes this way."""
    from shiftkit.adapt.training.checkpoint import read_weights

    obj = read_weights(path)
    if isinstance(obj, dict):
        for key in ("state_dict_ema", "model_ema", "state_dict", "model"):
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightsMismatchError(f"{path}: not a state dict of tensors (a mapping of names to tensors)")
    return {(k[7:] if k.startswith("module.") else k): v for k, v in obj.items()}


def _mismatch(path: Any, name: str, want: dict[str, torch.Tensor], have: dict[str, torch.Tensor],
              ignore: tuple[str, ...] = ()) -> list[str]:
    """Readable differences between the network's state ``want`` and the file's ``have``."""
    missing = [k for k in want if k not in have and not k.startswith(ignore)]
    unexpected = [k for k in have if k not in want and not k.startswith(ignore)]
    shape = [f"{k} {tuple(have[k].shape)} in the file, {tuple(want[k].shape)} in the network"
             for k in want if k in have and tuple(have[k].shape) != tuple(want[k].shape) and not k.startswith(ignore)]
    out = []
    if missing:
        out.append(f"{len(missing)} missing key(s), first {missing[:5]}")
    if unexpected:
        out.append(f"{len(unexpected)} unexpected key(s), first {unexpected[:5]}")
    if shape:
        out.append(f"{len(shape)} shape mismatch(es), first {shape[:3]}")
    return out


def _raise_mismatch(path: Any, name: str, problems: list[str]) -> None:
    raise WeightsMismatchError(f"{path}: weights do not fit {name}: " + "; ".join(problems))


def _load_strict(module: nn.Module, state: dict[str, torch.Tensor], path: Any, name: str) -> None:
    problems = _mismatch(path, name, module.state_dict(), state)
    if problems:
        _raise_mismatch(path, name, problems)
    module.load_state_dict(state, strict=True)


# -------------------------------------------------------------------------------------- timm


class _TimmEncoder(nn.Module):
    """A timm model without its classifier: images ``(N, C, H, W)`` in [0, 1] -> ``(N, D)``."""

    def __init__(self, net: nn.Module, normalize: Normalize):
        super().__init__()
        self.normalize = normalize
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.forward_head(self.net.forward_features(self.normalize(x)), pre_logits=True)


def _reset_classifier(net: nn.Module, num_classes: int, kw: dict) -> None:
    # Some models' reset_classifier also resets the pooling to its default: keep the one asked for.
    if "global_pool" in kw:
        net.reset_classifier(num_classes, global_pool=kw["global_pool"])
    else:
        net.reset_classifier(num_classes)


def _timm(name: str, in_channels: int, num_classes: int | None, weights: Any, options: dict) -> tuple:
    import timm
    from timm.data import resolve_data_config

    kw = dict(options)
    if weights is None:
        if num_classes is None:
            raise ConfigError("build_classifier", [f"timm:{name}: num_classes is needed without weights"])
        net = timm.create_model(name, pretrained=False, num_classes=num_classes, in_chans=in_channels, **kw)
    else:
        state = _read_state(weights)
        probe = timm.create_model(name, pretrained=False, in_chans=in_channels, **kw)
        cls = probe.pretrained_cfg.get("classifier") or "head"
        cls = cls[0] if isinstance(cls, (list, tuple)) else cls
        file_k = int(state[f"{cls}.weight"].shape[0]) if f"{cls}.weight" in state else 0
        try:
            # timm's own loader: checkpoint filter, adapt_input_conv for in_chans, strict keys.
            net = timm.create_model(name, pretrained=True, num_classes=file_k, in_chans=in_channels,
                                    pretrained_cfg_overlay={"state_dict": state, "num_classes": file_k}, **kw)
        except (RuntimeError, KeyError, ValueError) as exc:
            ref = timm.create_model(name, pretrained=False, num_classes=file_k, in_chans=3, **kw)
            problems = _mismatch(weights, f"timm:{name}", ref.state_dict(), state) or [str(exc).splitlines()[0][:300]]
            _raise_mismatch(weights, f"timm:{name}", problems)
        if num_classes is None:
            if file_k == 0:
                raise ConfigError("build_classifier", [f"{weights}: holds no classifier; give num_classes"])
            num_classes = file_k
        if num_classes != file_k:
            _reset_classifier(net, num_classes, kw)  # timm's new head for the task's classes
    cfg = resolve_data_config({}, model=net)
    head = net.get_classifier()
    if not isinstance(head, nn.Module):  # e.g. distilled DeiT: (head, head_dist)
        raise ConfigError("build_classifier", [f"timm:{name} has {len(head)} classifiers; the split protocol needs "
                                               "one (use the model's non-distilled variant)"])
    _reset_classifier(net, 0, kw)  # the head lives beside the encoder, not inside it
    mean, std = _channel_stats(cfg["mean"], cfg["std"], in_channels)
    size = [in_channels, *[int(s) for s in cfg["input_size"][1:]]]
    if "img_size" in kw:
        s = kw["img_size"]
        size = [in_channels, *(list(s) if isinstance(s, (list, tuple)) else [s, s])]
    dim = int(getattr(head, "in_features", None) or getattr(net, "head_hidden_size", None) or net.num_features)
    return _TimmEncoder(net, Normalize(mean, std)), head, dim, num_classes, mean, std, size


# ------------------------------------------------------------------------------- torchvision


class _TvEncoder(nn.Module):
    def __init__(self, net: nn.Module, normalize: Normalize):
        super().__init__()
        self.normalize = normalize
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(self.net(self.normalize(x)), 1)


def _last_linear(net: nn.Module) -> str:
    names = [n for n, m in net.named_modules() if isinstance(m, nn.Linear)]
    if not names:
        raise ConfigError("build_classifier", [f"{type(net).__name__} has no nn.Linear classifier"])
    return names[-1]


def _set_module(net: nn.Module, qualified: str, new: nn.Module) -> None:
    parent, _, leaf = qualified.rpartition(".")
    setattr(net.get_submodule(parent) if parent else net, leaf, new)


def _first_conv(net: nn.Module) -> str:
    return next(n for n, m in net.named_modules() if isinstance(m, nn.Conv2d))


_DENSENET_OLD = re.compile(r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var))$")


def _tv(name: str, in_channels: int, num_classes: int | None, weights: Any, options: dict) -> tuple:
    import torchvision

    try:
        builder = torchvision.models.get_model_builder(name)
    except ValueError:
        raise ConfigError("build_classifier", [f"tv:{name}: not a torchvision model; choose from "
                                               f"{torchvision.models.list_models(torchvision.models)}"]) from None
    probe = builder(weights=None, **options)
    cls_name = _last_linear(probe)
    if weights is not None:
        state = _read_state(weights)
        if name.startswith("densenet"):  # torchvision's own renaming of its old DenseNet keys
            state = {(f"{m.group(1)}{m.group(2)}" if (m := _DENSENET_OLD.match(k)) else k): v for k, v in state.items()}
        file_k = int(state[f"{cls_name}.weight"].shape[0]) if f"{cls_name}.weight" in state else 0
        net = builder(weights=None, num_classes=file_k or 1000, **options)
        if file_k == 0:  # headless file: the classifier is new anyway
            want = {k: v for k, v in net.state_dict().items() if not k.startswith(cls_name + ".")}
            problems = _mismatch(weights, f"tv:{name}", want, state)
            if problems:
                _raise_mismatch(weights, f"tv:{name}", problems)
            net.load_state_dict(state, strict=False)
        else:
            _load_strict(net, state, weights, f"tv:{name}")
        num_classes = num_classes or file_k
        if not num_classes:
            raise ConfigError("build_classifier", [f"{weights}: holds no classifier; give num_classes"])
    else:
        if num_classes is None:
            raise ConfigError("build_classifier", [f"tv:{name}: num_classes is needed without weights"])
        net, file_k = builder(weights=None, num_classes=num_classes, **options), num_classes
    old: nn.Linear = net.get_submodule(cls_name)
    head = old if num_classes == file_k else nn.Linear(old.in_features, num_classes)
    _set_module(net, cls_name, nn.Identity())
    if in_channels != 3:
        from timm.models import adapt_input_conv

        conv_name = _first_conv(net)
        conv: nn.Conv2d = net.get_submodule(conv_name)
        new = nn.Conv2d(in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, conv.dilation,
                        conv.groups, conv.bias is not None, conv.padding_mode)
        with torch.no_grad():
            new.weight.copy_(adapt_input_conv(in_channels, conv.weight))
            if conv.bias is not None:
                new.bias.copy_(conv.bias)
        _set_module(net, conv_name, new)
    mean, std, size = IMAGENET_MEAN, IMAGENET_STD, [in_channels, 224, 224]
    try:  # the default weights' own transforms (metadata only: nothing is downloaded)
        t = torchvision.models.get_model_weights(name).DEFAULT.transforms()
        mean, std, size = t.mean, t.std, [in_channels, *([int(t.crop_size[0])] * 2)]
    except (ValueError, AttributeError, TypeError, IndexError):
        pass
    mean, std = _channel_stats(mean, std, in_channels)
    return _TvEncoder(net, Normalize(mean, std)), head, int(old.in_features), num_classes, mean, std, size


def build_ecosystem_classifier(name: str, in_channels: int, num_classes: int | None, *, weights: Any = None,
                               dropout: float = 0.0, normalize: bool = True, **options: Any) -> Any:
    """A ``timm:`` or ``tv:`` classifier as a :class:`~shiftkit.adapt.models.backbones.SplitModel`.

    Args:
        name: ``timm:<model>`` or ``tv:<model>``.
        in_channels: ``C`` of the images ``(N, C, H, W)`` (values in [0, 1]).
        num_classes: ``K``; ``None`` keeps the classifier of ``weights``.
        weights: a local safetensors / weights-only torch file, or ``None`` (random init).
        dropout: dropout before the head.
        normalize: start the encoder with the weights' mean/std normalisation (default).
        options: keyword arguments for the library's constructor (e.g. ``img_size=64`` for a
            timm ViT); JSON values only, they are stored in the architecture record.

    Returns:
        SplitModel with ``encoder: (N, C, H, W) -> (N, D)`` and ``head: (N, D) -> (N, K)``.
    """
    from shiftkit.adapt.models.backbones import SplitModel

    lib, _, model_name = name.partition(":")
    lib = lib.lower()
    if weights is not None and not os.path.isfile(weights):
        raise DataError(f"{weights}: weights file not found (for {name})")
    if lib == "timm":
        enc, head, dim, k, mean, std, size = _timm(model_name, in_channels, num_classes, weights, options)
    elif lib == "tv":
        enc, head, dim, k, mean, std, size = _tv(model_name, in_channels, num_classes, weights, options)
    else:
        raise ConfigError("build_classifier", [f"{name!r}: classifiers are timm:<name> or tv:<name> "
                                               "(smp: names are segmenters)"])
    if not normalize:
        mean, std = [0.0] * in_channels, [1.0] * in_channels
        enc.normalize = Normalize(mean, std)
    if dropout > 0:
        head = nn.Sequential(nn.Dropout(dropout), head)
    arch = {"kind": "classifier", "name": f"{lib}:{model_name}", "in_channels": in_channels, "num_classes": k,
            "dropout": dropout, "options": dict(options),
            "normalize": {"mean": list(mean), "std": list(std), "input_size": list(size)}}
    return SplitModel(enc, head, dim, arch)


def build_ecosystem_segmenter(name: str, in_channels: int, num_classes: int | None, *, weights: Any = None,
                              normalize: bool = True, **options: Any) -> Any:
    """An ``smp:<Arch>-<encoder>`` segmenter (see :func:`shiftkit.adapt.models.smp.build_smp_segmenter`)."""
    from shiftkit.adapt.models.smp import build_smp_segmenter

    return build_smp_segmenter(name, in_channels, num_classes, weights=weights, normalize=normalize, **options)


def rebuild(arch: dict) -> nn.Module:
    """The network an ``arch`` record of this module describes, with random weights (for ``load``)."""
    norm = arch.get("normalize") or {}
    kind = arch.get("kind")
    model = (build_ecosystem_segmenter if kind == "segmenter" else build_ecosystem_classifier)(
        str(arch["name"]), int(arch["in_channels"]), int(arch["num_classes"]), **({} if kind == "segmenter" else
                                                                                    {"dropout": float(arch.get("dropout", 0.0))}),
        **dict(arch.get("options") or {}))
    if norm.get("mean") is not None:
        mod = model.encoder.normalize if kind != "segmenter" else model.net.normalize
        fresh = Normalize(tuple(norm["mean"]), tuple(norm["std"]))
        mod.mean.copy_(fresh.mean)
        mod.std.copy_(fresh.std)
        model.arch["normalize"] = dict(norm)
    return model
