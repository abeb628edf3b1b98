"""DANN: domain-adversarial training of the encoder (Ganin et al. 2016, JMLR 17:59).

One step on a source batch ``(x_s, y_s)`` and an unlabelled target batch ``x_t``:

* ``f = encoder(cat(x_s, x_t))`` (one forward over the concatenated batch);
* classification loss ``CE(head(f_s), y_s)``;
* domain loss ``BCEWithLogits(D(GRL_lambda(f)), d)`` with ``d = 0`` source, ``1`` target,
  where ``D`` is an MLP ending in ONE logit (a softmax over one output is constant and
  trains nothing) and ``GRL_lambda`` flips and scales the gradient reaching the encoder.

``adversary`` picks how the encoder is trained against ``D``:

* ``"grl"`` (the paper): the encoder maximises the discriminator's BCE through the reversal.
  That objective is unbounded: an encoder faster than its discriminator can *swap* the domains
  (discriminator accuracy near 0) instead of merging them, and the game oscillates.
* ``"confusion"`` (Tzeng et al. 2015, "Simultaneous deep transfer across domains and
  tasks"): ``D`` learns on detached features while the encoder minimises
  ``lambda * BCE(D(f), 1/2)``, whose minimum is exactly "``D`` cannot tell" - it cannot
  overshoot, so the features settle where the domains overlap.

Schedules follow the paper: ``lambda_p = 2 / (1 + exp(-10 p)) - 1`` and
``lr_p = lr0 / (1 + 10 p) ** 0.75`` on training progress ``p`` in [0, 1].

Each epoch's history carries ``domain_loss``, ``disc_acc`` (discriminator accuracy on the
training batches), ``disc_logit_std`` and ``lambda``; a discriminator that wins outright
(saturated: features stay separable) or outputs a constant (collapsed) is reported in
``warnings``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from ..grl import grad_reverse
from ..schedules import dann_lambda, dann_lr_factor
from .base import Method, supervised_loss

__all__ = ["DANN", "DomainDiscriminator"]


class DomainDiscriminator(nn.Module):
    """MLP ``(N, D) -> (N, 1)`` logit that the sample is from the target domain.

    Args:
        in_features: ``D``.
        hidden: widths of the hidden layers; ``()`` gives logistic regression (the paper's
            shallow toy uses one).
        dropout: dropout after each hidden layer.
    """

    def __init__(self, in_features: int, hidden: Sequence[int] = (256, 256), dropout: float = 0.0):
        super().__init__()
        layers: list[nn.Module] = []
        prev = in_features
        for h in hidden:
            layers += [nn.Linear(prev, h), nn.ReLU(inplace=True)]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            prev = h
        layers.append(nn.Linear(prev, 1))  # one logit, trained with BCE-with-logits
        self.net = nn.Sequential(*layers)

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        return self.net(f)


def adversarial_loss(
    disc: nn.Module, f: torch.Tensor, n_source: int, lam: float, adversary: str = "grl"
) -> tuple[torch.Tensor, dict]:
    """Discriminator loss plus the encoder's adversarial term on ``f`` ``(N, ...)``.

    Rows ``[:n_source]`` are source (domain 0), the rest target (1). ``disc`` maps ``f`` to
    logits of any shape ``(N, ...)`` (one per sample or one per spatial cell). Returns the
    loss to add to the task loss and the logs ``domain_loss`` (the discriminator's BCE),
    ``disc_acc`` and ``disc_logit_std``.
    """
    if adversary == "grl":
        d = disc(grad_reverse(f, lam)).float()
        dom = _domain_labels(d, n_source)
        loss = disc_loss = F.binary_cross_entropy_with_logits(d, dom)
    else:
        d = disc(f.detach()).float()  # trains D only
        dom = _domain_labels(d, n_source)
        disc_loss = F.binary_cross_entropy_with_logits(d, dom)
        # The encoder's term sees D with frozen parameters, so it moves only the features.
        frozen = {k: v.detach() for k, v in disc.named_parameters()}
        d_enc = torch.func.functional_call(disc, frozen, (f,)).float()
        confusion = F.binary_cross_entropy_with_logits(d_enc, torch.full_like(d_enc, 0.5))
        # Minus the entropy of a fair coin: the term is 0 when D outputs 1/2 everywhere.
        loss = disc_loss + lam * (confusion - math.log(2.0))
    with torch.no_grad():
        acc = ((d > 0).float() == dom).float().mean()
        std = d.std() if d.numel() > 1 else torch.zeros((), device=d.device)
    return loss, {"domain_loss": disc_loss.detach(), "disc_acc": acc, "disc_logit_std": std}


def _domain_labels(d: torch.Tensor, n_source: int) -> torch.Tensor:
    dom = torch.zeros_like(d)
    dom[n_source:] = 1.0
    return dom


class DANN(Method):
    """Domain-adversarial neural network on encoder features (classification).

    Args:
        model: backbone name or split-protocol module (see :class:`Method`).
        disc_hidden: discriminator hidden widths.
        disc_dropout: discriminator dropout.
        lambda_max: scale of the reversal weight (``lambda = lambda_max * lambda_p``).
        gamma: steepness of the ``lambda_p`` ramp (10 in the paper).
        lr_schedule: apply ``lr_p = lr0 / (1 + 10 p) ** 0.75``; ``False`` keeps ``lr0``.
        disc_lr_mult: discriminator learning rate relative to ``lr``.
        adversary: ``"grl"`` (gradient reversal, the paper) or ``"confusion"`` (the encoder
            drives the discriminator's output to 1/2; see the module docstring).
        **kwargs: :class:`Method` / :class:`TrainConfig` arguments.
    """

    uses_target = True

    def __init__(
        self,
        model: str | nn.Module | tuple = "tiny",
        *,
        disc_hidden: Sequence[int] = (256, 256),
        disc_dropout: float = 0.0,
        lambda_max: float = 1.0,
        gamma: float = 10.0,
        lr_schedule: bool = True,
        disc_lr_mult: float = 1.0,
        adversary: Literal["grl", "confusion"] = "grl",
        **kwargs,
    ):
        super().__init__(model, **kwargs)
        if adversary not in ("grl", "confusion"):
            raise ValueError(f"adversary must be 'grl' or 'confusion', got {adversary!r}")
        self.adversary = adversary
        self.disc_hidden = tuple(disc_hidden)
        self.disc_dropout = disc_dropout
        self.lambda_max = float(lambda_max)
        self.gamma = float(gamma)
        self.lr_schedule = lr_schedule
        self.disc_lr_mult = float(disc_lr_mult)

    @property
    def discriminator(self) -> nn.Module | None:
        return self._extra.get("discriminator")

    def extra_modules(self) -> dict[str, nn.Module]:
        torch.manual_seed(self.config.seed + 1)
        dim = getattr(self.model_, "feature_dim", -1)
        if dim is None or dim < 1:
            raise ValueError("DANN needs model.feature_dim (the encoder's output width D)")
        return {"discriminator": DomainDiscriminator(dim, self.disc_hidden, self.disc_dropout)}

    def param_groups(self, lr: float) -> list[dict]:
        return [
            {"params": [p for p in self.model_.parameters() if p.requires_grad], "lr": lr},
            {"params": list(self.discriminator.parameters()), "lr": lr * self.disc_lr_mult},
        ]

    def lr_factor(self, p: float) -> float:
        return dann_lr_factor(p) if self.lr_schedule else 1.0

    def current_lambda(self, p: float) -> float:
        return self.lambda_max * dann_lambda(p, self.gamma)

    def _features_and_logits(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f = self.model_.encoder(x)
        return f, self.model_.head(f)

    def domain_loss(self, f: torch.Tensor, n_source: int, lam: float) -> tuple[torch.Tensor, dict]:
        """Adversarial loss on features ``f`` ``(N, D)`` (source rows first); see ``adversary``."""
        return adversarial_loss(self.discriminator, f, n_source, lam, self.adversary)

    def training_step(self, source: dict, target: dict | None, p: float) -> tuple[torch.Tensor, dict]:
        ns = source["image"].shape[0]
        x = torch.cat([source["image"], target["image"]], 0)
        f, logits = self._features_and_logits(x)
        cls, acc = supervised_loss(logits[:ns], source, self.task)
        lam = self.current_lambda(p)
        dloss, logs = self.domain_loss(f, ns, lam)
        logs.update({"train_acc": acc, "cls_loss": cls.detach(), "lambda": lam})
        return cls + dloss, logs

    def epoch_warnings(self, epoch_logs: dict[str, float]) -> list[str]:
        out = []
        e = int(epoch_logs.get("epoch", 0))
        acc = epoch_logs.get("disc_acc")
        std = epoch_logs.get("disc_logit_std")
        if std is not None and std < 1e-4:
            out.append(
                f"epoch {e}: DANN discriminator collapsed (constant output, logit std {std:.2e}); "
                "the adversarial signal is gone - lower lr or lambda_max"
            )
        elif acc is not None and acc > 0.99 and epoch_logs.get("domain_loss", 1.0) < 0.05:
            out.append(
                f"epoch {e}: DANN discriminator saturated (accuracy {acc:.3f}, domain loss "
                f"{epoch_logs['domain_loss']:.4f}); features remain separable - raise lambda_max or lower "
                "disc_lr_mult"
            )
        return out
