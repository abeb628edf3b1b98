"""Run-config sections of CDAN, MCC, Deep CORAL, self-training, TENT and SHOT.

Each section sits in :class:`shiftkit.adapt.config.RunConfig` under the method's registry name
(``cdan:``, ``mcc:``, ``deep_coral:``, ``self_training:``, ``tent:``, ``shot:``) and is read by
the method's ``from_config``. Every default says how it was chosen: from the paper
(literature), from DANN's development runs (shared start / learning-rate policy), or on the
development data seeds (``docs/methods.md``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    from .pipeline import BuildContext

__all__ = ["CDANConfig", "CORALConfig", "MCCConfig", "SHOTConfig", "SelfTrainingConfig", "TENTConfig", "start_model"]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class _StartConfig(_Section):
    epochs: int | None = Field(None, ge=1, description="defaults to train.epochs")
    start: Literal["source_only", "scratch"] = Field(
        "source_only",
        description="source_only: adapt a copy of the fitted source-only model (the clinical workflow; DANN's "
        "policy); scratch: train from random weights",
    )
    lr_mult: float = Field(0.25, gt=0, description="learning rate relative to train.lr when start=source_only "
                           "(DANN's value, chosen on its development runs)")


class CDANConfig(_StartConfig):
    adversary: Literal["grl", "confusion"] = Field(
        "grl", description="grl (the paper's): beat DANN on 15/15 development seeds of the label-shifted toy; "
        "confusion did not reliably")
    lambda_max: float = Field(1.0, gt=0, description="literature (Long et al. 2018)")
    discriminator_hidden: int = Field(1024, ge=8, description="literature (Long et al. 2018)")
    discriminator_lr_mult: float = Field(1.0, gt=0)
    entropy_conditioning: bool = Field(True, description="CDAN+E, the paper's best variant")
    randomized_dim: int = Field(1024, ge=16, description="randomised multilinear map width (literature)")
    mcc_weight: float = Field(0.0, ge=0, description="add MCC on the target logits (1.0 in Jin et al. 2020)")


class MCCConfig(_StartConfig):
    weight: float = Field(1.0, gt=0, description="literature (Jin et al. 2020)")
    temperature: float = Field(2.5, gt=0, description="literature (Jin et al. 2020)")


class CORALConfig(_StartConfig):
    weight: float = Field(1.0, gt=0, description="literature (Sun & Saenko 2016, Office-31)")


class SelfTrainingConfig(_StartConfig):
    threshold: float = Field(0.9, gt=0, lt=1, description="pseudo-label confidence (development toy seeds; "
                             "FixMatch uses 0.95)")
    unlabelled_weight: float = Field(1.0, ge=0, description="literature (FixMatch, DACS)")
    class_balanced: bool = Field(False, description="per-class thresholds (CBST)")
    cb_fraction: float = Field(0.5, gt=0, le=1, description="literature (CBST)")
    ema_decay: float | None = Field(None, gt=0, lt=1, description="mean teacher; segmentation always uses one "
                                    "(0.99, DACS)")
    strong_strength: float = Field(0.5, ge=0, le=1)


class TENTConfig(_Section):
    lr: float = Field(1e-3, gt=0, description="Adam on BatchNorm affine parameters (literature: Wang et al. 2021)")
    epochs: int = Field(1, ge=1, description="passes over the target (one online pass, the paper's)")
    batch_size: int | None = Field(None, ge=2, description="defaults to train.batch_size")
    on_collapse: Literal["warn", "reset"] = "warn"


class SHOTConfig(_Section):
    epochs: int | None = Field(None, ge=1, description="defaults to train.epochs")
    lr_mult: float = Field(0.25, gt=0, description="learning rate relative to train.lr (DANN's fine-tuning policy)")
    beta: float = Field(0.3, ge=0, description="pseudo-label weight (literature: Liang et al. 2020)")


def start_model(context: BuildContext, section: Any) -> tuple[Any, dict[str, Any]]:
    """The starting model and training options of a method whose section has ``start``/``lr_mult``/``epochs``."""
    train = context.train_params()
    if getattr(section, "epochs", None) is not None:
        train["epochs"] = section.epochs
    model = context.backbone()
    if getattr(section, "start", "source_only") == "source_only":
        model = context.fitted("source_only").model_  # copied by fit: the source model stays as is
        train["lr"] = context.config.train.lr * section.lr_mult
    return model, train


def source_model(context: BuildContext) -> Any:
    """A source-free method's starting point: the user's checkpoint (``model.checkpoint``) when
    given, else the run's fitted source-only model. Never source data."""
    if context.config.model.checkpoint is not None:
        return context.backbone()
    return context.fitted("source_only").model_
