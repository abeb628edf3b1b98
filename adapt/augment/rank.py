""""Which shift is this?": rank augmentation families by how much of the feature gap they close.

For a source / target pair, each family is applied to the source images at a few strengths and
the gap MMD^2(features(augmented source), features(target)) is measured; a family that turns
source images into target-looking ones closes the gap. The table says, e.g., "mostly noise".

Design choices (why):

* Features are `shift_features` (intensity histogram, gradient, noise, frequency-band,
  haze and colour statistics): cheap, no training, and each reacts to one kind of shift.
  Features are z-scored with the pooled un-augmented source+target statistics and the kernel
  bandwidth (median heuristic) is fixed from that same pool, so every family is scored in the
  same units (a per-family median would rescale the gap and make rows incomparable).
* MMD^2 is `shiftkit.evaluation.gap.mmd2_unbiased` (unbiased, Gaussian kernel).
* Families are additive corruptions of the source. A target that is *cleaner* than the
  source (less noise) is matched by the family that hides the difference (blur), which the
  table then names; this is reported, not hidden.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd

from shiftkit.adapt.augment.families import FAMILIES, build_family, family_names
from shiftkit.adapt.augment.features import shift_features
from shiftkit.adapt.augment.pipeline import Augmenter
from shiftkit.adapt.augment.restyle import load_target_pool
from shiftkit.datasets.errors import DataError
from shiftkit.datasets.progress import progress_bar

__all__ = ["rank_shift_families", "describe_ranking"]


def _mmd2(x: np.ndarray, y: np.ndarray, bandwidth: float) -> float:
    try:
        from shiftkit.evaluation.gap import mmd2_unbiased
    except ImportError:  # evaluation is optional for this helper; same estimator below
        return _mmd2_numpy(x, y, bandwidth)
    return float(mmd2_unbiased(x, y, bandwidth=bandwidth))


def _mmd2_numpy(x: np.ndarray, y: np.ndarray, bandwidth: float) -> float:
    """Unbiased MMD^2 with k(a, b) = exp(-|a - b|^2 / (2 bandwidth^2)) (Gretton et al. 2012)."""
    def k(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        d2 = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2 * a @ b.T
        return np.exp(-np.maximum(d2, 0) / (2 * bandwidth**2))

    n, m = len(x), len(y)
    kxx, kyy, kxy = k(x, x), k(y, y), k(x, y)
    return float((kxx.sum() - np.trace(kxx)) / (n * (n - 1)) + (kyy.sum() - np.trace(kyy)) / (m * (m - 1))
                 - 2 * kxy.mean())


def _median_bandwidth(z: np.ndarray) -> float:
    d2 = ((z[:, None, :] - z[None, :, :]) ** 2).sum(-1)
    iu = np.triu_indices(len(z), k=1)
    med = float(np.sqrt(np.median(d2[iu])))
    return med if med > 0 else 1.0


def rank_shift_families(
    source_images: Any,
    target_images: Any,
    *,
    families: Sequence[str] | None = None,
    domain: str | None = None,
    strengths: Sequence[float] = (0.25, 0.5, 1.0),
    max_images: int = 200,
    image_size: int | None = None,
    seed: int = 0,
    feature_fn: Callable[[list[np.ndarray]], np.ndarray] = shift_features,
    progress: bool = True,
) -> pd.DataFrame:
    """Rank augmentation families by the source-to-target feature gap left after applying them.

    Args:
        source_images, target_images: anything `load_target_pool` reads: arrays (N, C, H, W) /
            (N, H, W, C) / (N, H, W) in [0, 1], torch Datasets of shiftkit items, a manifest
            path, or a list of H x W x C arrays. Labels are never read.
        families: family names to try (default: every family that applies to the channel
            count, or those of `domain`).
        domain: "radiograph" or "driving" to restrict the default families.
        strengths: each family is tried at these strengths; the best one is reported.
        max_images: seeded subset size per side.
        image_size: the side pixel-valued family arguments are scaled to (default: the source
            images' mean side).
        seed: seeds subsets and augmentations.
        feature_fn: list of H x W x C float images -> (N, D) features.

    Returns:
        DataFrame sorted best first, one row per family: `rank`, `family`, `kind`,
        `description`, `gap_before`, `gap_after` (MMD^2 at the best strength), `reduction`
        (1 - after / before; 1 = gap closed, <= 0 = no help), `best_strength`. The verdict
        sentence is in `df.attrs["summary"]`.
    """
    src = load_target_pool(source_images, max_images=max_images, seed=seed)
    tgt = load_target_pool(target_images, max_images=max_images, seed=seed + 1)
    if len(src) < 2 or len(tgt) < 2:
        raise DataError(f"rank_shift_families: need at least 2 images per side, got {len(src)} and {len(tgt)}")
    channels = src[0].shape[-1]
    if families is None:
        families = family_names(domain, channels=channels)
    for name in families:
        if name not in FAMILIES:
            raise ValueError(f"unknown family {name!r}; known: {', '.join(FAMILIES)}")
    for s in strengths:
        if not (0.0 < float(s) <= 1.0):
            raise ValueError(f"strengths must lie in (0, 1], got {s}")
    if image_size is None:
        image_size = int(np.mean([max(im.shape[:2]) for im in src]))

    f_src, f_tgt = feature_fn(src), feature_fn(tgt)
    pooled = np.concatenate([f_src, f_tgt])
    mu, sd = pooled.mean(0), pooled.std(0)
    keep = sd > 1e-9  # constant features (colour block of grey images) carry nothing
    mu, sd = mu[keep], sd[keep]

    def z(f: np.ndarray) -> np.ndarray:
        return (f[:, keep] - mu) / sd

    z_tgt = z(f_tgt)
    bandwidth = _median_bandwidth(np.concatenate([z(f_src), z_tgt]))
    before = _mmd2(z(f_src), z_tgt, bandwidth)

    rows = []
    jobs = [(name, s) for name in families for s in strengths]
    scores: dict[str, list[tuple[float, float]]] = {name: [] for name in families}
    for i, (name, s) in enumerate(progress_bar(jobs, desc="shift families", enabled=progress, leave=True)):
        aug = Augmenter(build_family(name, s, image_size=image_size), seed=seed * 1000 + i)
        augmented = [aug(im)["image"] for im in src]
        scores[name].append((_mmd2(z(feature_fn(augmented)), z_tgt, bandwidth), float(s)))
    for name in families:
        after, s_best = min(scores[name])
        fam = FAMILIES[name]
        rows.append({
            "family": name, "kind": fam.kind, "description": fam.description,
            "gap_before": before, "gap_after": after,
            "reduction": (1.0 - after / before) if before > 0 else 0.0,
            "best_strength": s_best,
        })
    table = pd.DataFrame(rows).sort_values("gap_after", kind="stable").reset_index(drop=True)
    table.insert(0, "rank", np.arange(1, len(table) + 1))
    table.attrs["summary"] = describe_ranking(table)
    table.attrs["bandwidth"] = bandwidth
    return table


def describe_ranking(table: pd.DataFrame, *, top: int = 3) -> str:
    """One-sentence verdict from a `rank_shift_families` table."""
    if table.empty:
        return "no families were tried"
    best = table.iloc[0]
    if best["reduction"] <= 0.05:
        return (f"no single augmentation family explains the shift (best: {best['family']}, "
                f"{100 * best['reduction']:.0f} % of the gap closed); it is likely content or layout, "
                "not acquisition or weather")
    helpful = table[table["reduction"] > 0.05].head(top)
    parts = [f"{r.family} ({100 * r.reduction:.0f} %)" for r in helpful.itertuples()]
    return (f"the shift is mostly {best['kind']}: {best['family']} at strength {best['best_strength']:g} closes "
            f"{100 * best['reduction']:.0f} % of the feature gap; families that help: {', '.join(parts)}")
