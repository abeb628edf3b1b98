"""A PNG grid to eyeball augmentations: originals, preset samples at several strengths, target
restyled versions, target examples, with mask overlays.

Rows are images; columns are: original, preset at each strength, restyled toward the target
pool (when one is given), and one target image for reference. Masks are drawn as coloured
outlines, after the same spatial transform the image received.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from shiftkit.adapt.augment.pipeline import Augmenter
from shiftkit.datasets.files import atomic_path

__all__ = ["render_preview", "preview_grid"]

_PALETTE = np.array([
    [230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200], [245, 130, 48],
    [145, 30, 180], [70, 240, 240], [240, 50, 230], [210, 245, 60], [250, 190, 212],
], dtype=np.float32) / 255.0


def _to_rgb(img: np.ndarray) -> np.ndarray:
    img = np.asarray(img, dtype=np.float32)
    if img.ndim == 2:
        img = img[:, :, None]
    return np.repeat(img, 3, axis=-1) if img.shape[-1] == 1 else img


def _overlay(img: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    """Colour the pixels on a class boundary with the colour of their class."""
    rgb = _to_rgb(img).copy()
    if mask is None:
        return rgb
    m = np.asarray(mask)
    edge = np.zeros(m.shape, bool)
    edge[:-1] |= m[:-1] != m[1:]
    edge[1:] |= m[1:] != m[:-1]
    edge[:, :-1] |= m[:, :-1] != m[:, 1:]
    edge[:, 1:] |= m[:, 1:] != m[:, :-1]
    colours = _PALETTE[np.mod(m, len(_PALETTE))]
    rgb[edge] = 0.4 * rgb[edge] + 0.6 * colours[edge]
    return rgb


def preview_grid(images: Sequence[np.ndarray], masks: Sequence[np.ndarray | None] | None,
                 columns: Sequence[tuple[str, Augmenter | None]], *, targets: Sequence[np.ndarray] = (),
                 seed: int = 0) -> tuple[list[str], list[list[np.ndarray]]]:
    """Cells of the grid: (column titles, rows of H x W x 3 float images)."""
    masks = list(masks) if masks is not None else [None] * len(images)
    titles = [name for name, _ in columns] + (["target example"] if len(targets) else [])
    rows = []
    for r, (img, mask) in enumerate(zip(images, masks, strict=True)):
        cells = []
        for c, (_, aug) in enumerate(columns):
            if aug is None:
                cells.append(_overlay(img, mask))
            else:
                out = aug(img, mask, seed=[seed, r, c])
                cells.append(_overlay(out["image"], out["mask"]))
        if len(targets):
            cells.append(_to_rgb(targets[r % len(targets)]))
        rows.append(cells)
    return titles, rows


def render_preview(out: str | os.PathLike[str], titles: Sequence[str], rows: Sequence[Sequence[np.ndarray]], *,
                   suptitle: str = "", cell_inches: float = 1.6) -> Path:
    """Write the grid to a PNG atomically (temp file + os.replace)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    n_rows, n_cols = len(rows), len(titles)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(cell_inches * n_cols, cell_inches * n_rows + 0.4),
                             squeeze=False)
    for r, row in enumerate(rows):
        for c, cell in enumerate(row):
            ax = axes[r][c]
            ax.imshow(np.clip(cell, 0, 1), interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(titles[c], fontsize=7)
    if suptitle:
        fig.suptitle(suptitle, fontsize=9)
    fig.tight_layout()
    try:
        with atomic_path(out) as tmp:
            fig.savefig(tmp, dpi=110, format="png")
    finally:
        plt.close(fig)
    return out


def benchmark_images(benchmark: str, n: int, *, size: int, seed: int = 0) -> dict[str, Any]:
    """Source images + masks and target images of an embedded benchmark (default domain pair)."""
    import importlib

    mod = importlib.import_module(f"shiftkit.datasets.synth.{benchmark}")
    src = [mod.sample(mod.DEFAULT_SOURCE, i, seed=seed, size=size) for i in range(n)]
    tgt = [mod.sample(mod.DEFAULT_TARGET, i, seed=seed, size=size) for i in range(max(n, 16))]
    return {
        "images": [np.ascontiguousarray(np.asarray(s["image"], np.float32).transpose(1, 2, 0)) for s in src],
        "masks": [np.asarray(s["mask"]) if s.get("mask") is not None else None for s in src],
        "targets": [np.ascontiguousarray(np.asarray(s["image"], np.float32).transpose(1, 2, 0)) for s in tgt],
        "source": mod.DEFAULT_SOURCE, "target": mod.DEFAULT_TARGET,
    }
