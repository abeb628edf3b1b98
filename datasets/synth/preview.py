"""Preview grids: a PNG per domain with the generated images and their masks overlaid.

Meant for eyeballing a benchmark (``shiftkit synth NAME --preview``): each tile shows the
image on top and the same image with the mask blended in colour below.
"""

from __future__ import annotations

import os
from pathlib import Path
from types import ModuleType

import numpy as np

from ..files import atomic_write_bytes
from ._common import encode_png

# Cityscapes-like colours for dashcam classes; radiograph: lung blue, lesion red.
_DASHCAM_COLOURS = np.array([[128, 64, 128], [255, 255, 255], [244, 35, 232], [70, 70, 70], [107, 142, 35],
                             [152, 251, 152], [70, 130, 180], [0, 0, 142], [220, 20, 60]], np.uint8)
_RADIOGRAPH_COLOURS = np.array([[0, 0, 0], [40, 90, 255], [255, 30, 30]], np.uint8)


def _tile(sample: dict, colours: np.ndarray, alpha_bg: bool) -> np.ndarray:
    img = sample["image"]
    rgb = np.repeat(img, 3, axis=0) if img.shape[0] == 1 else img
    rgb = (np.clip(rgb.transpose(1, 2, 0), 0, 1) * 255).astype(np.uint8)
    mask = np.clip(sample["mask"], 0, len(colours) - 1)
    over = colours[mask].astype(np.float32)
    alpha = np.full(mask.shape + (1,), 0.45, np.float32)
    if alpha_bg:  # radiograph: leave background pixels untouched
        alpha[mask == 0] = 0.0
    blended = (rgb * (1 - alpha) + over * alpha).astype(np.uint8)
    return np.concatenate([rgb, blended], axis=0)


def preview_grid(module: ModuleType, domain: str, out_path: str | os.PathLike[str], *, n: int = 8,
                 seed: int = 0, size: int | tuple[int, int] | None = None, columns: int = 4) -> Path:
    """Write a PNG grid of ``n`` samples of ``domain`` (image above, mask overlay below).

    ``module`` is `shiftkit.datasets.synth.radiograph`, `.dashcam` or `.digits`. Returns the PNG path.
    """
    size = module.DEFAULT_SIZE if size is None else size
    radiograph = not module.__name__.endswith("dashcam")  # radiograph and digits: overlay the foreground only
    colours = _RADIOGRAPH_COLOURS if radiograph else _DASHCAM_COLOURS
    tiles = [_tile(module.sample(domain, i, seed=seed, size=size), colours, radiograph) for i in range(n)]
    th, tw = tiles[0].shape[:2]
    rows = -(-n // columns)
    pad = 2
    grid = np.full((rows * (th + pad) + pad, columns * (tw + pad) + pad, 3), 255, np.uint8)
    for k, t in enumerate(tiles):
        r, c = divmod(k, columns)
        grid[pad + r * (th + pad):pad + r * (th + pad) + th, pad + c * (tw + pad):pad + c * (tw + pad) + tw] = t
    out = Path(out_path)
    atomic_write_bytes(out, encode_png(grid))
    return out
