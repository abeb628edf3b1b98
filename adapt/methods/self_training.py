"""Self-training on the target: FixMatch-style pseudo-labels (classification) and DACS (segmentation).

Classification (Sohn et al. 2020, FixMatch; Zou et al. 2018, CBST for class balance). Each
step, on a labelled source batch ``(x_s, y_s)`` and an unlabelled target batch ``x_t``:

.. math::
    q = \\mathrm{softmax}(f_{teacher}(\\alpha(x_t))), \\quad \\hat y = \\arg\\max q, \\quad
    m = 1[\\max q \\ge \\tau_{\\hat y}],

    L = L_{CE}(f(x_s), y_s) + \\lambda_u \\frac{1}{B} \\sum_b m_b\\, L_{CE}(f(\\mathcal A(x_{t,b})), \\hat y_b),

with ``alpha`` the weak view (the image as given), ``A`` the strong view
(:func:`strong_perturb`: contrast, brightness, gamma, noise, channel shuffle, cutout),
``tau`` the confidence threshold. ``class_balanced=True`` lowers each class's threshold to
the confidence its ``cb_fraction`` most confident target images reach (re-estimated at every
epoch start on the whole target set), so a class the source model under-predicts still gets
pseudo-labels. The student always runs one forward over ``[x_s, alpha(x_t), A(x_t)]`` (its
BatchNorm statistics must see clean target images). The teacher is the model itself (the
weak-view logits of that forward, detached) or, with ``ema_decay``, an exponential moving
average ``theta' <- d theta' + (1 - d) theta`` of the student, BatchNorm statistics included
(mean teacher; updated at the start of each step from the weights the previous step produced).

Segmentation (Tranheden et al. 2021, DACS; Hoyer et al. 2022, DAFormer): an EMA teacher
labels every target pixel; ClassMix pastes the pixels of half the classes present in a source
image onto a target image; the student learns the mixed image against the mixed label
(source mask where pasted, target pseudo-label elsewhere), the pseudo-labelled pixels
weighted by the batch's share of confident pixels ``q = mean(max p >= tau)``; a photometric
perturbation is applied to the mixed image.

Start from a trained source model (``SourceOnly(...).model_`` or a loaded checkpoint):
pseudo-labels from an untrained network are noise. ``record_rounds=True`` stores the
teacher's pseudo-labels for the whole target set at every epoch start (``rounds_``), so their
quality can be tracked where labels exist.
"""

from __future__ import annotations

import contextlib
import copy
import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from shiftkit.adapt.methods.base import Method, Requires
from shiftkit.adapt.methods.losses import supervised_loss
from shiftkit.adapt.training.trainer import batch_to

__all__ = ["SelfTraining", "class_mix", "strong_perturb"]


def strong_perturb(x: torch.Tensor, strength: float = 0.5, *, cutout: bool = True,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """Random photometric perturbation of a batch ``(N, C, H, W)``, drawn per sample (the strong view).

    Contrast about the image mean (factor ``1 +- 0.5 s``), brightness (``+- 0.3 s`` image
    std), gamma (``exp(+- 0.5 s)``, only when the batch lies in [0, 1]), Gaussian noise
    (``0.1 s`` image std), channel shuffle (RGB, probability ``s / 2``) and, with ``cutout``,
    one square of side up to ``H / 2`` filled with the image mean (FixMatch's Cutout). Torch
    only, on the batch's device: no per-image CPU round trip inside a training step.
    """
    if strength <= 0:
        return x
    s = float(strength)
    n, c, h, w = x.shape
    dev = x.device
    x = x.float()

    def u(lo: float, hi: float, *shape: int) -> torch.Tensor:
        return lo + (hi - lo) * torch.rand(*shape, generator=generator, device="cpu").to(dev)

    unit = bool(x.min() >= 0 and x.max() <= 1)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    std = x.std(dim=(1, 2, 3), keepdim=True).clamp_min(1e-3)
    out = mean + u(1 - 0.5 * s, 1 + 0.5 * s, n, 1, 1, 1) * (x - mean) + u(-0.3 * s, 0.3 * s, n, 1, 1, 1) * std
    if unit:
        gamma = torch.exp(u(-0.5 * s, 0.5 * s, n, 1, 1, 1))
        out = out.clamp(0, 1).pow(gamma)
    noise = torch.randn(out.shape, generator=generator, device="cpu").to(dev)
    out = out + 0.1 * s * std * noise
    if c == 3:
        flip = u(0, 1, n) < s / 2
        if flip.any():
            perm = torch.randperm(3, generator=generator).to(dev)
            out[flip] = out[flip][:, perm]
    if cutout:
        side = (u(0.25, 0.5, n) * s * 2).clamp(max=0.5) * h
        cy, cx = u(0, 1, n) * h, u(0, 1, n) * w
        yy = torch.arange(h, device=dev).view(1, h, 1).float()
        xx = torch.arange(w, device=dev).view(1, 1, w).float()
        half = (side / 2).view(n, 1, 1)
        box = ((yy - cy.view(n, 1, 1)).abs() <= half) & ((xx - cx.view(n, 1, 1)).abs() <= half * w / h)
        out = torch.where(box[:, None], mean.expand_as(out), out)
    if unit:
        out = out.clamp(0, 1)
    return out


def class_mix(x_s: torch.Tensor, y_s: torch.Tensor, x_t: torch.Tensor, y_t: torch.Tensor, *,
              generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """ClassMix (Olsson et al. 2021) as DACS uses it: paste half of each source image's classes onto a target image.

    ``x_s``, ``x_t`` ``(N, C, H, W)``; ``y_s`` source masks and ``y_t`` target pseudo-labels
    ``(N, H, W)`` int64 (``-1`` = ignore). Returns the mixed images, the mixed labels and the
    paste mask ``(N, H, W)`` bool (True where the pixel came from the source).
    """
    n = x_s.shape[0]
    paste = torch.zeros_like(y_s, dtype=torch.bool)
    for i in range(n):
        classes = torch.unique(y_s[i])
        classes = classes[classes >= 0]
        if classes.numel() == 0:
            continue
        order = torch.randperm(classes.numel(), generator=generator).to(classes.device)
        chosen = classes[order[: max(1, (classes.numel() + 1) // 2)]]
        paste[i] = torch.isin(y_s[i], chosen)
    x = torch.where(paste[:, None], x_s, x_t)
    y = torch.where(paste, y_s, y_t)
    return x, y, paste


@contextlib.contextmanager
def _batch_statistics(net: nn.Module):
    """Run ``net``'s BatchNorm layers on the batch's own statistics without updating their running ones.

    The mean teacher labels a target batch as the student sees it (batch statistics, as in the
    student's forward); with its running (source-dominated) statistics it labelled the
    development seeds' shifted targets no better than the source model and self-training drifted.
    """
    bns = [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [(m.training, m.momentum) for m in bns]
    for m in bns:
        m.train()
        m.momentum = 0.0  # running = (1 - 0) * running + 0 * batch: unchanged
    try:
        yield net
    finally:
        for m, (was, mom) in zip(bns, saved, strict=True):
            m.train(was)
            m.momentum = mom


class SelfTraining(Method):
    """FixMatch-style (classification) or DACS-style (segmentation) self-training on the target.

    Args:
        model: a trained source model (split-protocol module or :class:`SegModel`), or a
            backbone name (then trained from scratch with source labels and pseudo-labels).
        threshold: confidence ``tau`` for a pseudo-label. 0.95 is FixMatch's and 0.968 DACS's
            (literature); the defaults here were chosen on the development data seeds
            (see ``docs/methods.md``).
        unlabelled_weight: ``lambda_u`` (1 in FixMatch and DACS; literature).
        strong_strength: strength ``s`` of :func:`strong_perturb`.
        class_balanced: per-class thresholds (CBST) re-estimated at every epoch start.
        cb_fraction: share of each predicted class kept by the class-balanced thresholds
            (CBST grows it from 0.2 to 0.5; 0.5 here, literature).
        ema_decay: ``None`` = the model is its own teacher (FixMatch); a value in (0, 1)
            uses a mean teacher (DACS: 0.99; segmentation always uses one, default 0.99).
        record_rounds: store the teacher's target pseudo-labels at each epoch start in
            ``rounds_`` (one extra pass over the target per epoch).
        **kwargs: :class:`Method` arguments (training options, ``source_adapter``, ...).
    """

    requires = Requires(source="labelled", target="unlabelled")
    title = "Self-training"
    recipe = "adapt"

    def __init__(
        self,
        model: str | nn.Module | tuple = "tiny",
        *,
        threshold: float = 0.9,
        unlabelled_weight: float = 1.0,
        strong_strength: float = 0.5,
        class_balanced: bool = False,
        cb_fraction: float = 0.5,
        ema_decay: float | None = None,
        record_rounds: bool = False,
        **kwargs: Any,
    ):
        super().__init__(model, **kwargs)
        self.threshold = threshold
        self.unlabelled_weight = unlabelled_weight
        self.strong_strength = strong_strength
        self.class_balanced = class_balanced
        self.cb_fraction = cb_fraction
        self.ema_decay = ema_decay
        self.record_rounds = record_rounds

    def check_params(self) -> list[str]:
        problems = []
        if not (isinstance(self.threshold, (int, float)) and 0.0 < self.threshold < 1.0):
            problems.append(f"threshold must lie in (0, 1), got {self.threshold!r}")
        if self.ema_decay is not None and not (isinstance(self.ema_decay, (int, float)) and 0.0 < self.ema_decay < 1.0):
            problems.append(f"ema_decay must lie in (0, 1) or be None, got {self.ema_decay!r}")
        if not (isinstance(self.cb_fraction, (int, float)) and 0.0 < self.cb_fraction <= 1.0):
            problems.append(f"cb_fraction must lie in (0, 1], got {self.cb_fraction!r}")
        if not (isinstance(self.unlabelled_weight, (int, float)) and self.unlabelled_weight >= 0):
            problems.append(f"unlabelled_weight must be >= 0, got {self.unlabelled_weight!r}")
        if not (isinstance(self.strong_strength, (int, float)) and 0.0 <= self.strong_strength <= 1.0):
            problems.append(f"strong_strength must lie in [0, 1], got {self.strong_strength!r}")
        return problems

    # ------------------------------------------------------------------ set-up
    def _decay(self) -> float | None:
        if self.ema_decay is None and self.task_ == "segmentation":
            return 0.99  # DACS's mean teacher (literature)
        return self.ema_decay

    def extra_modules(self) -> dict[str, nn.Module]:
        # Fitted state, reset at every fit (built here: fit calls this once model_ exists).
        self.epoch_seen_ = -1
        self.rounds_: list[dict[str, Any]] = []
        self.class_thresholds_: torch.Tensor | None = None
        if self._decay() is None:
            return {}
        teacher = copy.deepcopy(self.model_)
        for q in teacher.parameters():
            q.requires_grad_(False)
        return {"teacher": teacher}

    def param_groups(self, lr: float) -> list[dict]:
        return [{"params": [q for q in self.model_.parameters() if q.requires_grad], "lr": lr}]

    @torch.no_grad()
    def _update_teacher(self) -> None:
        d = self._decay()
        teacher = self.extra_modules_["teacher"]
        for pt, ps in zip(teacher.parameters(), self.model_.parameters(), strict=True):
            pt.mul_(d).add_(ps.detach(), alpha=1 - d)
        # BatchNorm statistics follow the same average: the student's statistics describe the
        # student's activations, and copied into a lagging teacher they broke it (development
        # seeds 103-106: the teacher's pseudo-labels fell to one class, 0.48-0.52 accuracy).
        for bt, bs in zip(teacher.buffers(), self.model_.buffers(), strict=True):
            if bt.dtype.is_floating_point:
                bt.mul_(d).add_(bs.detach(), alpha=1 - d)
            else:
                bt.copy_(bs)

    @torch.no_grad()
    def _refresh(self, epoch: int) -> None:
        """Whole-target pass with the teacher: class thresholds (CBST) and the round record."""
        net = self.extra_modules_.get("teacher", self.model_)
        device = next(self.model_.parameters()).device
        was = net.training
        net.eval()
        conf, pred = [], []
        try:
            for batch in DataLoader(self.fit_target_, batch_size=self.eval_batch_size, shuffle=False):
                logits = net(batch_to({"image": batch["image"]}, device, False)["image"]).float()
                c, k = F.softmax(logits, 1).max(1)
                conf.append(c.cpu())
                pred.append(k.cpu())
        finally:
            net.train(was)
        conf_t, pred_t = torch.cat(conf), torch.cat(pred)
        if self.class_balanced:
            k = int(self.num_classes_out_)
            th = torch.full((k,), self.threshold)
            for c in range(k):
                cc = conf_t[pred_t == c].flatten()
                if cc.numel():
                    th[c] = min(self.threshold, float(torch.quantile(cc.float(), 1 - self.cb_fraction)))
            self.class_thresholds_ = th.to(device)
        if self.record_rounds:
            dtype = np.int16
            self.rounds_.append({
                "epoch": epoch,
                "pseudo_label": pred_t.numpy().astype(dtype),
                "confidence": conf_t.numpy().astype(np.float32),
                "threshold": (self.class_thresholds_.cpu().numpy() if self.class_thresholds_ is not None
                              else np.full(1, self.threshold, np.float32)),
            })

    def _thresholds_for(self, pred: torch.Tensor) -> torch.Tensor:
        if self.class_thresholds_ is None:
            return torch.full(pred.shape, self.threshold, device=pred.device)
        return self.class_thresholds_.to(pred.device)[pred]

    # ------------------------------------------------------------------ training
    def _fit_model(self, source: Any, target: Any, val: Any, callback: Any) -> None:
        super()._fit_model(source, target, val, callback)
        if self.record_rounds:  # the final model's pseudo-labels close the record
            self._refresh(self.epochs)

    @property
    def num_classes_out_(self) -> int:
        head = getattr(self.model_, "head", None)
        if head is not None:
            for m in reversed(list(head.modules())):
                if isinstance(m, nn.Linear):
                    return int(m.out_features)
        return int(getattr(self.model_, "arch", {}).get("num_classes", self.num_classes))

    def training_step(self, source: dict, target: dict | None, p: float) -> tuple[torch.Tensor, dict]:
        epoch = int(math.floor(p * self.epochs + 1e-9))
        if epoch != self.epoch_seen_:
            self.epoch_seen_ = epoch
            if self.class_balanced or self.record_rounds:
                self._refresh(epoch)
        if "teacher" in self.extra_modules_:
            self._update_teacher()
            self.extra_modules_["teacher"].eval()
        if self.task_ == "segmentation":
            return self._dacs_step(source, target)
        return self._fixmatch_step(source, target)

    def _fixmatch_step(self, source: dict, target: dict) -> tuple[torch.Tensor, dict]:
        ns, nt = source["image"].shape[0], target["image"].shape[0]
        xt = target["image"]
        strong = strong_perturb(xt, self.strong_strength)
        # The weak view goes through the student in both modes: its BatchNorm statistics must see
        # clean target images (development seeds 103-104: a mean teacher whose student saw only
        # [source, strong] drifted to one class, pseudo-label accuracy 0.68 -> 0.53 and 0.55 -> 0.52).
        logits = self.model_(torch.cat([source["image"], xt, strong], 0))
        s_logits = logits[ns + nt:]
        if "teacher" in self.extra_modules_:
            with torch.no_grad(), _batch_statistics(self.extra_modules_["teacher"]):
                t_logits = self.extra_modules_["teacher"](xt).float()
        else:
            t_logits = logits[ns:ns + nt].detach().float()
        cls, acc = supervised_loss(logits[:ns], source, "classification")
        conf, pseudo = F.softmax(t_logits, 1).max(1)
        mask = (conf >= self._thresholds_for(pseudo)).float()
        unsup = (F.cross_entropy(s_logits.float(), pseudo, reduction="none") * mask).sum() / nt
        logs = {"train_acc": acc, "cls_loss": cls.detach(), "unsup_loss": unsup.detach(), "pseudo_share": mask.mean()}
        return cls + self.unlabelled_weight * unsup, logs

    def _dacs_step(self, source: dict, target: dict) -> tuple[torch.Tensor, dict]:
        ns = source["image"].shape[0]
        with torch.no_grad(), _batch_statistics(self.extra_modules_["teacher"]):
            t_logits = self.extra_modules_["teacher"](target["image"]).float()
        with torch.no_grad():
            conf, pseudo = F.softmax(t_logits, 1).max(1)  # (N, H, W)
            keep = conf >= self._thresholds_for(pseudo)
            # DACS (vikolss/DACS trainUDA.py): the share of confident target pixels over the whole
            # batch weighs every non-pasted pixel.
            quality = keep.float().mean().expand(conf.shape[0])
            y_s = source["mask"].long()
            x_mix, y_mix, paste = class_mix(source["image"], y_s, target["image"], pseudo)
            weight = torch.where(paste, torch.ones_like(conf), quality.view(-1, 1, 1).expand_as(conf))
            weight = torch.where(y_mix < 0, torch.zeros_like(weight), weight)
            x_mix = strong_perturb(x_mix, self.strong_strength, cutout=False)
        logits = self.model_(torch.cat([source["image"], x_mix], 0))
        seg, acc = supervised_loss(logits[:ns], source, "segmentation")
        ce = F.cross_entropy(logits[ns:].float(), y_mix.clamp_min(0), reduction="none")
        unsup = (ce * weight).sum() / weight.numel()
        logs = {"train_acc": acc, "cls_loss": seg.detach(), "unsup_loss": unsup.detach(),
                "pseudo_share": keep.float().mean()}
        return seg + self.unlabelled_weight * unsup, logs
