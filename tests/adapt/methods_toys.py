"""Small, fast problems shared by the method tests and ``scripts/dev_methods.py``.

Everything here draws its data from a *data seed* and initialises models from a separate
*model seed* (the efficacy protocol).
"""

from __future__ import annotations

import numpy as np
import torch

from shiftkit.adapt.models.backbones import build_mlp
from shiftkit.adapt.training.data import ArrayDataset

#: Training settings of the toy runs (the DANN moons toy's optimiser, fewer epochs).
TOY_TRAIN = dict(epochs=40, batch_size=32, lr=0.05, optimizer="sgd", weight_decay=0.0, grad_clip=None,
                 progress=False)


def _blobs(rng: np.random.Generator, n: int, priors: np.ndarray, angle_deg: float, radius: float,
           sigma: float) -> tuple[np.ndarray, np.ndarray]:
    k = len(priors)
    y = rng.choice(k, size=n, p=priors)
    theta = 2 * np.pi * y / k + np.deg2rad(angle_deg)
    centres = radius * np.stack([np.cos(theta), np.sin(theta)], 1)
    return (centres + sigma * rng.normal(size=(n, 2))).astype("f4"), y


def class_conditional_toy(seed: int, *, n: int = 450, k: int = 3, rotation: float = 40.0,
                          target_priors: tuple[float, ...] = (0.6, 0.3, 0.1), radius: float = 2.0,
                          sigma: float = 0.6) -> dict[str, np.ndarray]:
    """``k`` Gaussian classes on a circle; the target is rotated by ``rotation`` degrees AND has
    other class proportions (``target_priors``; the source's are uniform).

    Aligning the feature *marginals* (DANN) then has to move part of the target's majority
    class onto the source's other classes; aligning features jointly with the predictions
    (CDAN) does not.
    """
    rng = np.random.default_rng(seed)
    xs, ys = _blobs(rng, n, np.full(k, 1.0 / k), 0.0, radius, sigma)
    xt, yt = _blobs(rng, n, np.asarray(target_priors) / np.sum(target_priors), rotation, radius, sigma)
    return {"xs": xs, "ys": ys, "xt": xt, "yt": yt, "k": k}


def fit_toy_methods(data: dict, model_seed: int = 0, methods: tuple[str, ...] = ("source_only", "dann", "cdan"),
                    hidden: tuple[int, ...] = (16, 2), adversary: str = "confusion", cdan: dict | None = None,
                    **overrides) -> dict[str, float]:
    """Target accuracy of each method on a toy from :func:`class_conditional_toy` (labels only score)."""
    from shiftkit.adapt.methods import CDAN, DANN, SourceOnly

    src = ArrayDataset(data["xs"], data["ys"])
    tgt = ArrayDataset(data["xt"])  # no labels at all
    train = {**TOY_TRAIN, **overrides}
    out = {}
    for name in methods:
        torch.manual_seed(model_seed)
        net = build_mlp(2, list(hidden), data["k"], activation="tanh")
        if name == "source_only":
            m = SourceOnly(net, seed=model_seed, **train).fit(src)
        elif name == "dann":
            m = DANN(net, disc_hidden=(16,), adversary=adversary, seed=model_seed, **train).fit(src, tgt)
        elif name == "cdan":
            m = CDAN(net, disc_hidden=(16,), adversary=adversary, **(cdan or {}), seed=model_seed, **train).fit(src, tgt)
        else:
            raise ValueError(name)
        out[name] = float((m.predict(data["xt"]) == data["yt"]).mean())
    return out


def stripes(seed: int, n: int, *, size: int = 16, contrast: float = 1.0, offset: float = 0.0, noise: float = 0.1,
            sorted_by_class: bool = False, brightness: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """Two classes of grey images ``(n, 1, size, size)``: horizontal (0) or vertical (1) stripes.

    Random stripe period and phase, Gaussian pixel noise; class 1 is ``brightness`` brighter
    (a label that also moves low-level statistics, as a finding does on a radiograph). A "corruption" shift lowers the
    contrast and adds an offset: ``x' = 0.5 + contrast * (x - 0.5) + offset``, then noise.
    ``sorted_by_class`` orders the items by class (a label-correlated stream).
    """
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    period = rng.uniform(3.0, 6.0, n)
    phase = rng.uniform(0, 2 * np.pi, n)
    axis = np.arange(size, dtype="f4")
    out = np.empty((n, 1, size, size), "f4")
    for i in range(n):
        wave = 0.5 + 0.4 * np.sin(2 * np.pi * axis / period[i] + phase[i])
        img = np.repeat(wave[:, None], size, 1) if y[i] == 0 else np.repeat(wave[None, :], size, 0)
        out[i, 0] = 0.5 + contrast * (img + brightness * y[i] - 0.5) + offset
    out += noise * rng.normal(size=out.shape).astype("f4")
    if sorted_by_class:
        order = np.argsort(y, kind="stable")
        out, y = out[order], y[order]
    return out, y


def train_source_cnn(xs: np.ndarray, ys: np.ndarray, model_seed: int = 0, epochs: int = 3):
    """A small BatchNorm CNN (the ``tiny`` backbone) trained on labelled source images."""
    from shiftkit.adapt.methods import SourceOnly

    return SourceOnly("tiny", num_classes=2, epochs=epochs, batch_size=32, lr=3e-3, seed=model_seed,
                      progress=False).fit(ArrayDataset(xs, ys)).model_.eval()
