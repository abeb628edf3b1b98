"""Backbones split into an encoder (image -> features) and a head (features -> logits).

Every adaptation method needs the split: DANN attaches its domain discriminator to the
encoder output, a linear probe freezes the encoder, AdaBN re-estimates the encoder's batch
norm statistics. Networks are MONAI networks, or timm / torchvision / segmentation-models-pytorch
networks named ``timm:<name>``, ``tv:<name>``, ``smp:<Arch>-<encoder>``
(:mod:`shiftkit.adapt.models.ecosystem`), all built with ``pretrained=False`` (nothing is
ever downloaded); weights come from files on disk.

The split protocol (what ``as_split_model`` accepts)
----------------------------------------------------
* a :class:`SplitModel` (returned by :func:`build_classifier`);
* any ``nn.Module`` with attributes ``.encoder`` (``(N, C, H, W) -> (N, D)``) and ``.head``
  (``(N, D) -> (N, K)``) whose ``forward(x) == head(encoder(x))``;
* a pair ``(encoder, head)`` of modules.

Segmenters follow :class:`SegModel`: ``forward(x) -> (N, K, H, W)`` logits,
``features(x) -> (N, D)`` pooled bottleneck features, ``encode(x)`` the bottleneck map.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from shiftkit.adapt.models.ecosystem import (
    build_ecosystem_classifier,
    build_ecosystem_segmenter,
    is_ecosystem_name,
)
from shiftkit.datasets.errors import ConfigError

__all__ = [
    "CLASSIFIER_NAMES",
    "SEGMENTER_NAMES",
    "SplitModel",
    "SegModel",
    "as_split_model",
    "build_classifier",
    "build_mlp",
    "build_segmenter",
]

CLASSIFIER_NAMES = (
    "densenet121",
    "resnet10",
    "resnet18",
    "resnet34",
    "resnet50",
    "efficientnet-b0",
    "tiny",
)
SEGMENTER_NAMES = (
    "unet",
    "basicunet",
    "flexibleunet-resnet18",
    "flexibleunet-resnet34",
    "flexibleunet-resnet50",
    "flexibleunet-efficientnet-b0",
    "segresnet",
    "tiny-unet",
)


class SplitModel(nn.Module):
    """A classifier as ``head(encoder(x))``.

    Args:
        encoder: module mapping images ``(N, C, H, W)`` float32 to features ``(N, D)``.
        head: module mapping features ``(N, D)`` to logits ``(N, K)``.
        feature_dim: ``D``.
        arch: optional dict describing how the model was built (stored in saved models so
            :func:`shiftkit.adapt.load` can rebuild it without unpickling anything).
    """

    def __init__(self, encoder: nn.Module, head: nn.Module, feature_dim: int, arch: dict | None = None):
        super().__init__()
        self.encoder = encoder
        self.head = head
        self.feature_dim = int(feature_dim)
        self.arch = dict(arch or {})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(N, K)`` for images ``(N, C, H, W)``."""
        return self.head(self.encoder(x))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Encoder features ``(N, D)``."""
        return self.encoder(x)


def _feature_dim_of(head: nn.Module) -> int | None:
    for m in head.modules():
        if isinstance(m, nn.Linear):
            return int(m.in_features)
    return None


def as_split_model(model: nn.Module | tuple[nn.Module, nn.Module] | Sequence[nn.Module]) -> nn.Module:
    """Return a module exposing ``.encoder``/``.head`` (classifier) or a :class:`SegModel`.

    Accepts a :class:`SplitModel`, a :class:`SegModel`, any module with ``.encoder`` and
    ``.head`` attributes, or an ``(encoder, head)`` pair. Raises :class:`ConfigError` otherwise.
    """
    if isinstance(model, (SplitModel, SegModel)):
        return model
    if isinstance(model, (tuple, list)):
        if len(model) != 2 or not all(isinstance(m, nn.Module) for m in model):
            raise ConfigError("model", ["an (encoder, head) pair must hold exactly two nn.Module objects"])
        enc, head = model
        dim = _feature_dim_of(head)
        return SplitModel(enc, head, dim if dim is not None else -1)
    if isinstance(model, nn.Module) and isinstance(getattr(model, "encoder", None), nn.Module) and isinstance(
        getattr(model, "head", None), nn.Module
    ):
        if not hasattr(model, "feature_dim"):
            dim = _feature_dim_of(model.head)
            if dim is not None:
                model.feature_dim = dim
        return model
    raise ConfigError(
        "model",
        [
            f"{type(model).__name__} does not follow the split protocol: give a module with "
            "`.encoder` ((N,C,H,W)->(N,D)) and `.head` ((N,D)->(N,K)) attributes, an "
            "(encoder, head) pair, or a name from shiftkit.adapt.models.backbones.CLASSIFIER_NAMES"
        ],
    )


class _FlattenFeatures(nn.Module):
    """Runs a MONAI network up to (and including) its global pooling; returns ``(N, D)``."""

    def __init__(self, net: nn.Module, stop: Callable[[nn.Module, torch.Tensor], torch.Tensor]):
        super().__init__()
        self.net = net
        self._stop = stop

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._stop(self.net, x)


def _efficientnet_features(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    # Mirrors monai EfficientNet.forward minus dropout and the final linear layer.
    x = net._conv_stem(net._conv_stem_padding(x))
    x = net._swish(net._bn0(x))
    x = net._blocks(x)
    x = net._conv_head(net._conv_head_padding(x))
    x = net._swish(net._bn1(x))
    x = net._avg_pooling(x)
    return x.flatten(start_dim=1)


def build_classifier(
    name: str,
    in_channels: int,
    num_classes: int,
    *,
    spatial_dims: int = 2,
    dropout: float = 0.0,
    weights: str | os.PathLike[str] | None = None,
    **options: Any,
) -> SplitModel:
    """Build a classifier split into encoder and head (never downloads weights).

    Args:
        name: one of :data:`CLASSIFIER_NAMES` (MONAI networks), or ``timm:<name>`` /
            ``tv:<name>`` (see :mod:`shiftkit.adapt.models.ecosystem`). ``"tiny"`` is a
            MONAI ResNet with one basic block per stage and widths 8-16-32-64 (about 0.2 M
            parameters, any input size), for tests and quick demos.
        in_channels: image channels ``C`` (1 for radiographs, 3 for dashcam).
        num_classes: ``K``; logits are ``(N, K)`` (binary tasks use ``K = 2``).
        spatial_dims: 2 for images, 3 for volumes.
        dropout: dropout before the head's linear layer.
        weights: a local weights file (safetensors or weights-only torch), mapped the way the
            library maps it; ``None`` = random init. For ``timm:``/``tv:`` names
            ``num_classes=None`` keeps the file's classifier.
        options: keyword arguments for a ``timm:``/``tv:`` constructor (e.g. ``img_size=64``).

    Returns:
        :class:`SplitModel` with ``encoder: (N, C, *spatial) -> (N, D)``.
    """
    if is_ecosystem_name(name):  # before importing MONAI (which imports much of its ecosystem: seconds)
        return build_ecosystem_classifier(name, in_channels, num_classes, weights=weights, dropout=dropout, **options)
    from monai.networks import nets

    if options:
        raise ConfigError("build_classifier", [f"{name!r}: options {sorted(options)} apply to timm:/tv: names only"])

    if not isinstance(in_channels, int) or in_channels < 1:
        raise ConfigError("build_classifier", [f"in_channels must be a positive int, got {in_channels!r}"])
    if not isinstance(num_classes, int) or num_classes < 2:
        raise ConfigError(
            "build_classifier", [f"num_classes must be an int >= 2 (binary: 2), got {num_classes!r}"]
        )
    key = name.lower()
    arch = {
        "kind": "classifier",
        "name": key,
        "in_channels": in_channels,
        "num_classes": num_classes,
        "spatial_dims": spatial_dims,
        "dropout": dropout,
    }
    if key == "densenet121":
        net = nets.DenseNet121(
            spatial_dims=spatial_dims, in_channels=in_channels, out_channels=num_classes, pretrained=False
        )
        dim = net.class_layers.out.in_features
        encoder = nn.Sequential(
            net.features, net.class_layers.relu, net.class_layers.pool, net.class_layers.flatten
        )
    elif key in ("resnet10", "resnet18", "resnet34", "resnet50", "tiny"):
        if key == "tiny":
            net = nets.ResNet(
                block="basic",
                layers=[1, 1, 1, 1],
                block_inplanes=[8, 16, 32, 64],
                spatial_dims=spatial_dims,
                n_input_channels=in_channels,
                conv1_t_size=3,
                conv1_t_stride=1,
                no_max_pool=True,
                feed_forward=False,
            )
        else:
            # conv1 stride 2 as in the ImageNet ResNet; MONAI's default of 1 quadruples the
            # cost at 224 x 224 for no accuracy benefit on radiographs.
            net = getattr(nets, key)(
                pretrained=False,
                spatial_dims=spatial_dims,
                n_input_channels=in_channels,
                conv1_t_stride=2,
                feed_forward=False,
            )
        dim = net.layer4[-1].conv2.out_channels if key in ("resnet10", "resnet18", "resnet34", "tiny") else (
            net.layer4[-1].conv3.out_channels
        )
        encoder = net
    elif key == "efficientnet-b0":
        net = nets.EfficientNetBN(
            "efficientnet-b0",
            pretrained=False,
            progress=False,
            spatial_dims=spatial_dims,
            in_channels=in_channels,
            num_classes=num_classes,
        )
        dim = net._fc.in_features
        net._fc = nn.Identity()  # the head owns the classifier layer
        encoder = _FlattenFeatures(net, _efficientnet_features)
    else:
        raise ConfigError("build_classifier", [f"unknown backbone {name!r}; choose from {list(CLASSIFIER_NAMES)}"])
    head: nn.Module = nn.Linear(dim, num_classes)
    if dropout > 0:
        head = nn.Sequential(nn.Dropout(dropout), head)
    model = SplitModel(encoder, head, dim, arch)
    if weights is not None:
        _load_weights_strict(model, weights, key)
    return model


def _load_weights_strict(model: nn.Module, weights: str | os.PathLike[str], name: str) -> None:
    from shiftkit.adapt.models.ecosystem import _load_strict
    from shiftkit.adapt.training.checkpoint import read_weights, unwrap_state

    _load_strict(model, unwrap_state(read_weights(weights), model), weights, name)


_ACTIVATIONS = {"relu": nn.ReLU, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh}


def build_mlp(in_features: int, hidden: Sequence[int], num_classes: int, *, activation: str = "relu") -> SplitModel:
    """A small MLP classifier on vectors ``(N, in_features)`` (e.g. the DANN two-moons toy).

    The encoder is ``Linear -> activation`` per hidden layer (features ``(N, hidden[-1])``),
    the head one ``Linear``. ``activation``: ``"relu"``, ``"sigmoid"`` (the shallow DANN of
    Ganin et al. 2016) or ``"tanh"``. Used for tabular/toy problems and in tests.
    """
    if activation not in _ACTIVATIONS:
        raise ConfigError("build_mlp", [f"activation must be one of {sorted(_ACTIVATIONS)}, got {activation!r}"])
    layers: list[nn.Module] = []
    prev = in_features
    for h in hidden:
        layers += [nn.Linear(prev, h), _ACTIVATIONS[activation]()]
        prev = h
    arch = {"kind": "mlp", "in_features": in_features, "hidden": list(hidden), "num_classes": num_classes,
            "activation": activation}
    return SplitModel(nn.Sequential(*layers), nn.Linear(prev, num_classes), prev, arch)


# --------------------------------------------------------------------------------------
# Segmentation
# --------------------------------------------------------------------------------------


class SegModel(nn.Module):
    """A segmenter with access to its bottleneck.

    Args:
        net: the full MONAI segmentation network, ``(N, C, H, W) -> (N, K, H, W)``.
        bottleneck: the submodule whose output is the deepest encoder feature map; a
            forward hook captures it so the network is run once for logits and features.
        feature_dim: channels ``D`` of the bottleneck map.
        encoder: optional module computing the bottleneck map alone (cheaper than a full
            forward when only features are needed); defaults to running ``net``.
    """

    def __init__(
        self,
        net: nn.Module,
        bottleneck: nn.Module,
        feature_dim: int,
        arch: dict | None = None,
        encoder: nn.Module | None = None,
    ):
        super().__init__()
        self.net = net
        self.feature_dim = int(feature_dim)
        self.arch = dict(arch or {})
        self._bottleneck_name = next(n for n, m in net.named_modules() if m is bottleneck)
        self._encoder_fn = encoder
        self._captured: torch.Tensor | None = None
        bottleneck.register_forward_hook(self._capture)

    def _capture(self, _module: nn.Module, _inp: object, out: torch.Tensor | Sequence[torch.Tensor]) -> None:
        if isinstance(out, (list, tuple)):
            out = out[-1]
        self._captured = out

    @property
    def encoder(self) -> nn.Module:
        """The network's encoder part (the modules frozen by a linear probe)."""
        return self._encoder_fn if self._encoder_fn is not None else self.net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(N, K, H, W)``."""
        logits = self.net(x)
        # Drop the hook's capture: holding it would keep the activation (and its graph) alive
        # and make the model impossible to deepcopy.
        self._captured = None
        return logits

    def forward_with_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(logits (N, K, H, W), bottleneck map (N, D, h, w))`` from one forward pass."""
        self._captured = None
        logits = self.net(x)
        feat = self._captured
        self._captured = None
        if feat is None:  # pragma: no cover - the hook is always registered
            raise RuntimeError("bottleneck hook did not fire")
        return logits, feat

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Bottleneck feature map ``(N, D, h, w)``."""
        return self.forward_with_features(x)[1]

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Globally average-pooled bottleneck features ``(N, D)``."""
        return self.encode(x).mean(dim=tuple(range(2, x.dim())))


def build_segmenter(name: str, in_channels: int, num_classes: int, *, spatial_dims: int = 2,
                    weights: str | os.PathLike[str] | None = None, **options: Any) -> SegModel:
    """Build a segmenter exposing logits and encoder features (``pretrained=False``).

    ``smp:<Arch>-<encoder>`` names are segmentation-models-pytorch networks (see
    :mod:`shiftkit.adapt.models.ecosystem`; ``options`` go to ``smp.create_model``);
    ``weights`` is a local weights file. MONAI names (:data:`SEGMENTER_NAMES`): ``"unet"`` (MONAI UNet 32-64-128-256-512),
    ``"basicunet"``, ``"flexibleunet-<encoder>"`` (resnet18/34/50 or efficientnet-b0),
    ``"segresnet"``, ``"tiny-unet"`` (UNet 8-16-32, for tests). Input height and width must
    be divisible by 16 (32 for FlexibleUNet; 4 for tiny-unet).

    Returns:
        :class:`SegModel`: ``forward(x) -> (N, K, H, W)``, ``features(x) -> (N, D)``.
    """
    if is_ecosystem_name(name):
        return build_ecosystem_segmenter(name, in_channels, num_classes, weights=weights, **options)
    from monai.networks import nets

    if options:
        raise ConfigError("build_segmenter", [f"{name!r}: options {sorted(options)} apply to smp: names only"])
    key = name.lower()
    arch = {
        "kind": "segmenter",
        "name": key,
        "in_channels": in_channels,
        "num_classes": num_classes,
        "spatial_dims": spatial_dims,
    }
    if not isinstance(num_classes, int) or num_classes < 2:
        raise ConfigError("build_segmenter", [f"num_classes must be an int >= 2, got {num_classes!r}"])
    if key in ("unet", "tiny-unet"):
        channels = (8, 16, 32) if key == "tiny-unet" else (32, 64, 128, 256, 512)
        net = nets.UNet(
            spatial_dims=spatial_dims,
            in_channels=in_channels,
            out_channels=num_classes,
            channels=channels,
            strides=(2,) * (len(channels) - 1),
            num_res_units=1,
            norm="batch",
        )
        # MONAI UNet nests SkipConnection(Sequential(down, SkipConnection(...), up)); the
        # innermost sub-block is the bottom (bottleneck) layer.
        block = net.model
        while True:
            inner = block[1].submodule if len(block) > 1 and hasattr(block[1], "submodule") else None
            if inner is None:
                break
            nxt = inner[1] if isinstance(inner, nn.Sequential) and len(inner) == 3 else None
            if nxt is None or not hasattr(nxt, "submodule"):
                bottleneck = inner[1] if isinstance(inner, nn.Sequential) else inner
                break
            block = inner
        dim = channels[-1]
    elif key == "basicunet":
        net = nets.BasicUNet(spatial_dims=spatial_dims, in_channels=in_channels, out_channels=num_classes)
        bottleneck = net.down_4
        dim = net.down_4.convs.conv_1.conv.out_channels
    elif key.startswith("flexibleunet-"):
        backbone = key[len("flexibleunet-") :]
        net = nets.FlexibleUNet(
            in_channels=in_channels,
            out_channels=num_classes,
            backbone=backbone,
            pretrained=False,
            spatial_dims=spatial_dims,
        )
        bottleneck = net.encoder
        with torch.no_grad():
            was = net.training
            net.eval()
            probe = net.encoder(torch.zeros(1, in_channels, *([64] * spatial_dims)))
            net.train(was)
        dim = int(probe[-1].shape[1])
    elif key == "segresnet":
        net = nets.SegResNet(spatial_dims=spatial_dims, in_channels=in_channels, out_channels=num_classes)
        bottleneck = net.down_layers[-1]
        dim = net.init_filters * 2 ** (len(net.down_layers) - 1)
    else:
        raise ConfigError("build_segmenter", [f"unknown segmenter {name!r}; choose from {list(SEGMENTER_NAMES)}"])
    model = SegModel(net, bottleneck, dim, arch)
    if weights is not None:
        _load_weights_strict(model, weights, key)
    return model
