"""CDAN+E: conditional domain-adversarial network with entropy conditioning (Long et al. 2018, NeurIPS).

DANN aligns the marginal feature distributions ``P(f)``; when the classes sit differently in
the two domains, a marginal alignment can map target class ``a`` onto source class ``b``.
CDAN conditions the discriminator on the classifier's prediction ``g = softmax(head(f))``
by feeding it the multilinear map ``T(f, g)`` so that it aligns the joint ``P(f, g)``:

.. math::
    \\min_{F, G} \\; E_{(x, y) \\sim S} L_{CE}(G(F(x)), y)
        - \\lambda \\big( E_{x \\sim S}\\, w(H(g)) \\log D(T(f, g))
        + E_{x \\sim T}\\, w(H(g)) \\log (1 - D(T(f, g))) \\big),

    T(f, g) = f \\otimes g \\;(\\text{flattened}, D K \\text{ values})
    \\quad\\text{or}\\quad T(f, g) = \\tfrac{1}{\\sqrt d} (R_f f) \\odot (R_g g),
    \\qquad w(H) = 1 + e^{-H}  \\;(\\text{the "+E" entropy conditioning}).

The randomised map (fixed Gaussian ``R_f``, ``R_g``) is used when ``D K`` exceeds
``max_multilinear_dim`` (4096, the paper's switch point; literature). As in the authors' code
and the Transfer-Learning-Library, ``g`` enters the map detached: the classifier is trained by
its own loss, the encoder by the adversary through ``f``.

Everything else is :class:`~shiftkit.adapt.methods.dann.DANN`'s: the ``lambda_p`` ramp,
``lr_p`` schedule, ``adversary="grl"`` or the bounded ``"confusion"`` loss, and the
discriminator warnings. ``mcc_weight > 0`` adds the minimum-class-confusion loss on the
target logits (:func:`~shiftkit.adapt.methods.alignment_losses.mcc_loss`; CDAN+MCC is one of
the strongest combinations in Jin et al. 2020).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from shiftkit.adapt.methods.alignment_losses import (
    MultilinearMap,
    RandomizedMultilinearMap,
    cdan_entropy_weights,
    mcc_loss,
)
from shiftkit.adapt.methods.dann import DANN, DomainDiscriminator
from shiftkit.adapt.methods.grl import grad_reverse
from shiftkit.adapt.methods.losses import ADVERSARIES, domain_labels, supervised_loss

__all__ = ["CDAN", "weighted_adversarial_loss"]

#: Above this many multilinear features (D * K) the randomised map is used (Long et al. 2018:
#: "we use the randomized multilinear map when the dimension is larger than 4096").
MAX_MULTILINEAR_DIM = 4096


def weighted_adversarial_loss(
    disc: nn.Module, h: torch.Tensor, n_source: int, lam: float, adversary: str = "grl",
    weight: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict]:
    """Domain loss on discriminator inputs ``h`` ``(N, ...)`` (source rows first), one weight per row.

    ``weight`` ``(N,)`` covers source *and* target rows (CDAN+E weighs both by prediction
    certainty); each term is ``mean_rows(w_row * BCE_row)`` as in
    :func:`shiftkit.adapt.methods.losses.adversarial_loss`, so a row of weight 0 sends no gradient to
    the discriminator nor to the features. ``adversary``: ``"grl"`` or ``"confusion"`` (see
    :class:`~shiftkit.adapt.methods.dann.DANN`). Returns the loss to add and the logs
    ``domain_loss``, ``disc_acc``, ``disc_logit_std``.
    """
    if adversary not in ADVERSARIES:
        raise ValueError(f"adversary must be one of {ADVERSARIES}, got {adversary!r}")
    n = h.shape[0]
    w = None if weight is None else weight.to(h.device).float().reshape(n)

    def bce(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        per = F.binary_cross_entropy_with_logits(logits, target, reduction="none").reshape(n, -1).mean(1)
        return per.mean() if w is None else (per * w).mean()

    if adversary == "grl":
        d = disc(grad_reverse(h, lam)).float()
        dom = domain_labels(d, n_source)
        loss = disc_loss = bce(d, dom)
    else:
        d = disc(h.detach()).float()  # trains D only
        dom = domain_labels(d, n_source)
        disc_loss = bce(d, dom)
        # The encoder's term sees D with frozen parameters, so it moves only the features.
        frozen = {k: v.detach() for k, v in disc.named_parameters()}
        d_enc = torch.func.functional_call(disc, frozen, (h,)).float()
        confusion = bce(d_enc, torch.full_like(d_enc, 0.5))
        loss = disc_loss + lam * (confusion - math.log(2.0))
    with torch.no_grad():
        acc = ((d > 0).float() == dom).float().mean()
        std = d.std() if d.numel() > 1 else torch.zeros((), device=d.device)
    return loss, {"domain_loss": disc_loss.detach(), "disc_acc": acc, "disc_logit_std": std}


class CDAN(DANN):
    """Conditional adversarial adaptation of a classifier (CDAN, CDAN+E, CDAN+E+MCC).

    Args:
        model: backbone name or split-protocol module (see :class:`~shiftkit.adapt.methods.base.Method`).
        entropy_conditioning: weight samples by ``1 + exp(-H(g))`` (CDAN+E; the paper's best variant).
        randomized: ``True``/``False`` forces the randomised / full multilinear map; ``None``
            picks the randomised one when ``D * K > max_multilinear_dim``.
        randomized_dim: output width ``d`` of the randomised map (1024 in the paper; literature).
        max_multilinear_dim: switch point for ``randomized=None`` (4096, the paper's; literature).
        mcc_weight: weight of the MCC loss on the target logits (0 = off; 1 in Jin et al. 2020).
        mcc_temperature: MCC's softmax temperature (2.5, the paper's; literature).
        adversary: ``"grl"`` (default here: gradient reversal, the paper's) or ``"confusion"``.
            On the development seeds of the label-shifted toy CDAN+E with gradient reversal
            beat DANN on 15 of 15 seeds; with the confusion loss it did not reliably (the
            encoder can shrink target features towards 0, where the map is 0 for both domains).
        disc_hidden: discriminator widths ((1024, 1024) as in the paper; literature).
        disc_dropout, lambda_max, gamma, lr_schedule, disc_lr_mult: as :class:`DANN`.
        **kwargs: :class:`Method` arguments (training options, ``source_adapter``, ...).

    After ``fit``: ``randomized_`` (whether the randomised map was used), ``extra_modules_``
    holds ``discriminator`` and ``cdan_map``.
    """

    title = "CDAN+E"
    recipe = "adapt"
    # Not DANN's grid: one CDAN candidate per pool keeps `auto` affordable; DANN's grid already
    # probes the adversarial weight.
    selection_grid = ({},)
    selection_grid_provenance = "cost: defaults only (the DANN candidates probe the adversarial weight)"

    def __init__(
        self,
        model: str | nn.Module | tuple = "tiny",
        *,
        entropy_conditioning: bool = True,
        randomized: bool | None = None,
        randomized_dim: int = 1024,
        max_multilinear_dim: int = MAX_MULTILINEAR_DIM,
        mcc_weight: float = 0.0,
        mcc_temperature: float = 2.5,
        adversary: Literal["grl", "confusion"] = "grl",
        disc_hidden: Sequence[int] = (1024, 1024),
        **kwargs,
    ):
        super().__init__(model, adversary=adversary, disc_hidden=disc_hidden, **kwargs)
        self.entropy_conditioning = entropy_conditioning
        self.randomized = randomized
        self.randomized_dim = randomized_dim
        self.max_multilinear_dim = max_multilinear_dim
        self.mcc_weight = mcc_weight
        self.mcc_temperature = mcc_temperature

    def check_params(self) -> list[str]:
        problems = super().check_params()
        if self.task not in (None, "classification") or (isinstance(self.model, str) and "unet" in self.model):
            problems.append("CDAN conditions on class predictions of a classifier; use SegDANN for segmentation")
        if not (isinstance(self.randomized_dim, int) and self.randomized_dim > 0):
            problems.append(f"randomized_dim must be a positive int, got {self.randomized_dim!r}")
        if not (isinstance(self.mcc_weight, (int, float)) and self.mcc_weight >= 0):
            problems.append(f"mcc_weight must be >= 0, got {self.mcc_weight!r}")
        if not (isinstance(self.mcc_temperature, (int, float)) and self.mcc_temperature > 0):
            problems.append(f"mcc_temperature must be > 0, got {self.mcc_temperature!r}")
        return problems

    def _num_classes_out(self) -> int:
        for m in reversed(list(self.model_.head.modules())):
            if isinstance(m, nn.Linear):
                return int(m.out_features)
        return int(self.num_classes)

    def extra_modules(self) -> dict[str, nn.Module]:
        dim = getattr(self.model_, "feature_dim", -1)
        if dim is None or dim < 1:
            raise ValueError("CDAN needs model.feature_dim (the encoder's output width D)")
        k = self._num_classes_out()
        randomized = self.randomized if self.randomized is not None else dim * k > self.max_multilinear_dim
        torch.manual_seed(self.seed + 1)
        if randomized:
            cmap: nn.Module = RandomizedMultilinearMap(dim, k, self.randomized_dim, seed=self.seed + 2)
            width = self.randomized_dim
        else:
            cmap, width = MultilinearMap(), dim * k
        self.randomized_ = bool(randomized)
        return {"discriminator": DomainDiscriminator(width, tuple(self.disc_hidden), self.disc_dropout),
                "cdan_map": cmap}

    def training_step(self, source: dict | None, target: dict | None, p: float) -> tuple[torch.Tensor, dict]:
        ns = source["image"].shape[0]
        x = torch.cat([source["image"], target["image"]], 0)
        f, logits = self._features_and_logits(x)
        cls, acc = supervised_loss(logits[:ns], source, self.task_)
        g = F.softmax(logits.float(), dim=1).detach()  # conditioning only: the head learns from its own loss
        h = self.extra_modules_["cdan_map"](f.float(), g)
        w_src = source.get("weight")
        weight = cdan_entropy_weights(g, ns) if self.entropy_conditioning else None
        if w_src is not None:  # a source adapter's weights multiply the source rows
            rows = torch.cat([w_src.to(h.device).float().reshape(-1), torch.ones(x.shape[0] - ns, device=h.device)])
            weight = rows if weight is None else weight * rows
        lam = self.current_lambda(p)
        dloss, logs = weighted_adversarial_loss(self.discriminator, h, ns, lam, self.adversary, weight)
        loss = cls + dloss
        if self.mcc_weight > 0:
            mcc = mcc_loss(logits[ns:], temperature=self.mcc_temperature)
            loss = loss + self.mcc_weight * mcc
            logs["mcc_loss"] = mcc.detach()
        logs.update({"train_acc": acc, "cls_loss": cls.detach(), "lambda": lam})
        return loss, logs
