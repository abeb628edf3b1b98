"""The losses every method composes, each taking optional per-sample weights.

A source adapter such as :class:`~shiftkit.adapt.reweight.ImportanceWeighting` puts a
``"weight"`` (float32 scalar per item, so ``(N,)`` per batch) into every source item; these
losses read it, so any method that builds its step from them honours the adapter without
knowing it exists. A weight of 0 removes a row from the loss and from every gradient it sends.

Weighted means are ``mean_i(w_i * l_i)`` over the batch, not ``sum(w l) / sum(w)``: the
weights are normalised to mean 1 over the whole source set, so each batch's loss stays an
unbiased estimate of the weighted risk ``E_s[w(x) l(x, y)]`` (the importance-weighted risk of
Shimodaira 2000) and keeps the unweighted loss's scale.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from shiftkit.adapt.methods.grl import grad_reverse
from shiftkit.datasets.errors import DataError

__all__ = ["ADVERSARIES", "adversarial_loss", "domain_labels", "supervised_loss"]

#: How the encoder is trained against a domain discriminator (see :func:`adversarial_loss`).
ADVERSARIES = ("grl", "confusion")


def _row_weights(weight: torch.Tensor | None, n: int, like: torch.Tensor) -> torch.Tensor | None:
    if weight is None:
        return None
    w = weight.to(like.device).float().reshape(-1)
    if w.shape[0] != n:
        raise DataError(f"weight: {w.shape[0]} per-sample weights for a batch of {n} items")
    return w


def supervised_loss(logits: torch.Tensor, batch: dict, task: str,
                    weight: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Cross-entropy and accuracy of ``logits`` against the batch's labels.

    Classification: ``logits (N, K)`` vs ``batch["label"] (N,)``. Segmentation:
    ``logits (N, K, H, W)`` vs ``batch["mask"] (N, H, W)``; pixels < 0 are ignored.

    Per-sample weights ``(N,)``: ``weight`` or else ``batch["weight"]`` when present. Weighted,
    the loss is ``mean_i(w_i * CE_i)`` (segmentation: ``CE_i`` is the mean over image ``i``'s
    valid pixels); unweighted it is the plain mean over samples (pixels). Returns
    ``(loss, accuracy)`` as 0-d tensors (accuracy detached, unweighted).
    """
    if weight is None:
        weight = batch.get("weight")
    if task == "segmentation":
        if "mask" not in batch:
            raise DataError("segmentation training needs a 'mask' (H, W) int64 in every source item")
        y = batch["mask"].long()
        valid = y >= 0
        acc = (logits.detach().argmax(1)[valid] == y[valid]).float().mean()
        w = _row_weights(weight, y.shape[0], logits)
        if w is None:
            return F.cross_entropy(logits.float(), y, ignore_index=-1), acc
        ce = F.cross_entropy(logits.float(), y, ignore_index=-1, reduction="none")  # (N, H, W)
        per = (ce * valid).sum((1, 2)) / valid.sum((1, 2)).clamp_min(1)
        return (w * per).mean(), acc
    y = batch["label"].long()
    if (y < 0).any():
        raise DataError("a source batch holds unlabelled items (label -1); source data must be labelled")
    acc = (logits.detach().argmax(1) == y).float().mean()
    w = _row_weights(weight, y.shape[0], logits)
    if w is None:
        return F.cross_entropy(logits.float(), y), acc
    return (w * F.cross_entropy(logits.float(), y, reduction="none")).mean(), acc


def domain_labels(d: torch.Tensor, n_source: int) -> torch.Tensor:
    """Domain targets shaped like the logits ``d`` ``(N, ...)``: 0 for rows ``[:n_source]``, else 1."""
    dom = torch.zeros_like(d)
    dom[n_source:] = 1.0
    return dom


def _weighted_bce(d: torch.Tensor, target: torch.Tensor, w: torch.Tensor | None) -> torch.Tensor:
    """BCE-with-logits averaged over every element of ``d`` ``(N, ...)``, row ``i`` times ``w_i``."""
    if w is None:
        return F.binary_cross_entropy_with_logits(d, target)
    per = F.binary_cross_entropy_with_logits(d, target, reduction="none")
    return (per * w.reshape(-1, *([1] * (d.dim() - 1)))).mean()


def adversarial_loss(
    disc: nn.Module, f: torch.Tensor, n_source: int, lam: float, adversary: str = "confusion",
    weight: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict]:
    """Discriminator loss plus the encoder's adversarial term on ``f`` ``(N, ...)`` (DANN).

    Rows ``[:n_source]`` are source (domain 0), the rest target (1). ``disc`` maps ``f`` to
    logits of any shape ``(N, ...)`` (one per sample or one per spatial cell).

    * ``"grl"`` (Ganin et al. 2016, eq. 9-10): ``BCE(D(GRL_lambda(f)), d)``; the encoder
      maximises the discriminator's loss through the reversal. Unbounded: an encoder faster
      than its discriminator can swap the domains instead of merging them.
    * ``"confusion"`` (Tzeng et al. 2015): ``D`` learns on detached features while the encoder
      minimises ``lambda * (BCE(D(f), 1/2) - log 2)``, which is 0 exactly when ``D`` outputs 1/2,
      so it cannot overshoot.

    ``weight`` ``(n_source,)``: per-sample weights of the source rows (target rows weigh 1);
    every term is ``mean over rows of w_row * BCE_row``, so a row of weight 0 sends no gradient
    to ``D`` nor to the features. Returns the loss to add to the task loss and the logs
    ``domain_loss`` (the discriminator's BCE), ``disc_acc`` and ``disc_logit_std``.
    """
    if adversary not in ADVERSARIES:
        raise ValueError(f"adversary must be one of {ADVERSARIES}, got {adversary!r}")
    w = None
    if weight is not None:
        ws = _row_weights(weight, n_source, f)
        w = torch.cat([ws, torch.ones(f.shape[0] - n_source, device=ws.device)])
    if adversary == "grl":
        d = disc(grad_reverse(f, lam)).float()
        dom = domain_labels(d, n_source)
        loss = disc_loss = _weighted_bce(d, dom, w)
    else:
        d = disc(f.detach()).float()  # trains D only
        dom = domain_labels(d, n_source)
        disc_loss = _weighted_bce(d, dom, w)
        # The encoder's term sees D with frozen parameters, so it moves only the features.
        frozen = {k: v.detach() for k, v in disc.named_parameters()}
        d_enc = torch.func.functional_call(disc, frozen, (f,)).float()
        confusion = _weighted_bce(d_enc, torch.full_like(d_enc, 0.5), w)
        # Minus the entropy of a fair coin: the term is 0 when D outputs 1/2 everywhere.
        loss = disc_loss + lam * (confusion - math.log(2.0))
    with torch.no_grad():
        acc = ((d > 0).float() == dom).float().mean()
        std = d.std() if d.numel() > 1 else torch.zeros((), device=d.device)
    return loss, {"domain_loss": disc_loss.detach(), "disc_acc": acc, "disc_logit_std": std}
