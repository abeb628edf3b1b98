"""All the gap measures of two feature sets in one dict (:func:`gap_summary`), per layer,
and before / after tables."""

from __future__ import annotations

from typing import Any

from shiftkit.datasets.errors import DataError

from .._arrays import features_2d, same_width
from .distances import coral_distance, frechet_distance, mean_distance, proxy_a_distance
from .mmd import mmd_test

__all__ = ["compare_gaps", "gap_summary", "layer_gap_profile"]


def gap_summary(
    xs: Any,
    xt: Any,
    *,
    n_permutations: int = 500,
    seed: int = 0,
    max_samples: int | None = 5000,
    include_pad: bool = True,
) -> dict[str, float | int]:
    """All gap measures on one pair of feature sets, as a flat JSON-ready dict.

    Keys: n_source, n_target, dim, mmd2, mmd_p_value, mmd_bandwidth, proxy_a_distance,
    domain_error, domain_auroc, frechet, coral, mean_l2. Mean-sensitive measures (mmd2, frechet,
    mean_l2, proxy_a_distance) sit beside CORAL so that a pure mean shift is never reported as
    "no gap". Note: comparing mmd2 before/after adaptation is only meaningful with the same
    bandwidth; `compare_gaps` reports ratios, and `layer_gap_profile` the per-layer values.
    """
    a = features_2d(xs, "xs")
    b = features_2d(xt, "xt")
    same_width(a, b, "xs", "xt")
    res = mmd_test(a, b, n_permutations=n_permutations, seed=seed, max_samples=max_samples)
    out: dict[str, float | int] = {
        "n_source": int(a.shape[0]),
        "n_target": int(b.shape[0]),
        "dim": int(a.shape[1]),
        "mmd2": res.mmd2,
        "mmd_p_value": res.p_value,
        "mmd_bandwidth": res.bandwidth,
    }
    if include_pad and min(len(a), len(b)) >= 4:
        out.update(proxy_a_distance(a, b, seed=seed))
    out["frechet"] = frechet_distance(a, b)
    out["coral"] = coral_distance(a, b)
    out["mean_l2"] = mean_distance(a, b)
    return out


def layer_gap_profile(
    layers: dict[str, tuple[Any, Any]], **summary_kwargs: Any
) -> dict[str, dict[str, float | int]]:
    """Gap summary per layer. `layers` maps layer name -> (features_source (n, D_l),
    features_target (m, D_l)); feature maps should be pooled to (N, D_l) by the caller.
    Returns {layer name: gap_summary(...)} in the given order."""
    if not isinstance(layers, dict) or not layers:
        raise DataError("argument 'layers' must be a non-empty dict: layer name -> (source, target)")
    out: dict[str, dict[str, float | int]] = {}
    for name, pair in layers.items():
        if not isinstance(pair, (tuple, list)) or len(pair) != 2:
            raise DataError(f"layers[{name!r}] must be a (features_source, features_target) pair")
        try:
            out[name] = gap_summary(pair[0], pair[1], **summary_kwargs)
        except DataError as exc:
            raise DataError(f"layers[{name!r}]: {exc}") from exc
    return out


def compare_gaps(before: dict[str, float], after: dict[str, float]) -> dict[str, dict[str, float]]:
    """Before/after table of the numeric measures both dicts share:
    {measure: {"before", "after", "change" (after - before), "ratio" (after / before)}}."""
    out: dict[str, dict[str, float]] = {}
    for key, b in before.items():
        if key not in after or key in ("n_source", "n_target", "dim"):
            continue
        a = after[key]
        if not isinstance(a, (int, float)) or not isinstance(b, (int, float)):
            continue
        ratio = float(a) / float(b) if b not in (0, 0.0) else float("nan")
        out[key] = {"before": float(b), "after": float(a), "change": float(a) - float(b), "ratio": ratio}
    return out
