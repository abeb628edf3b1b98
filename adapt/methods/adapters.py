"""Source adapters: change what a method trains on, for any method.

An adapter takes the labelled source dataset (and the unlabelled target images) and returns
the dataset the method actually trains on: the same items with a per-sample ``"weight"``
(:class:`~shiftkit.adapt.reweight.ImportanceWeighting`), or with images restyled towards the
target (:class:`~shiftkit.adapt.augment.TargetStyle`). Every method takes one through its
``source_adapter`` argument (or a list, applied in order)::

    DANN("tiny", source_adapter=ImportanceWeighting(ClassifierRatio()))
    SourceOnly("tiny", source_adapter=[TargetStyle("fda"), ImportanceWeighting()])

The losses in :mod:`shiftkit.adapt.methods.losses` read ``batch["weight"]``, so a method built from
them honours the weights without knowing the adapter exists.

Adapters follow the scikit-learn parameter rules (``__init__`` stores, ``fit_transform``
works), so ``sklearn.base.clone`` copies them and a method clones its adapter before using it:
the adapter you pass is never fitted in place. Fitted state (``weights_``, ``augmenter_``)
lives on the method's ``source_adapter_`` copies.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sklearn.base import BaseEstimator, clone
from torch.utils.data import Dataset

from shiftkit.datasets.errors import ConfigError

__all__ = ["SourceAdapter", "apply_source_adapters"]


class SourceAdapter(BaseEstimator):
    """Base class of source adapters.

    Subclasses implement :meth:`fit_transform` and, when they do not always read the target,
    :meth:`needs_target`. They must never read a target ``label`` or ``mask`` (the method hands
    them a view of the target without those keys).
    """

    def needs_target(self) -> bool:
        """Whether :meth:`fit_transform` needs the unlabelled target dataset."""
        return True

    def fit_transform(self, source: Dataset, target: Dataset | None = None, *, seed: int = 0) -> Dataset:
        """Fit on ``source`` (labelled) and ``target`` (images only); return the dataset to train on.

        The returned dataset yields the source's dict items (``image`` ``(C, H, W)``, ``label``
        / ``mask``), possibly changed, possibly with ``"weight"`` (float32 scalar tensor).
        ``seed`` is the method's seed, so a fit is reproducible.
        """
        raise NotImplementedError


def apply_source_adapters(adapter: SourceAdapter | Sequence[SourceAdapter] | None, source: Dataset,
                          target: Dataset | None, *, seed: int, owner: str) -> tuple[Dataset, list[SourceAdapter]]:
    """Clone each adapter, fit it and chain the results; return ``(dataset, fitted adapters)``.

    ``owner`` (the method's class name) goes into error messages.
    """
    if adapter is None:
        return source, []
    chain = list(adapter) if isinstance(adapter, (list, tuple)) else [adapter]
    problems = [f"source_adapter[{i}]: {type(a).__name__} is not a SourceAdapter (it needs fit_transform)"
                for i, a in enumerate(chain) if not callable(getattr(a, "fit_transform", None))]
    if problems:
        raise ConfigError(owner, problems)
    fitted: list[Any] = []
    for a in chain:
        a = clone(a)
        if target is None and a.needs_target():
            raise ConfigError(owner, [f"source_adapter {type(a).__name__} needs the unlabelled target images: "
                                      "call fit(source, target)"])
        source = a.fit_transform(source, target, seed=seed)
        fitted.append(a)
    return source, fitted
