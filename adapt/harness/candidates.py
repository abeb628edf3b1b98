"""The candidate pool of label-free selection (``methods: [auto]`` and the harness's ``selected``).

Derived, never listed: every registered method that does not train on target labels
(``Method.requires.target != "labelled"``), each with its defaults and the small settings grid
its own class declares (``Method.selection_grid``, with ``selection_grid_provenance``), minus
the methods that say they cannot do the task (their ``check_params`` on a model of that task).
A method registered at run time joins the pool the same way. The baseline, source-only, is
always first: the safety rule of :func:`shiftkit.evaluation.selection.safe_choice` compares
every choice with it.
"""

from __future__ import annotations

from typing import Any

from shiftkit.adapt.methods.registry import BASELINE  # the safety rule's reference

__all__ = ["BASELINE", "ENSEMBLE", "candidate_pool", "format_spec", "label_free"]

#: The name of the candidates' ensemble (averaged probabilities) in selection reports.
ENSEMBLE = "ensemble"


def format_spec(name: str, settings: dict[str, Any]) -> str:
    """``("dann", {"lambda_max": 0.3})`` -> ``"dann[lambda_max=0.3]"`` (numbers as ``%g``, booleans
    as ``true`` / ``false``)."""
    if not settings:
        return name
    def text(v: Any) -> str:
        if isinstance(v, bool):
            return str(v).lower()  # as a run config and the command line write it
        return f"{v:g}" if isinstance(v, float) else str(v)

    parts = [f"{k}={text(v)}" for k, v in sorted(settings.items())]
    return f"{name}[{','.join(parts)}]"


def label_free(name: str) -> bool:
    """Whether the registered method ``name`` never trains on target labels."""
    from shiftkit.adapt.methods.registry import get_method

    return get_method(name).requires.target != "labelled"


def _can_do(cls: Any, task: str, num_classes: int, backbone: str) -> bool:
    check = getattr(cls(backbone, task=task, num_classes=num_classes), "check_params", None)
    return not (check() if check is not None else [])


def candidate_pool(task: str, *, num_classes: int, backbone: str | None = None) -> tuple[str, ...]:
    """Every label-free registered method that can do ``task``, with its declared settings grid.

    Args:
        task: ``"classification"`` or ``"segmentation"``.
        num_classes: ``K`` (some methods' task checks read it).
        backbone: a built-in backbone name for the task check (default ``"tiny"`` /
            ``"tiny-unet"``); nothing is trained.

    Returns:
        Candidate specs (``name`` or ``name[key=value]``), the baseline first, then in registry
        order, each method's grid in its declared order.
    """
    from shiftkit.adapt.methods.registry import get_method, method_names

    backbone = backbone or ("tiny" if task == "classification" else "tiny-unet")
    names = [BASELINE, *(n for n in method_names() if n != BASELINE)]
    out: list[str] = []
    for name in names:
        cls = get_method(name)
        if cls.requires.target == "labelled" or not _can_do(cls, task, num_classes, backbone):
            continue
        for settings in getattr(cls, "selection_grid", ({},)):
            spec = format_spec(name, dict(settings))
            if spec not in out:
                out.append(spec)
    return tuple(out)
