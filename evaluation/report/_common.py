"""What the report's parts share: the key metric and gap columns, flattening, and reading
a metrics dict as a :class:`~shiftkit.evaluation.results.RunResult`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..results import RunResult

# Scalar metrics shown first in tables and in the terminal summary, in this order.
_KEY_METRICS = ("accuracy", "balanced_accuracy", "auroc", "ece", "miou", "mean_dice", "pixel_accuracy",
                "fpr", "fnr", "threshold", "n")
_GAP_KEYS = ("mmd2", "mmd_p_value", "proxy_a_distance", "frechet", "coral", "mean_l2")


def _as_result(metrics: Mapping[str, Any] | RunResult) -> RunResult:
    return metrics if isinstance(metrics, RunResult) else RunResult.from_dict(metrics)


def _is_scalar(v: Any) -> bool:
    return v is None or isinstance(v, (int, float, str, bool))


def _flat(d: Mapping[str, Any], prefix: str = "", depth: int = 3) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping) and depth > 0:
            out.update(_flat(v, key + ".", depth - 1))
        else:
            out[key] = v
    return out
