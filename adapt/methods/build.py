"""The one way a method is built: the registry's class, its ``from_config``, a context.

Every caller -- ``shiftkit run`` (the pipeline), ``auto``, the efficacy harness and
``Predictor.adapt`` -- asks the registry for the class (:func:`get_method`) and lets the class
build itself with ``cls.from_config(context)``. The context says *where the method starts and
with which training options* (the caller's recipe) and *which settings it was given* (a run
config section, or ``name[key=value]`` settings); the method says which of its own
constructor arguments those are. Nothing outside a method's module names that method.

A method's settings are its constructor arguments: its run-config section is generated from
the constructor's signature (:func:`section_model`: one field per argument of its own, same
name, same default), so a setting has one name everywhere (``mcc: {mcc_weight: 2}``,
``mcc[mcc_weight=2]``, ``MCC(mcc_weight=2)``) and its default is written once, in the
constructor; how each default was chosen is recorded in :mod:`shiftkit.adapt.job.provenance` and
shown as the field's description. A section also holds the fields of the method's *recipe*
(``Method.recipe``): how ``shiftkit run`` starts it (below).
"""

from __future__ import annotations

import copy
import functools
import importlib
import inspect
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model

from shiftkit.adapt.methods.registry import BASELINE, get_method

if TYPE_CHECKING:
    from shiftkit.adapt.job.config import RunConfig

__all__ = ["RECIPES", "BuildContext", "build", "section_model", "setting_names"]

#: Constructor arguments that describe the data or the network, set by the caller from the
#: data (never a setting of the method).
DATA_ARGUMENTS = ("model", "num_classes", "in_channels", "task", "source_adapter")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


# ------------------------------------------------------------------------------------ recipes
# How `shiftkit run` starts a method, by the method's `recipe` class attribute. Their defaults
# are the run's policy, recorded here once.
_START = Literal[BASELINE, "scratch"]  # type: ignore[valid-type]


class AdaptRecipe(_Section):
    """Methods that adapt a trained model with source and target data (DANN's policy)."""

    epochs: int | None = Field(None, ge=1, description="convention: defaults to train.epochs (equal budget with "
                                                        "the baseline)")
    start: _START = Field(  # type: ignore[valid-type]
        BASELINE, description="literature: adapt the trained source model (ADVENT / SHOT practice, the clinical "
        "workflow); 'scratch' trains from random weights")
    lr_mult: float = Field(0.25, gt=0, description="dev data (old seeds 10-12, data and model seed one number): "
                           "0.25 x train.lr when start=source_only; the candidate grid of shiftkit select also "
                           "holds lr_mult=1")


class _FromTrainedModel(_Section):
    """Recipes of source-free methods: they start from ``model.checkpoint`` or the fitted
    source-only model, and have no labelled validation data to early-stop on."""


class SourceFreeRecipe(_FromTrainedModel):
    """Source-free methods trained for epochs (start: ``model.checkpoint`` or the source-only model)."""

    epochs: int | None = Field(None, ge=1, description="convention: defaults to train.epochs")
    lr_mult: float = Field(0.25, gt=0, description="convention: DANN's fine-tuning policy, train.lr x 0.25")


class OnlineRecipe(_FromTrainedModel):
    """Source-free methods that make one online pass (start: ``model.checkpoint`` or the source-only model)."""

    lr: float = Field(1e-3, gt=0, description="literature: Adam at 1e-3 on the BatchNorm affine parameters "
                                              "(Wang et al. 2021)")
    batch_size: int | None = Field(None, ge=2, description="convention: defaults to train.batch_size")


#: ``Method.recipe`` -> the recipe's fields.
RECIPES: dict[str, type[_Section]] = {"adapt": AdaptRecipe, "source_free": SourceFreeRecipe, "online": OnlineRecipe}


def _own_parameters(cls: type) -> dict[str, tuple[inspect.Parameter, type]]:
    """The constructor arguments ``cls`` adds to :class:`Method`'s, subclass first, with the
    class that declares each (for its provenance record)."""
    from shiftkit.adapt.methods.base import Method

    out: dict[str, tuple[inspect.Parameter, type]] = {}
    classes = [cls, *(_load(c) for c in getattr(cls, "settings_also", ()))]
    for top in classes:
        for klass in top.__mro__:
            if klass is Method or not (isinstance(klass, type) and issubclass(klass, Method)):
                continue
            init = klass.__dict__.get("__init__")
            if init is None:
                continue
            for p in inspect.signature(init).parameters.values():
                if p.name == "self" or p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL) or p.name in DATA_ARGUMENTS:
                    continue
                out.setdefault(p.name, (p, klass))
    return out


def _load(ref: Any) -> type:
    if isinstance(ref, str):
        module, _, attr = ref.partition(":")
        return getattr(importlib.import_module(module), attr)
    return ref


def _hint(klass: type, name: str) -> Any:
    try:
        return typing.get_type_hints(klass.__init__).get(name, Any)
    except Exception:  # an annotation that cannot be resolved: accept any value
        return Any


@functools.cache
def section_model(cls: type) -> type[BaseModel]:
    """The run-config section of method class ``cls``: one field per constructor argument of its
    own (name, type and default from the signature), plus its recipe's fields.

    Each field's description is the default's provenance record
    (:data:`shiftkit.adapt.job.provenance.METHOD_DEFAULTS`)."""
    from shiftkit.adapt.job.provenance import METHOD_DEFAULTS

    fields: dict[str, Any] = {}
    for name, (p, klass) in _own_parameters(cls).items():
        default = p.default if p.default is not inspect.Parameter.empty else ...
        why = METHOD_DEFAULTS.get(f"{klass.__name__}.{name}") or METHOD_DEFAULTS.get(f"*.{name}")
        fields[name] = (_hint(klass, name), Field(default, description=why))
    recipe = RECIPES.get(getattr(cls, "recipe", None) or "")
    base = recipe if recipe is not None else _Section
    clash = sorted(set(fields) & set(base.model_fields))
    if clash:
        raise TypeError(f"{cls.__name__}: constructor arguments {clash} clash with its recipe's fields")
    name = f"{cls.__name__}Section"
    if name in globals():  # two classes of one name (a user's and a built-in): keep both reachable
        name = f"{cls.__module__.replace('.', '_')}_{name}"
    model = create_model(name, __base__=base, __module__=__name__, **fields)
    globals()[name] = model  # picklable: found by name in this module
    return model


def setting_names(cls: type) -> frozenset[str]:
    """The settings ``cls`` takes as ``name[key=value]`` or in its section: its own
    constructor arguments (not the data arguments, nor the recipe)."""
    return frozenset(_own_parameters(cls))


# ------------------------------------------------------------------------------------ context


@dataclass
class BuildContext:
    """What a method's ``from_config`` gets to build itself for one run of ``shiftkit run``.

    Attributes:
        name: the name of this build (checkpoints go under ``run_dir/checkpoints/<name>``);
            the registry name unless ``auto`` builds a candidate.
        config: the validated :class:`RunConfig` (the method's section: ``config.section(method)``).
        num_classes, in_channels: read from the data.
        run_dir: the run folder.
        fit_method: ``fit_method(name) -> fitted method``; fits another registered method once
            (e.g. the source-only starting point) and returns it.
        method: the registry name being built (default: ``name``).
        overrides: settings that replace the section's (``name[key=value]`` of an ``auto`` candidate).

    Callers with another recipe (the efficacy harness) subclass it and override
    :meth:`start`, :meth:`settings` and :meth:`section`.
    """

    name: str
    config: RunConfig
    num_classes: int
    in_channels: int
    run_dir: Path
    fit_method: Callable[[str], Any] | None = None
    method: str = ""
    overrides: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.method = self.method or self.name

    @property
    def task(self) -> str:
        return self.config.task

    # -------------------------------------------------------------- what a method asks
    def train_params(self) -> dict[str, Any]:
        """The training options every method shares, from ``config.train`` (keyword arguments)."""
        config, train = self.config, self.config.train
        params: dict[str, Any] = {
            "num_classes": self.num_classes,
            "task": config.task,
            "epochs": train.epochs,
            "batch_size": train.batch_size,
            "lr": train.lr,
            "lr_decay": train.lr_decay,
            "warmup": train.warmup,
            "optimizer": train.optimizer,
            "weight_decay": train.weight_decay,
            "seed": train.seed,
            "device": None if train.device == "auto" else train.device,
            "num_workers": config.data.num_workers,
            "checkpoint_dir": str(self.run_dir / "checkpoints" / self.name),
            "resume": config.resume,
            "progress": config.progress,
        }
        if train.early_stopping_patience is not None:
            # Source validation (best epoch restored), the same criterion for every method:
            # cross-entropy by default (the best-calibrated epoch), or the AUROC / mIoU.
            key = train.early_stopping_metric
            if key == "val_score":
                key = "val_auroc" if config.task == "classification" else "val_miou"
            params.update(early_stopping=key, patience=train.early_stopping_patience)
        return params

    def backbone(self) -> Any:
        """The initial model: the backbone name, or a module holding ``model.checkpoint``."""
        from shiftkit.adapt.job.pipeline import initial_model

        return initial_model(self.config, self.in_channels, self.num_classes)

    def fitted(self, name: str) -> Any:
        """Another registered method, fitted on this run's data (once)."""
        if self.fit_method is None:
            raise ValueError(f"{self.name} needs the fitted {name!r} method; build it inside run()")
        return self.fit_method(name)

    def section(self) -> BaseModel:
        """The settings of the method being built: its config section with ``overrides`` applied."""
        current = self.config.section(self.method)
        if not self.overrides:
            return current
        return type(current).model_validate({**current.model_dump(), **self.overrides})

    def start(self, cls: type, section: BaseModel) -> tuple[Any, dict[str, Any]]:
        """Where ``cls`` starts and its training options, by its recipe (``Method.recipe``).

        Source-free recipes start from ``model.checkpoint`` or the fitted source-only model and
        have no labelled validation data to early-stop on; ``start: source_only`` adapts a copy
        of the fitted source-only model at ``train.lr * lr_mult``; ``epochs``, ``lr`` and
        ``batch_size`` of the recipe replace ``train``'s when set.
        """
        train = self.train_params()
        values = section.model_dump()
        recipe = RECIPES.get(cls.recipe or "", _Section)
        source_free = issubclass(recipe, _FromTrainedModel)
        if source_free:
            train.pop("early_stopping", None)
            train.pop("patience", None)
            model = self.backbone() if self.config.model.checkpoint is not None else self.fitted(BASELINE).model_
        elif values.get("start") == BASELINE:
            model = self.fitted(BASELINE).model_  # copied by fit: the source model stays as is
        else:
            model = self.backbone()
        own = recipe.model_fields
        if "epochs" in own and values["epochs"] is not None:
            train["epochs"] = values["epochs"]
        if "lr_mult" in own and (source_free or values.get("start") == BASELINE):
            train["lr"] = self.config.train.lr * values["lr_mult"]
        if "lr" in own and values["lr"] is not None:
            train["lr"] = values["lr"]
        if "batch_size" in own and values["batch_size"] is not None:
            train["batch_size"] = values["batch_size"]
        return model, train

    def settings(self, cls: type, section: BaseModel) -> dict[str, Any]:
        """The constructor arguments of ``cls`` the section holds (every one of them)."""
        takes = set(cls._get_param_names())
        recipe = RECIPES.get(cls.recipe or "", _Section).model_fields
        return {k: v for k, v in section if k in takes and k not in recipe}

    @property
    def starts_trained(self) -> bool:
        """Whether :meth:`start` hands every method an already trained source model."""
        return False

    # -------------------------------------------------------------- building
    def make(self, cls: type, **fixed: Any) -> Any:
        """``cls(start model, **training options, **settings, **fixed)``: what the default
        ``Method.from_config`` returns (a method may build another class of its family with it,
        e.g. the segmentation variant)."""
        section = self.section()
        model, train = self.start(cls, section)
        return cls(model, **{**train, **self.settings(cls, section), **fixed})

    def build(self, method: str, **overrides: Any) -> Any:
        """The registered ``method`` built by its ``from_config`` in this context (``name`` then
        only names its checkpoint folder)."""
        child = copy.copy(self)
        child.method, child.overrides = method, dict(overrides)
        return get_method(method).from_config(child)


def build(name: str, context: BuildContext) -> Any:
    """The registered method ``name`` built by its own ``from_config`` in ``context``."""
    return context.build(name, **context.overrides)
