"""SHOT: source hypothesis transfer (Liang et al. 2020, ICML), source-free.

The source classifier head ("hypothesis") is frozen; the encoder (including its bottleneck)
is trained on unlabelled target images only, so that target features fit the source
hypothesis:

.. math::
    L = \\underbrace{-E_x \\sum_k p_k \\log (p_k + \\epsilon)}_{L_{ent}}
        + \\underbrace{\\sum_k \\bar p_k \\log (\\bar p_k + \\epsilon)}_{L_{div}}
        + \\beta \\, E_x\\, L_{CE}(p(x), \\hat y(x)),

with ``p = softmax(head(encoder(x)))``, ``p_bar`` the batch mean, ``epsilon = 1e-5`` and
``y_hat`` the pseudo-label of SHOT's two-round clustering (eq. 4-6, and ``obtain_label`` in
the authors' ``object/image_target.py``): at every epoch start, over the whole target set,
with ``g = encoder`` in eval mode, features extended by a constant 1 and L2-normalised
(cosine distance),

.. math::
    c_k^{(0)} = \\frac{\\sum_x p_k(x)\\, g(x)}{\\sum_x p_k(x)}, \\quad
    \\hat y = \\arg\\min_{k \\in L_0} d_{cos}(g(x), c_k^{(0)}), \\quad
    c_k^{(1)} = \\frac{\\sum_x 1[\\hat y = k]\\, g(x)}{\\sum_x 1[\\hat y = k]}, \\quad
    \\hat y = \\arg\\min_{k \\in L_1} d_{cos}(g(x), c_k^{(1)}),

where ``L_0`` (``L_1``) holds the classes predicted (assigned) for more than ``threshold``
samples. Each target item's label is looked up by its ``index`` (the dataset items carry one);
a dataset without an ``index`` gets the nearest final centroid of each sample's current
features instead (an online variant).

The recipe around the loss is the authors' too (``object/image_source.py``,
``object/image_target.py``, ``object/network.py``): a source model with a bottleneck
(``Linear`` + ``BatchNorm1d``) and a weight-normalised linear classifier trained with label
smoothing 0.1 (:class:`SHOTSource`, :func:`shot_network`); SGD with Nesterov momentum 0.9,
weight decay 1e-3, the learning rate (the authors' 1e-2; :class:`SHOT` takes ``lr`` like every
method) decayed as ``(1 + 10 p)^-0.75``, the backbone at 0.1x the rate of the bottleneck;
BatchNorm in train mode during target steps.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from shiftkit.adapt.methods.alignment_losses import information_maximisation_loss
from shiftkit.adapt.methods.base import Method, Requires, TargetView
from shiftkit.adapt.models.backbones import SplitModel, as_split_model
from shiftkit.adapt.training.data import as_dataset
from shiftkit.adapt.training.schedules import dann_lr_factor
from shiftkit.adapt.training.trainer import batch_to
from shiftkit.datasets.errors import ConfigError

__all__ = ["SHOT", "SHOTSource", "ShotEncoder", "cluster_labels", "label_smoothing_loss", "shot_network"]

#: SHOT's learning rate and weight decay (tim-learn/SHOT object/image_target.py
#: defaults for Office/Office-Home; literature).
SHOT_LR = 1e-2
SHOT_WEIGHT_DECAY = 1e-3


# ------------------------------------------------------------------------------------ network


class ShotEncoder(nn.Module):
    """SHOT's feature extractor: ``bottleneck(backbone(x))``, ``(N, ...) -> (N, bottleneck_dim)``.

    ``bottleneck`` is ``Linear(D, bottleneck_dim)`` then ``BatchNorm1d`` (the authors'
    ``feat_bottleneck`` of type ``"bn"``). SHOT trains the bottleneck at the full learning rate
    and the backbone at ``backbone_lr_mult`` times it.
    """

    def __init__(self, backbone: nn.Module, in_features: int, bottleneck_dim: int = 256):
        super().__init__()
        self.backbone = backbone
        fc = nn.Linear(in_features, bottleneck_dim)
        bn = nn.BatchNorm1d(bottleneck_dim, affine=True)
        # The authors' init_weights: xavier-normal linear weights, zero biases, BN weight ~ N(1, 0.02).
        nn.init.xavier_normal_(fc.weight)
        nn.init.zeros_(fc.bias)
        nn.init.normal_(bn.weight, 1.0, 0.02)
        nn.init.zeros_(bn.bias)
        self.bottleneck = nn.Sequential(fc, bn)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bottleneck(self.backbone(x))


def shot_network(model: nn.Module | tuple[nn.Module, nn.Module], *, num_classes: int | None = None,
                 bottleneck_dim: int = 256, seed: int = 0) -> SplitModel:
    """SHOT's source network around ``model``'s encoder: bottleneck + weight-normalised classifier.

    ``model``: a split-protocol classifier (its head is replaced) or an ``(encoder, head)``
    pair. Returns a :class:`SplitModel` whose encoder is a :class:`ShotEncoder` (features
    ``(N, bottleneck_dim)``) and whose head is ``weight_norm(Linear(bottleneck_dim, K))``
    (``K`` = ``num_classes`` or the old head's output width). The new layers are seeded by ``seed``.
    A model whose encoder already is a :class:`ShotEncoder` is returned as is.
    """
    split = as_split_model(model)
    if isinstance(getattr(split, "encoder", None), ShotEncoder):
        return split
    dim = int(getattr(split, "feature_dim", -1))
    if dim < 1:
        raise ConfigError("shot_network", ["the model needs feature_dim (the encoder's output width D)"])
    if num_classes is None:
        outs = [m.out_features for m in split.head.modules() if isinstance(m, nn.Linear)]
        if not outs:
            raise ConfigError("shot_network", ["pass num_classes: the head has no Linear layer to read it from"])
        num_classes = int(outs[-1])
    torch.manual_seed(seed)
    encoder = ShotEncoder(split.encoder, dim, bottleneck_dim)
    fc = nn.Linear(bottleneck_dim, num_classes)
    nn.init.zeros_(fc.bias)
    # The authors' weightNorm(nn.Linear(...), name="weight") (dim 0: one norm per class).
    head = nn.utils.parametrizations.weight_norm(fc, name="weight", dim=0)
    arch = dict(getattr(split, "arch", {}) or {})
    arch.update({"shot_bottleneck_dim": bottleneck_dim})
    return SplitModel(encoder, head, bottleneck_dim, arch)


def _shot_param_groups(encoder: nn.Module, lr: float, backbone_lr_mult: float, extra: list[nn.Parameter],
                       sgd_options: dict) -> list[dict]:
    """Backbone parameters at ``lr * backbone_lr_mult``; bottleneck (and ``extra``) at ``lr``."""
    bottleneck = getattr(encoder, "bottleneck", None)
    in_bneck = {id(q) for q in bottleneck.parameters()} if isinstance(bottleneck, nn.Module) else set()
    back = [q for q in encoder.parameters() if q.requires_grad and id(q) not in in_bneck]
    full = [q for q in encoder.parameters() if q.requires_grad and id(q) in in_bneck] + extra
    groups = [{"params": back, "lr": lr * backbone_lr_mult, **sgd_options},
              {"params": full, "lr": lr, **sgd_options}]
    return [g for g in groups if g["params"]]


def label_smoothing_loss(logits: torch.Tensor, y: torch.Tensor, epsilon: float = 0.1) -> torch.Tensor:
    """SHOT's ``CrossEntropyLabelSmooth``: ``-mean_i sum_k q_ik log p_ik``, ``q = (1 - eps) onehot + eps / K``.

    ``logits`` ``(N, K)``, ``y`` ``(N,)`` int64. Returns a 0-d tensor.
    """
    logp = F.log_softmax(logits.float(), dim=1)
    q = torch.zeros_like(logp).scatter_(1, y.long().unsqueeze(1), 1)
    q = (1 - epsilon) * q + epsilon / logp.shape[1]
    return (-q * logp).mean(0).sum()


# ------------------------------------------------------------------------------------ clustering


@torch.no_grad()
def cluster_labels(feats: torch.Tensor, proba: torch.Tensor, *, threshold: int = 0, distance: str = "cosine"
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """SHOT's two-round clustering (the authors' ``obtain_label``): pseudo-labels from features and probabilities.

    Args:
        feats: encoder features ``(N, D)``.
        proba: softmax outputs ``(N, K)``.
        threshold: a class takes part in a round when more than ``threshold`` samples are
            predicted (round 1: the network's argmax; round 2: the round-1 labels) as it.
        distance: ``"cosine"`` (features extended by a constant 1 and L2-normalised, as the
            authors do) or ``"euclidean"``.

    Returns:
        ``(labels (N,) int64, centroids (L, D') , labelset (L,) int64)``: the final labels, the
        centroids of the last round's classes (in the extended, normalised feature space for
        cosine) and which class each centroid stands for.
    """
    if distance not in ("cosine", "euclidean"):
        raise ValueError(f"distance must be 'cosine' or 'euclidean', got {distance!r}")
    f = _cluster_space(feats, distance)
    aff = proba.double()
    k = aff.shape[1]
    predict = aff.argmax(1)
    centroids = labelset = None
    for _ in range(2):
        initc = aff.t() @ f / (1e-8 + aff.sum(0)[:, None])
        counts = F.one_hot(predict, k).sum(0)
        labelset = torch.nonzero(counts > threshold).flatten()
        if labelset.numel() == 0:  # every class at or below the threshold: keep the predictions
            labelset = torch.arange(k, device=f.device)
        centroids = initc[labelset]
        predict = labelset[_distances(f, centroids, distance).argmin(1)]
        aff = F.one_hot(predict, k).double()
    return predict, centroids, labelset


def _cluster_space(feats: torch.Tensor, distance: str) -> torch.Tensor:
    f = feats.double()
    if distance == "cosine":
        f = torch.cat([f, torch.ones(f.shape[0], 1, dtype=f.dtype, device=f.device)], 1)
        f = f / f.norm(dim=1, keepdim=True)
    return f


def _distances(f: torch.Tensor, c: torch.Tensor, distance: str) -> torch.Tensor:
    if distance == "cosine":  # scipy's cdist(..., "cosine") = 1 - cos
        return 1.0 - (f @ c.t()) / (f.norm(dim=1, keepdim=True) * c.norm(dim=1)[None, :]).clamp_min(1e-12)
    return torch.cdist(f, c)


# ------------------------------------------------------------------------------------ source recipe


class SHOTSource(Method):
    """SHOT's source training: bottleneck + weight-normalised head, label smoothing, the authors' optimiser.

    ``fit(source, val=...)`` builds :func:`shot_network` around ``model`` (a backbone name or a
    split-protocol module; a SHOT network is kept as is) and trains it on labelled source data
    with :func:`label_smoothing_loss`. Its ``model_`` is what :class:`SHOT` adapts.

    Args:
        model: backbone name or split-protocol module.
        bottleneck_dim: width of the bottleneck (256, the authors'; literature).
        smoothing: label-smoothing ``epsilon`` (0.1, the authors' ``--smooth``; literature).
        backbone_lr_mult: backbone learning rate relative to the bottleneck and head
            (0.1, the authors'; literature).
        lr_schedule: decay the learning rate as ``(1 + 10 p)^-0.75`` (the authors').
        nesterov: Nesterov momentum when ``optimizer="sgd"`` (the authors').
        optimizer, lr, weight_decay, grad_clip: as in :class:`Method`; the defaults are the
            authors' (SGD, 1e-2, 1e-3, no clipping).
        **kwargs: other :class:`Method` arguments.
    """

    requires = Requires(source="labelled", target="none")
    title = "SHOT source model"

    def __init__(self, model: str | nn.Module | tuple = "tiny", *, bottleneck_dim: int = 256, smoothing: float = 0.1,
                 backbone_lr_mult: float = 0.1, lr_schedule: bool = True, nesterov: bool = True,
                 optimizer: str = "sgd", lr: float = SHOT_LR, weight_decay: float = SHOT_WEIGHT_DECAY,
                 grad_clip: float | None = None, **kwargs: Any):
        super().__init__(model, optimizer=optimizer, lr=lr, weight_decay=weight_decay, grad_clip=grad_clip, **kwargs)
        self.bottleneck_dim = bottleneck_dim
        self.smoothing = smoothing
        self.backbone_lr_mult = backbone_lr_mult
        self.lr_schedule = lr_schedule
        self.nesterov = nesterov

    def check_params(self) -> list[str]:
        problems = []
        if not (isinstance(self.smoothing, (int, float)) and 0 <= self.smoothing < 1):
            problems.append(f"smoothing must lie in [0, 1), got {self.smoothing!r}")
        if not (isinstance(self.backbone_lr_mult, (int, float)) and self.backbone_lr_mult >= 0):
            problems.append(f"backbone_lr_mult must be >= 0, got {self.backbone_lr_mult!r}")
        if self.task == "segmentation":
            problems.append("SHOT needs a split-protocol classifier (task='classification')")
        return problems

    def _build_model(self, data: Any) -> nn.Module:
        base = super()._build_model(data)
        return shot_network(base, num_classes=None, bottleneck_dim=self.bottleneck_dim, seed=self.seed)

    def param_groups(self, lr: float) -> list[dict]:
        sgd = {"nesterov": True} if self.nesterov and self.optimizer == "sgd" else {}
        head = [q for q in self.model_.head.parameters() if q.requires_grad]
        return _shot_param_groups(self.model_.encoder, lr, self.backbone_lr_mult, head, sgd)

    def lr_factor(self, p: float) -> float:
        return dann_lr_factor(p) if self.lr_schedule else 1.0

    def training_step(self, source: dict | None, target: dict | None, p: float) -> tuple[torch.Tensor, dict]:
        logits = self.model_(source["image"])
        y = source["label"].long()
        loss = label_smoothing_loss(logits, y, self.smoothing)
        return loss, {"train_acc": (logits.detach().argmax(1) == y).float().mean()}


# ------------------------------------------------------------------------------------ SHOT


class SHOT(Method):
    """Source-free adaptation: frozen head, encoder trained by information maximisation + clustered pseudo-labels.

    ``fit(None, target)``: the source argument must be ``None``. Start from a model trained by
    :class:`SHOTSource` (bottleneck + weight-normalised head, label smoothing) for the authors'
    recipe; any split-protocol model works, with its whole encoder as the "backbone".

    Args:
        model: the trained source model (split protocol: ``.encoder`` and ``.head``).
        beta: weight of the pseudo-label cross-entropy (0.3, the authors' ``cls_par``; 0 = SHOT-IM).
        diversity_weight: weight of ``L_div`` (1: the authors' ``gent``).
        epsilon: inside the logarithms of ``L_ent`` and ``L_div`` (1e-5, the authors').
        threshold: a class takes part in a clustering round when more than this many samples
            are assigned to it (0, the authors' ``--threshold``).
        distance: ``"cosine"`` (the authors' default) or ``"euclidean"`` clustering distance.
        backbone_lr_mult: learning rate of the encoder outside its ``bottleneck`` relative to
            ``lr`` (0.1: the authors' ``lr_decay1``; the bottleneck trains at ``lr``,
            ``lr_decay2`` = 1).
        lr_schedule: decay the learning rate as ``(1 + 10 p)^-0.75`` (the authors').
        nesterov: Nesterov momentum when ``optimizer="sgd"`` (the authors').
        optimizer, weight_decay, grad_clip: as in :class:`Method`; the defaults are the authors'
            (SGD, 1e-3, no clipping). They are SHOT's own settings: in ``shiftkit run`` they
            replace ``train.optimizer``/``train.weight_decay`` (with the run's AdamW, SHOT fell
            below source-only on the radiograph development seeds; ``docs/methods.md``).
        **kwargs: other :class:`Method` arguments (``lr``: the authors use 1e-2 with an
            ImageNet-pretrained backbone; ``shiftkit run`` gives ``train.lr * lr_mult``, like
            every source-free method, and on the radiograph development seeds 2.5e-4 and 1e-2
            did equally well; epochs, batch_size, seed, device, ...).

    After ``fit``: ``pseudo_labels_`` (the last epoch's labels, in target order) and
    ``label_source_`` (``"index"`` when labels were looked up by item index, ``"online"`` otherwise).
    """

    requires = Requires(source="none", target="unlabelled")
    title = "SHOT (source-free)"
    recipe = "source_free"

    def __init__(self, model: str | nn.Module | tuple = "tiny", *, beta: float = 0.3, diversity_weight: float = 1.0,
                 epsilon: float = 1e-5, threshold: int = 0, distance: str = "cosine", backbone_lr_mult: float = 0.1,
                 lr_schedule: bool = True, nesterov: bool = True, optimizer: str = "sgd",
                 weight_decay: float = SHOT_WEIGHT_DECAY, grad_clip: float | None = None, **kwargs: Any):
        super().__init__(model, optimizer=optimizer, weight_decay=weight_decay, grad_clip=grad_clip, **kwargs)
        self.beta = beta
        self.diversity_weight = diversity_weight
        self.epsilon = epsilon
        self.threshold = threshold
        self.distance = distance
        self.backbone_lr_mult = backbone_lr_mult
        self.lr_schedule = lr_schedule
        self.nesterov = nesterov

    def check_params(self) -> list[str]:
        problems = []
        if not (isinstance(self.beta, (int, float)) and self.beta >= 0):
            problems.append(f"beta must be >= 0, got {self.beta!r}")
        if self.distance not in ("cosine", "euclidean"):
            problems.append(f"distance must be 'cosine' or 'euclidean', got {self.distance!r}")
        if not (isinstance(self.backbone_lr_mult, (int, float)) and self.backbone_lr_mult >= 0):
            problems.append(f"backbone_lr_mult must be >= 0, got {self.backbone_lr_mult!r}")
        if self.task == "segmentation":
            problems.append("SHOT needs a split-protocol classifier (task='classification')")
        return problems

    def _check_data(self, source: Any, target: Any, val: Any) -> tuple[Any, Any, Any]:
        if source is not None:
            raise ConfigError("SHOT", ["SHOT is source-free: call fit(None, target) or fit(target=...)"])
        if target is None:
            raise ConfigError("SHOT", ["fit() needs an unlabelled target dataset"])
        return None, TargetView(as_dataset(target, name="target")), None

    def extra_modules(self) -> dict[str, nn.Module]:
        self.centroids_: torch.Tensor | None = None
        self.labelset_: torch.Tensor | None = None
        self.pseudo_labels_: torch.Tensor | None = None
        self.label_lookup_: torch.Tensor | None = None
        self.label_source_ = "online"
        self.epoch_seen_ = -1
        return {}

    def _fit_model(self, source: Any, target: Any, val: Any, callback: Any) -> None:
        head = list(self.model_.head.parameters())
        flags = [q.requires_grad for q in head]
        for q in head:
            q.requires_grad_(False)  # the source hypothesis stays as trained
        try:
            super()._fit_model(None, target, None, callback)  # no labelled validation data without the source
        finally:
            for q, flag in zip(head, flags, strict=True):
                q.requires_grad_(flag)

    def param_groups(self, lr: float) -> list[dict]:
        sgd = {"nesterov": True} if self.nesterov and self.optimizer == "sgd" else {}
        return _shot_param_groups(self.model_.encoder, lr, self.backbone_lr_mult, [], sgd)

    def lr_factor(self, p: float) -> float:
        return dann_lr_factor(p) if self.lr_schedule else 1.0

    @torch.no_grad()
    def refresh_pseudo_labels(self, data: Any = None) -> torch.Tensor:
        """Cluster the whole target set (eval mode) and store its pseudo-labels ``(N,)``; returns them.

        ``data``: the target dataset (default: the one ``fit`` was given). Items carrying a unique
        integer ``index`` get their label looked up by it during the epoch.
        """
        data = self.fit_target_ if data is None else data
        device = next(self.model_.parameters()).device
        was = self.model_.training
        self.model_.eval()
        feats, probas, idx = [], [], []
        try:
            for batch in DataLoader(data, batch_size=self.eval_batch_size, shuffle=False):
                f = self.model_.encoder(batch_to({"image": batch["image"]}, device, False)["image"]).float()
                feats.append(f)
                probas.append(F.softmax(self.model_.head(f).float(), 1))
                i = batch.get("index")
                idx.append(torch.as_tensor(i).long().reshape(-1).cpu() if isinstance(i, (torch.Tensor, list)) else None)
        finally:
            self.model_.train(was)
        labels, self.centroids_, self.labelset_ = cluster_labels(
            torch.cat(feats), torch.cat(probas), threshold=self.threshold, distance=self.distance)
        self.pseudo_labels_ = labels
        self.label_lookup_ = None
        if idx and all(i is not None for i in idx):
            ids = torch.cat(idx)
            if ids.numel() == labels.numel() and int(ids.min()) >= 0 and ids.unique().numel() == ids.numel():
                lookup = torch.full((int(ids.max()) + 1,), -1, dtype=torch.long)
                lookup[ids] = labels.cpu()
                self.label_lookup_ = lookup.to(device)
        self.label_source_ = "index" if self.label_lookup_ is not None else "online"
        return labels

    def _batch_labels(self, target: dict, f: torch.Tensor) -> torch.Tensor:
        """The batch's pseudo-labels: looked up by ``index`` (the reference), else the nearest centroid."""
        i = target.get("index")
        if self.label_lookup_ is not None and isinstance(i, torch.Tensor):
            i = i.to(self.label_lookup_.device).long().reshape(-1)
            if int(i.max()) < self.label_lookup_.numel():
                y = self.label_lookup_[i]
                if bool((y >= 0).all()):
                    return y.to(f.device)
        space = _cluster_space(f.detach().float(), self.distance)
        c = self.centroids_.to(space.device)
        return self.labelset_.to(f.device)[_distances(space, c, self.distance).argmin(1)]

    def training_step(self, source: dict | None, target: dict | None, p: float) -> tuple[torch.Tensor, dict]:
        epoch = int(math.floor(p * self.epochs + 1e-9))
        if epoch != self.epoch_seen_ and self.beta > 0:
            self.epoch_seen_ = epoch
            self.refresh_pseudo_labels()
        f = self.model_.encoder(target["image"])
        logits = self.model_.head(f)
        loss, logs = information_maximisation_loss(logits, diversity_weight=self.diversity_weight,
                                                   epsilon=self.epsilon)
        if self.beta > 0:
            y = self._batch_labels(target, f)
            ce = F.cross_entropy(logits.float(), y)
            loss = loss + self.beta * ce
            logs["pseudo_ce"] = ce.detach()
            logs["train_acc"] = (logits.detach().argmax(1) == y).float().mean()  # agreement with the clusters
        return loss, logs
