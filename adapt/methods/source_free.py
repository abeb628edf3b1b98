"""Source-free adaptation of a trained model: one entry point for every source-free method.

Used by :meth:`shiftkit.adapt.Predictor.adapt` (the clinical path: a loaded model, the new
site's unlabelled images, no source data anywhere) and usable on any split-protocol module.
The method comes from the registry and builds itself with its own ``from_config``, as in
every other caller; any registered method that declares ``requires.source == "none"`` is
accepted (TENT and SHOT are built in).
"""

from __future__ import annotations

from typing import Any

from torch import nn

from shiftkit.datasets.errors import ConfigError

__all__ = ["adapt_source_free", "source_free_methods"]


def source_free_methods() -> tuple[str, ...]:
    """Registered methods that need no source data (``requires.source == "none"``)."""
    from shiftkit.adapt.methods.registry import get_method, method_names

    return tuple(n for n in method_names() if get_method(n).requires.source == "none")


class _GivenModel:
    """Build context of :func:`adapt_source_free`: the given model, the caller's keyword arguments."""

    def __init__(self, model: nn.Module, kwargs: dict[str, Any]):
        self.model, self.kwargs = model, kwargs
        self.starts_trained = True

    def make(self, cls: type, **fixed: Any) -> Any:
        return cls(self.model, **{**self.kwargs, **fixed})


def adapt_source_free(model: nn.Module, target: Any, method: str | None = None, **kwargs: Any) -> Any:
    """Adapt a copy of ``model`` on unlabelled ``target`` images with no source data; return the fitted method
    (the adapted network is its ``model_``).

    Args:
        model: a trained split-protocol module (TENT additionally needs BatchNorm layers).
        target: a dict-yielding Dataset or images ``(N, C, H, W)`` (array or tensor).
        method: a registered source-free method (:func:`source_free_methods`); ``None``:
            :data:`~shiftkit.adapt.methods.registry.DEFAULT_SOURCE_FREE` (TENT: BatchNorm affine
            parameters, one online pass; the cheap, safe default). SHOT trains the encoder with
            a frozen head for ``epochs``.
        **kwargs: the method's arguments (e.g. ``lr``, ``batch_size``, ``epochs``, ``device``).

    The fitted method's ``warnings_`` say when the stream looked label-correlated or the
    predictions collapsed (TENT).
    """
    from shiftkit.adapt.methods.registry import DEFAULT_SOURCE_FREE, get_method

    method = DEFAULT_SOURCE_FREE if method is None else method
    names = source_free_methods()
    try:
        cls = get_method(method)
    except KeyError:
        cls = None
    if cls is None or cls.requires.source != "none":
        raise ConfigError("adapt", [f"unknown source-free method {method!r}; choose one of {names}"])
    kwargs.setdefault("progress", False)
    return cls.from_config(_GivenModel(model, kwargs)).fit(None, target)
