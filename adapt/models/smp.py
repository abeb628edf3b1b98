"""segmentation-models-pytorch segmenters (``smp:<Arch>-<encoder>``) as shiftkit ``SegModel``s.

See :mod:`shiftkit.adapt.models.ecosystem` for the naming, weights and normalisation rules
shared with the timm and torchvision classifiers.
"""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import nn

from shiftkit.adapt.models.ecosystem import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    Normalize,
    WeightsMismatchError,
    _channel_stats,
    _first_conv,
    _load_strict,
    _mismatch,
    _raise_mismatch,
    _read_state,
)
from shiftkit.datasets.errors import ConfigError, DataError

__all__ = ["build_smp_segmenter"]

class _Normalized(nn.Module):
    """``net(normalize(x))``: a segmentation network fed images in [0, 1]."""

    def __init__(self, net: nn.Module, normalize: Normalize):
        super().__init__()
        self.normalize = normalize
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.normalize(x))


def _smp_net(name: str, in_channels: int, num_classes: int | None, weights: Any, options: dict) -> tuple:
    import segmentation_models_pytorch as smp

    arch_name, sep, encoder = name.partition("-")
    if not sep or not encoder:
        raise ConfigError("build_segmenter", [f"smp:{name}: write smp:<Arch>-<encoder>, e.g. smp:Unet-resnet18"])

    def make(c: int, k: int) -> nn.Module:
        try:
            return smp.create_model(arch_name, encoder_name=encoder, encoder_weights=None, in_channels=c, classes=k,
                                    **options)
        except (KeyError, ValueError) as exc:
            raise ConfigError("build_segmenter", [f"smp:{name}: {exc}"]) from None

    if weights is None:
        if num_classes is None:
            raise ConfigError("build_segmenter", [f"smp:{name}: num_classes is needed without weights"])
        return make(in_channels, num_classes), num_classes
    state = _read_state(weights)
    full = any(k.startswith("encoder.") for k in state)
    ref = make(3, num_classes or 1)
    conv = _first_conv(ref.encoder) + ".weight"
    key = f"encoder.{conv}" if full else conv
    if key not in state:
        _raise_mismatch(weights, f"smp:{name}", [f"no first-convolution key {key!r}; first keys {list(state)[:5]}"])
    file_c = int(state[key].shape[1])
    head_keys = [k for k in state if k.startswith("segmentation_head.")]
    file_k = int(state["segmentation_head.0.weight"].shape[0]) if "segmentation_head.0.weight" in state else None
    num_classes = num_classes or file_k
    if num_classes is None:
        raise ConfigError("build_segmenter", [f"{weights}: holds no segmentation head; give num_classes"])
    net = make(file_c, num_classes)
    if full:
        if file_k != num_classes:  # a new head for the task's classes
            state = {k: v for k, v in state.items() if k not in head_keys}
            want = {k: v for k, v in net.state_dict().items() if not k.startswith("segmentation_head.")}
        else:
            want = net.state_dict()
        problems = _mismatch(weights, f"smp:{name}", want, state)
        if problems:
            _raise_mismatch(weights, f"smp:{name}", problems)
        net.load_state_dict(state, strict=False)
    else:
        # smp's encoders drop the ImageNet classifier (fc / classifier) themselves.
        want = net.encoder.state_dict()
        extra = [k for k in state if k not in want and k.split(".")[0] in ("fc", "classifier", "head")]
        state = {k: v for k, v in state.items() if k not in extra}
        _load_strict(net.encoder, state, weights, f"smp:{name} encoder")
    if in_channels != file_c:
        if file_c != 3:
            raise WeightsMismatchError(f"{weights}: the file's first convolution takes {file_c} channels; only "
                                       f"3-channel weights can be adapted to {in_channels}")
        net.encoder.set_in_channels(in_channels, pretrained=True)  # smp's own first-conv adaptation
    return net, num_classes


def build_smp_segmenter(name: str, in_channels: int, num_classes: int | None, *, weights: Any = None,
                        normalize: bool = True, **options: Any) -> Any:
    """An ``smp:<Arch>-<encoder>`` segmenter as a :class:`~shiftkit.adapt.models.backbones.SegModel`.

    ``forward(x) -> (N, K, H, W)`` logits; ``features(x) -> (N, D)`` the deepest encoder map
    (``D = encoder.out_channels[-1]``) average pooled. ``H`` and ``W`` must be divisible by
    ``2 ** encoder_depth`` (32 by default). ``options`` go to ``smp.create_model`` (e.g.
    ``encoder_depth=3, decoder_channels=[64, 32, 16]``).
    """
    from shiftkit.adapt.models.backbones import SegModel

    lib, _, model_name = name.partition(":")
    if lib.lower() != "smp":
        raise ConfigError("build_segmenter", [f"{name!r}: ecosystem segmenters are smp:<Arch>-<encoder>"])
    if weights is not None and not os.path.isfile(weights):
        raise DataError(f"{weights}: weights file not found (for {name})")
    net, k = _smp_net(model_name, in_channels, num_classes, weights, options)
    mean, std = _channel_stats(IMAGENET_MEAN, IMAGENET_STD, in_channels)
    enc_name = model_name.partition("-")[2]
    if enc_name.startswith("tu-"):  # timm encoders carry their own pretrained config
        import timm

        cfg = timm.models.get_pretrained_cfg(enc_name[3:])
        if cfg is not None and cfg.mean:
            mean, std = _channel_stats(cfg.mean, cfg.std, in_channels)
    if not normalize:
        mean, std = [0.0] * in_channels, [1.0] * in_channels
    arch = {"kind": "segmenter", "name": f"smp:{model_name}", "in_channels": in_channels, "num_classes": k,
            "spatial_dims": 2, "options": dict(options),
            "normalize": {"mean": list(mean), "std": list(std), "input_size": None}}
    return SegModel(_Normalized(net, Normalize(mean, std)), net.encoder, int(net.encoder.out_channels[-1]), arch)
