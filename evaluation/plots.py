"""Matplotlib figures for reports. Figures are built with `matplotlib.figure.Figure` directly
(no pyplot global state, no GUI backend), so they are safe in headless and threaded runs.

Every function returns a Figure; `figure_to_png(fig)` turns one into PNG bytes for embedding.
Plots show aggregates (curves, group means, embeddings of features) only, never identifiers.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from shiftkit.datasets.errors import DataError

__all__ = [
    "new_figure",
    "figure_to_png",
    "learning_curves_figure",
    "comparison_bar_figure",
    "gap_bars_figure",
    "epoch_gaps_figure",
    "layer_gap_figure",
    "embedding_figure",
    "segmentation_overlay_figure",
]

# Series drawn in the learning-curve panels: (panel title, key suffixes). A key is drawn when it
# ends with the suffix and is numeric in at least one epoch.
_LOSS_KEYS = ("train_loss", "val_loss", "target_loss", "source_val_loss", "domain_loss", "test_loss")
_SCORE_SUFFIXES = ("_acc", "_accuracy", "_auroc", "_miou", "_dice", "_balanced_accuracy")


def new_figure(figsize: tuple[float, float] = (6.0, 4.0), nrows: int = 1, ncols: int = 1):
    """(Figure, axes) without touching pyplot."""
    fig = Figure(figsize=figsize, layout="constrained")
    # Like pyplot.subplots: one Axes, a 1-D array for one row/column, else 2-D.
    axes = fig.subplots(nrows, ncols, squeeze=True)
    return fig, axes


def figure_to_png(fig: Figure, dpi: int = 100) -> bytes:
    """PNG bytes of a Figure (Agg renderer)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) and math.isfinite(float(v))


def _series(history: Sequence[Mapping[str, Any]], key: str) -> tuple[list[float], list[float]]:
    xs, ys = [], []
    for i, row in enumerate(history):
        v = row.get(key)
        if _is_num(v):
            xs.append(float(row.get("epoch", i)) if _is_num(row.get("epoch", i)) else float(i))
            ys.append(float(v))
    return xs, ys


def learning_curves_figure(histories: Mapping[str, Sequence[Mapping[str, Any]]]) -> Figure | None:
    """One row per method: losses (left) and scores (right) against epoch.

    histories: {method: [epoch dict, ...]} with keys like train_loss, val_loss, target_loss,
    train_acc, val_acc, val_auroc, target_acc (any numeric key ending in a known suffix).
    Returns None when no history has a plottable series.
    """
    rows = [(name, h) for name, h in histories.items() if isinstance(h, Sequence) and len(h)]
    if not rows:
        return None
    fig, axes = new_figure((10.0, 3.0 * len(rows)), nrows=len(rows), ncols=2)
    axes = np.asarray(axes, dtype=object).reshape(len(rows), 2)
    drew = False
    for r, (name, hist) in enumerate(rows):
        keys = sorted({k for row in hist if isinstance(row, Mapping) for k in row})
        loss_keys = [k for k in keys if k.endswith("_loss") or k in _LOSS_KEYS]
        score_keys = [k for k in keys if k.endswith(_SCORE_SUFFIXES)]
        for ax, ks, ylabel in ((axes[r, 0], loss_keys, "loss"), (axes[r, 1], score_keys, "score")):
            for k in ks:
                x, y = _series(hist, k)
                if x:
                    ax.plot(x, y, marker="o", markersize=3, label=k)
                    drew = True
            ax.set_title(f"{name}: {ylabel}")
            ax.set_xlabel("epoch")
            ax.set_ylabel(ylabel)
            if ax.lines:
                ax.legend(fontsize=7)
    return fig if drew else None


def epoch_gaps_figure(analyses: Mapping[str, Mapping[str, Any]]) -> Figure | None:
    """Per-epoch gaps from `overfitting.analyse_history` outputs ({method: analysis}):
    generalisation gap (val_loss - train_loss), accuracy gap (train_acc - val_acc) and domain
    gap (val_acc - target_acc), with the chosen (best) epoch marked."""
    keys = ("generalisation_gap", "accuracy_gap", "domain_gap")
    present = [k for k in keys if any(isinstance(a, Mapping) and a.get(k) for a in analyses.values())]
    if not present:
        return None
    fig, axes = new_figure((4.2 * len(present), 3.3), ncols=len(present))
    axes = np.asarray(axes, dtype=object).reshape(-1)
    for ax, k in zip(axes, present, strict=True):
        for i, (name, a) in enumerate(analyses.items()):
            if not isinstance(a, Mapping) or not a.get(k):
                continue
            ep = a.get("epochs") or list(range(len(a[k])))
            y = [np.nan if v is None else v for v in a[k]]
            ax.plot(ep, y, marker="o", markersize=3, color=f"C{i}", label=name)
            if a.get("best_epoch") in ep:
                j = ep.index(a["best_epoch"])
                ax.axvline(a["best_epoch"], color=f"C{i}", linestyle=":", linewidth=1)
                ax.plot([a["best_epoch"]], [y[j]], marker="*", markersize=10, color=f"C{i}")
        ax.axhline(0, color="0.6", linewidth=0.8)
        ax.set_title(k.replace("_", " "), fontsize=9)
        ax.set_xlabel("epoch")
        if ax.lines:
            ax.legend(fontsize=7)
    return fig


def comparison_bar_figure(
    methods: Mapping[str, Mapping[str, Any]],
    metric_names: Sequence[str] = ("accuracy", "balanced_accuracy", "auroc", "miou", "mean_dice", "ece"),
    splits: Sequence[str] = ("source", "target"),
) -> Figure | None:
    """Grouped bars: one panel per split, metric on x, one bar per method (before = the
    source-only baseline, after = each adapted method). Returns None when nothing is numeric."""
    panels = []
    for split in splits:
        present = [m for m in metric_names
                   if any(_is_num((methods[k].get(split) or {}).get(m)) for k in methods
                          if isinstance(methods[k], Mapping) and isinstance(methods[k].get(split), Mapping))]
        if present:
            panels.append((split, present))
    if not panels:
        return None
    fig, axes = new_figure((5.0 * len(panels), 4.0), ncols=len(panels))
    axes = np.asarray(axes, dtype=object).reshape(-1)
    names = list(methods)
    width = 0.8 / max(len(names), 1)
    for ax, (split, present) in zip(axes, panels, strict=False):
        x = np.arange(len(present))
        for i, name in enumerate(names):
            block = methods[name].get(split) if isinstance(methods[name], Mapping) else None
            vals = [float(block[m]) if isinstance(block, Mapping) and _is_num(block.get(m)) else np.nan
                    for m in present]
            bars = ax.bar(x + i * width - 0.4 + width / 2, vals, width, label=name)
            for b, v in zip(bars, vals, strict=False):
                if np.isfinite(v):
                    ax.annotate(f"{v:.2f}", (b.get_x() + b.get_width() / 2, v), ha="center",
                                va="bottom", fontsize=6)
        ax.set_xticks(x, present, rotation=20)
        ax.set_ylim(0, 1.05)
        ax.set_title(f"{split} domain")
        ax.legend(fontsize=7)
    return fig


def gap_bars_figure(
    gaps: Mapping[str, Mapping[str, Any]],
    measures: Sequence[str] = ("mmd2", "proxy_a_distance", "frechet", "coral", "mean_l2"),
) -> Figure | None:
    """Small multiples: one panel per gap measure, one bar per entry of `gaps`
    ({label: gap_summary dict}, e.g. {"source_only": ..., "dann": ...} or {"before", "after"}).
    Panels have their own scales because the measures have different units."""
    present = [m for m in measures if any(isinstance(g, Mapping) and _is_num(g.get(m)) for g in gaps.values())]
    if not present:
        return None
    fig, axes = new_figure((2.6 * len(present), 3.2), ncols=len(present))
    axes = np.asarray(axes, dtype=object).reshape(-1)
    labels = list(gaps)
    for ax, m in zip(axes, present, strict=False):
        vals = [float(gaps[k][m]) if isinstance(gaps[k], Mapping) and _is_num(gaps[k].get(m)) else np.nan
                for k in labels]
        ax.bar(range(len(labels)), vals, color=[f"C{i}" for i in range(len(labels))])
        ax.set_xticks(range(len(labels)), labels, rotation=30, fontsize=7)
        ax.set_title(m, fontsize=9)
    fig.suptitle("domain gap on features (lower = closer domains)", fontsize=10)
    return fig


def layer_gap_figure(profiles: Mapping[str, Mapping[str, Mapping[str, Any]]],
                     measures: Sequence[str] = ("mmd2", "proxy_a_distance")) -> Figure | None:
    """Per-layer gap profile: {label (e.g. before/after): {layer: gap_summary}} -> lines.
    Raises DataError when ``profiles`` is not such a mapping."""
    if not isinstance(profiles, Mapping):
        raise DataError(f"a layer gap profile is a mapping label -> layer -> gap summary, not {type(profiles).__name__}")
    if not profiles:
        return None
    fig, axes = new_figure((5.0 * len(measures), 3.5), ncols=len(measures))
    axes = np.asarray(axes, dtype=object).reshape(-1)
    drew = False
    for ax, m in zip(axes, measures, strict=False):
        for label, prof in profiles.items():
            if not isinstance(prof, Mapping):
                continue
            layers = [k for k, v in prof.items() if isinstance(v, Mapping) and _is_num(v.get(m))]
            if layers:
                ax.plot(range(len(layers)), [float(prof[k][m]) for k in layers], marker="o", label=label)
                ax.set_xticks(range(len(layers)), layers, rotation=30, fontsize=7)
                drew = True
        ax.set_title(f"{m} per layer")
        if ax.lines:
            ax.legend(fontsize=7)
    return fig if drew else None


def embedding_figure(
    stages: Mapping[str, tuple[Any, Any]],
    *,
    method: str = "pca",
    max_points: int = 1000,
    seed: int = 0,
) -> Figure:
    """2-D embedding of features coloured by domain, one panel per stage.

    stages: {"before": (features_source (n, D), features_target (m, D)), "after": (...)}.
    method: "pca" (fast, linear) or "tsne" (sklearn TSNE, slower). At most `max_points` points
    per domain are drawn (seeded subsample). Each stage gets its own projection, since before
    and after live in different feature spaces.
    """
    from sklearn.decomposition import PCA

    from ._arrays import features_2d

    rng = np.random.default_rng(seed)
    fig, axes = new_figure((4.5 * len(stages), 4.2), ncols=len(stages))
    axes = np.asarray(axes, dtype=object).reshape(-1)
    for ax, (label, (fs, ft)) in zip(axes, stages.items(), strict=False):
        a = features_2d(fs, f"{label} source features")
        b = features_2d(ft, f"{label} target features")
        if len(a) > max_points:
            a = a[rng.choice(len(a), max_points, replace=False)]
        if len(b) > max_points:
            b = b[rng.choice(len(b), max_points, replace=False)]
        z = np.concatenate([a, b])
        if method == "tsne":
            from sklearn.manifold import TSNE

            e = TSNE(n_components=2, random_state=seed, init="pca",
                     perplexity=min(30.0, max(2.0, (len(z) - 1) / 3))).fit_transform(z)
        elif method == "pca":
            e = PCA(n_components=2, random_state=seed).fit_transform(z) if z.shape[1] >= 2 else np.c_[z, np.zeros(len(z))]
        else:
            from shiftkit.datasets.errors import DataError

            raise DataError(f"argument 'method' must be 'pca' or 'tsne'; got {method!r}")
        ax.scatter(e[: len(a), 0], e[: len(a), 1], s=6, alpha=0.5, label="source")
        ax.scatter(e[len(a):, 0], e[len(a):, 1], s=6, alpha=0.5, label="target")
        ax.set_title(f"{label} ({method.upper()})")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.legend(fontsize=7)
    return fig


def segmentation_overlay_figure(
    images: Sequence[Any],
    true_masks: Sequence[Any],
    pred_masks: Sequence[Any],
    *,
    num_classes: int,
    alpha: float = 0.5,
    titles: Sequence[str] | None = None,
    class_names: Sequence[str] | None = None,
) -> Figure:
    """Rows of image | truth overlay | prediction overlay. images: (C, H, W) or (H, W) in [0, 1];
    masks: int (H, W), pixels < 0 (unlabelled) left uncovered. ``class_names`` adds a colour
    legend. Meant for scene data (dashcam); do not put patient images in reports."""
    from matplotlib import colormaps
    from matplotlib.patches import Patch

    cmap = colormaps["tab10" if num_classes <= 10 else "tab20"]
    n = len(images)
    h, w = np.asarray(images[0]).shape[-2:] if n else (1, 1)
    row_height = 3.0 * h / max(w, 1) + 0.4  # wide dashcam frames get short rows
    fig, axes = new_figure((9.0 + (1.6 if class_names else 0.0), row_height * n), nrows=n, ncols=3)
    axes = np.asarray(axes, dtype=object).reshape(n, 3)
    for i in range(n):
        img = np.asarray(images[i], dtype=float)
        if img.ndim == 3:
            img = np.moveaxis(img, 0, -1)
            if img.shape[-1] == 1:
                img = img[..., 0]
        for j, (mask, name) in enumerate(((None, "image"), (true_masks[i], "truth"), (pred_masks[i], "prediction"))):
            ax = axes[i, j]
            ax.imshow(img, cmap="gray" if img.ndim == 2 else None, vmin=0, vmax=1)
            if mask is not None:
                m = np.asarray(mask)
                rgba = cmap(np.clip(m, 0, None) % cmap.N)
                rgba[..., 3] = np.where(m >= 0, alpha, 0.0)
                ax.imshow(rgba)
            ax.set_title(f"{titles[i] + ': ' if titles else ''}{name}", fontsize=8)
            ax.axis("off")
    if class_names:
        handles = [Patch(color=cmap(k % cmap.N), label=str(nm)) for k, nm in enumerate(class_names)]
        fig.legend(handles=handles, loc="outside right center", fontsize=8, frameon=False)
    return fig
