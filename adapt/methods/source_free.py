"""Source-free adaptation of a trained model: one entry point for TENT and SHOT.

Used by :meth:`shiftkit.adapt.Predictor.adapt` (the clinical path: a loaded model, the new
site's unlabelled images, no source data anywhere) and usable on any split-protocol module.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from shiftkit.datasets.errors import ConfigError

__all__ = ["SOURCE_FREE_METHODS", "adapt_source_free"]

#: Source-free methods by name.
SOURCE_FREE_METHODS = ("tent", "shot")


def adapt_source_free(model: nn.Module, target: Any, method: str = "tent", **kwargs: Any) -> Any:
    """Adapt a copy of ``model`` on unlabelled ``target`` images with no source data; return the fitted method
    (the adapted network is its ``model_``).

    Args:
        model: a trained split-protocol module (TENT additionally needs BatchNorm layers).
        target: a dict-yielding Dataset or images ``(N, C, H, W)`` (array or tensor).
        method: ``"tent"`` (BatchNorm affine parameters, one online pass; the cheap, safe
            default) or ``"shot"`` (frozen head, encoder trained for ``epochs``).
        **kwargs: the method's arguments (e.g. ``lr``, ``batch_size``, ``epochs``, ``device``).

    The fitted method's ``warnings_`` say when the stream looked label-correlated or the
    predictions collapsed (TENT).
    """
    from .shot import SHOT
    from .tent import TENT

    classes = {"tent": TENT, "shot": SHOT}
    if method not in classes:
        raise ConfigError("adapt", [f"unknown source-free method {method!r}; choose one of {SOURCE_FREE_METHODS}"])
    kwargs.setdefault("progress", False)
    return classes[method](model, **kwargs).fit(None, target)
