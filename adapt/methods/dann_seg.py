"""DANN for segmentation: feature-level and output-space adversarial alignment.

Two discriminators, both trained against the segmenter with the DANN ``lambda_p`` ramp
(the bounded confusion loss, or gradient reversal with ``adversary="grl"``):

* feature level: an MLP (one logit) on the globally pooled bottleneck features ``(N, D)``;
* output space (as ADVENT, Vu et al. 2019): a fully convolutional discriminator on the
  weighted self-information map ``-P log P / log K`` of the softmax ``P`` ``(N, K, H, W)``,
  one logit per spatial cell, so target predictions are pushed to look as confident and as
  structured as source ones.

ADVENT trains its generator with flipped labels in an alternating step; gradient reversal
gives the same saddle point in one backward pass and keeps one loop for all methods.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from shiftkit.adapt.methods.dann import DANN, DomainDiscriminator
from shiftkit.adapt.methods.losses import adversarial_loss, supervised_loss
from shiftkit.adapt.models.backbones import SegModel

__all__ = ["OutputDiscriminator", "SegDANN", "self_information"]


def self_information(logits: torch.Tensor) -> torch.Tensor:
    """ADVENT's weighted self-information ``-P log P / log K``, ``(N, K, H, W)`` in [0, 1/e]."""
    logp = F.log_softmax(logits.float(), dim=1)
    return -(logp.exp() * logp) / math.log(logits.shape[1])


class OutputDiscriminator(nn.Module):
    """Fully convolutional discriminator ``(N, K, H, W) -> (N, 1, H/16, W/16)`` logits.

    Four stride-2 4x4 convolutions with leaky ReLU (ADVENT/DCGAN style), then a 3x3 conv to
    one channel.
    """

    def __init__(self, in_channels: int, width: int = 64):
        super().__init__()
        chans = [in_channels, width, width * 2, width * 4, width * 8]
        layers: list[nn.Module] = []
        for a, b in zip(chans[:-1], chans[1:], strict=True):
            layers += [nn.Conv2d(a, b, 4, stride=2, padding=1), nn.LeakyReLU(0.2, inplace=True)]
        layers.append(nn.Conv2d(chans[-1], 1, 3, padding=1))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class SegDANN(DANN):
    """Adversarial adaptation of a segmenter (:class:`~shiftkit.adapt.models.backbones.SegModel`).

    Args:
        model: segmenter name (``"tiny-unet"``, ``"unet"``, ``"flexibleunet-resnet34"``, ...)
            or a :class:`SegModel`.
        feature_level: align pooled bottleneck features (DANN). Off by default: on the dashcam
            benchmark the feature-level discriminator at weight 1 cost source mIoU without
            closing the gap (docs/adapt.md).
        output_level: align self-information maps (ADVENT).
        lambda_feature: weight of the feature-level reversal (times ``lambda_p``).
        lambda_output: weight of the output-space reversal (times ``lambda_p``); 0.01, ADVENT's
            small output-space weight.
        out_disc_width: first width of the output discriminator.
        **kwargs: :class:`DANN` / :class:`TrainConfig` arguments.
    """

    def __init__(
        self,
        model: str | nn.Module = "tiny-unet",
        *,
        feature_level: bool = False,
        output_level: bool = True,
        lambda_feature: float = 1.0,
        lambda_output: float = 0.01,
        out_disc_width: int = 64,
        disc_hidden: Sequence[int] = (256,),
        num_classes: int = 9,
        task: str | None = "segmentation",
        **kwargs,
    ):
        super().__init__(model, disc_hidden=disc_hidden, num_classes=num_classes, task=task, **kwargs)
        self.feature_level = feature_level
        self.output_level = output_level
        self.lambda_feature = lambda_feature
        self.lambda_output = lambda_output
        self.out_disc_width = out_disc_width

    def check_params(self) -> list[str]:
        problems = super().check_params()
        if not (self.feature_level or self.output_level):
            problems.append("SegDANN needs feature_level or output_level (or both)")
        return problems

    def extra_modules(self) -> dict[str, nn.Module]:
        if not isinstance(self.model_, SegModel):
            raise TypeError("SegDANN needs a SegModel (see shiftkit.adapt.models.backbones.build_segmenter)")
        torch.manual_seed(self.seed + 1)
        mods: dict[str, nn.Module] = {}
        if self.feature_level:
            mods["discriminator"] = DomainDiscriminator(self.model_.feature_dim, tuple(self.disc_hidden),
                                                        self.disc_dropout)
        if self.output_level:
            k = int(self.model_.arch.get("num_classes", self.num_classes))
            mods["out_discriminator"] = OutputDiscriminator(k, self.out_disc_width)
        return mods

    def param_groups(self, lr: float) -> list[dict]:
        groups = [{"params": [p for p in self.model_.parameters() if p.requires_grad], "lr": lr}]
        for name in ("discriminator", "out_discriminator"):
            if name in self.extra_modules_:
                groups.append({"params": list(self.extra_modules_[name].parameters()), "lr": lr * self.disc_lr_mult})
        return groups

    def training_step(self, source: dict | None, target: dict | None, p: float) -> tuple[torch.Tensor, dict]:
        ns = source["image"].shape[0]
        w = source.get("weight")
        x = torch.cat([source["image"], target["image"]], 0)
        logits, fmap = self.model_.forward_with_features(x)
        seg, acc = supervised_loss(logits[:ns], source, "segmentation")
        lam = self.current_lambda(p)
        loss = seg
        logs: dict = {"train_acc": acc, "cls_loss": seg.detach(), "lambda": lam}
        if self.feature_level:
            pooled = fmap.mean(dim=(2, 3))
            dloss, dl = self.domain_loss(pooled, ns, lam * self.lambda_feature, weight=w)
            loss = loss + dloss
            logs.update(dl)
        if self.output_level:
            oloss, ol = adversarial_loss(
                self.extra_modules_["out_discriminator"], self_information(logits), ns, lam * self.lambda_output,
                self.adversary, weight=w,
            )
            loss = loss + oloss
            logs["out_domain_loss"] = ol["domain_loss"]
            logs["out_disc_acc"] = ol["disc_acc"]
            if not self.feature_level:
                logs.update(ol)
        return loss, logs
