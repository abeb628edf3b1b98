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

after which ``RunConfig(methods=["source_only", "my_method"])`` accepts it and the pipeline
builds it with ``MyMethod.from_config``.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["BUILTIN_METHODS", "get_method", "method_names", "method_title", "register"]

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
        if known is None and name in BUILTIN_METHODS and f"{klass.__module__}:{klass.__qualname__}" != BUILTIN_METHODS[name]:
            raise ValueError(f"method name {name!r} is a built-in ({BUILTIN_METHODS[name]})")
        _REGISTERED[name] = klass
        return klass

    return add if cls is None else add(cls)


def method_names() -> tuple[str, ...]:
    """Every registered name: the built-ins (in report order), then run-time registrations."""
    return tuple(BUILTIN_METHODS) + tuple(n for n in _REGISTERED if n not in BUILTIN_METHODS)


def get_method(name: str) -> Any:
    """The class registered under ``name`` (imports a built-in on first use).

    Raises:
        KeyError: unknown name; the message lists the known ones.
    """
    if name in _REGISTERED:
        return _REGISTERED[name]
    if name not in BUILTIN_METHODS:
        raise KeyError(f"unknown method {name!r}; registered methods are {list(method_names())}")
    module, _, attr = BUILTIN_METHODS[name].partition(":")
    cls = getattr(importlib.import_module(module), attr)
    _REGISTERED[name] = cls
    return cls


def method_title(name: str) -> str:
    """Display name for reports (``cls.title``), without importing anything for unknown names."""
    try:
        return str(getattr(get_method(name), "title", name))
    except (KeyError, ImportError):
        return name
