"""The method registry: one name per method, read by the run config, the pipeline, the CLI and
the docs.

Built-in methods are listed below as ``name -> "module:Class"`` so that validating a config
(``shiftkit run --help``, ``load_config``) imports no torch; the class is imported when asked
for. Adding a built-in method is one line here. Your own methods register at run time::

    from shiftkit.adapt.methods import Method, Requires, register

    @register("my_method")
    class MyMethod(Method):
        requires = Requires(source="labelled", target="unlabelled")
        ...

after which ``RunConfig(methods=["source_only", "my_method"])`` accepts it, its settings have a
config section (``my_method:``, generated from its constructor), ``shiftkit methods`` lists it,
``auto`` and the efficacy harness take it as ``my_method[key=value]``, and every caller builds
it with ``MyMethod.from_config`` (:mod:`shiftkit.adapt.methods.build`).

This module is the one place, besides each method's own module and the docs, that writes a
method's name: the defaults below (the run's methods, the selection grid, the harness grid)
are lists of names.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["BASELINE", "BUILTIN_METHODS", "DEFAULT_CANDIDATES", "DEFAULT_RUN_METHODS", "DEFAULT_SOURCE_FREE",
           "HARNESS_METHODS",
           "REFERENCE_METHODS", "get_method", "method_names", "method_title", "reference_names", "register"]

#: name -> "module:Class" of the methods shipped with shiftkit (order = report order).
BUILTIN_METHODS: dict[str, str] = {
    "source_only": "shiftkit.adapt.methods.source_only:SourceOnly",
    "dann": "shiftkit.adapt.methods.dann:DANN",
    "importance_weighted": "shiftkit.adapt.reweight.importance_weighted:ImportanceWeighted",
    "augment": "shiftkit.adapt.augment.adapter:TargetStyleSourceOnly",
    "adabn": "shiftkit.adapt.methods.adabn:AdaBN",
    "target_oracle": "shiftkit.adapt.methods.source_only:TargetOracle",
    "cdan": "shiftkit.adapt.methods.cdan:CDAN",
    "mcc": "shiftkit.adapt.methods.mcc:MCC",
    "deep_coral": "shiftkit.adapt.methods.coral:DeepCORAL",
    "self_training": "shiftkit.adapt.methods.self_training:SelfTraining",
    "tent": "shiftkit.adapt.methods.tent:TENT",
    "shot": "shiftkit.adapt.methods.shot:SHOT",
}

#: Labelled-target references the efficacy harness reports beside the methods (trained on a
#: few labelled target images: ``finetune[frac=0.05]``); not run-config methods.
REFERENCE_METHODS: dict[str, str] = {
    "finetune": "shiftkit.adapt.methods.finetune:FineTune",
    "linear_probe": "shiftkit.adapt.methods.linear_probe:LinearProbe",
}

#: The no-adaptation baseline: the model adapting methods start from, the "before" of the gap.
BASELINE = "source_only"
#: The source-free method ``Predictor.adapt`` uses unless told (one online pass: cheap and safe).
DEFAULT_SOURCE_FREE = "tent"
#: ``methods`` of a run config that names none.
DEFAULT_RUN_METHODS: tuple[str, ...] = (BASELINE, "dann")
#: The default ``selection.candidates`` of ``auto``: empty = the pool derived from this registry
#: for the run's task (every label-free method that can do it, with the settings grid each
#: declares: :func:`shiftkit.adapt.harness.candidates.candidate_pool`, also the harness's ``selected``).
DEFAULT_CANDIDATES: tuple[str, ...] = ()
#: What ``make efficacy`` runs: every registered method with its own defaults, the few-label
#: references and the harness's ``oracle`` row.
HARNESS_METHODS: tuple[str, ...] = (
    BASELINE, "dann", "augment", "adabn", "importance_weighted", "cdan", "mcc", "deep_coral", "self_training", "tent",
    "shot", "finetune[frac=0.01]", "finetune[frac=0.05]", "finetune[frac=0.1]", "linear_probe", "oracle",
    "oracle[start=scratch]")

_REGISTERED: dict[str, Any] = {}


def register(name: str, cls: Any = None) -> Any:
    """Register ``cls`` (a :class:`~shiftkit.adapt.methods.Method` subclass) under ``name``.

    Use as a decorator (``@register("name")``) or call ``register("name", cls)``.
    Re-registering a name to another class is an error.
    """

    def add(klass: Any) -> Any:
        if not isinstance(name, str) or not name.replace("_", "").isalnum():
            raise ValueError(f"method name must be letters, digits and '_', got {name!r}")
        known = _REGISTERED.get(name)
        if known is not None and known is not klass:
            raise ValueError(f"method name {name!r} is already registered to {known.__qualname__}")
        builtin = BUILTIN_METHODS.get(name) or REFERENCE_METHODS.get(name)
        if known is None and builtin and f"{klass.__module__}:{klass.__qualname__}" != builtin:
            raise ValueError(f"method name {name!r} is a built-in ({builtin})")
        _REGISTERED[name] = klass
        return klass

    return add if cls is None else add(cls)


def method_names() -> tuple[str, ...]:
    """Every registered name: the built-ins (in report order), then run-time registrations."""
    return tuple(BUILTIN_METHODS) + tuple(n for n in _REGISTERED if n not in BUILTIN_METHODS
                                          and n not in REFERENCE_METHODS)


def reference_names() -> tuple[str, ...]:
    """The labelled-target references of the efficacy harness (:data:`REFERENCE_METHODS`)."""
    return tuple(REFERENCE_METHODS)


def get_method(name: str) -> Any:
    """The class registered under ``name`` (imports a built-in on first use).

    Raises:
        KeyError: unknown name; the message lists the known ones.
    """
    if name in _REGISTERED:
        return _REGISTERED[name]
    where = BUILTIN_METHODS.get(name) or REFERENCE_METHODS.get(name)
    if where is None:
        raise KeyError(f"unknown method {name!r}; registered methods are {list(method_names())}")
    module, _, attr = where.partition(":")
    cls = getattr(importlib.import_module(module), attr)
    _REGISTERED[name] = cls
    return cls


def method_title(name: str) -> str:
    """Display name for reports (``cls.title``), without importing anything for unknown names."""
    try:
        return str(getattr(get_method(name), "title", name))
    except (KeyError, ImportError):
        return name
