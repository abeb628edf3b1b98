"""A zoo of candidate source models on the embedded radiograph benchmark, for ranking tests,
docs and the transferability study.

Each candidate is a classifier trained (source-only) on one radiograph site with one backbone
for a number of epochs, saved with :func:`shiftkit.adapt.save_model` into its own folder, so
``shiftkit rank --candidates <zoo>/*`` can read them like any user's models.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

__all__ = ["ZooSpec", "DEFAULT_ZOO", "SMALL_ZOO", "build_radiograph_zoo"]


@dataclass(frozen=True)
class ZooSpec:
    """One candidate: trained on ``site`` with ``backbone`` for ``epochs`` (name = folder)."""

    site: str
    backbone: str
    epochs: int

    @property
    def name(self) -> str:
        return f"{self.site}-{self.backbone}-e{self.epochs}"


#: Nine candidates: three sites x (tiny for 1 and 6 epochs, resnet10 for 2 epochs). The
#: target site of the study is ``rural``, which no candidate saw.
DEFAULT_ZOO: tuple[ZooSpec, ...] = tuple(
    ZooSpec(site, bb, ep)
    for site in ("city", "teaching", "icu")
    for bb, ep in (("tiny", 1), ("tiny", 6), ("resnet10", 2))
)
#: Four tiny candidates for unit tests (seconds to build).
SMALL_ZOO: tuple[ZooSpec, ...] = (ZooSpec("city", "tiny", 1), ZooSpec("city", "tiny", 4),
                                  ZooSpec("icu", "tiny", 1), ZooSpec("teaching", "tiny", 3))


def build_radiograph_zoo(
    out_dir: str | os.PathLike[str],
    specs: tuple[ZooSpec, ...] = DEFAULT_ZOO,
    *,
    size: int = 32,
    n_train: int = 300,
    data_seed: int = 1,
    model_seed: int = 0,
    overwrite: bool = False,
) -> list[Path]:
    """Train and save each candidate under ``out_dir/<site>-<backbone>-e<epochs>/``.

    Args:
        out_dir: folder for the candidates (created).
        specs: which candidates (:data:`DEFAULT_ZOO`: 9; :data:`SMALL_ZOO`: 4).
        size: image side in pixels.
        n_train: source training images per site (split ``"train"``).
        data_seed: data seed of the SOURCE images (not a target seed; the study's target
            images come from the development or test data seeds).
        model_seed: initialisation / batch-order seed.
        overwrite: retrain candidates whose folder already holds a model.

    Returns:
        The candidate folders, in ``specs`` order. Existing candidates are reused, so the zoo
        can be cached.
    """
    from shiftkit.adapt.deploy.saving import save_model
    from shiftkit.adapt.methods import SourceOnly
    from shiftkit.adapt.training.data import CachedDataset
    from shiftkit.datasets.synth.radiograph import SynthDataset

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cache: dict[str, CachedDataset] = {}
    paths = []
    for spec in specs:
        folder = out / spec.name
        paths.append(folder)
        if (folder / "model.json").exists() and (folder / "model.safetensors").exists() and not overwrite:
            continue
        if spec.site not in cache:
            cache[spec.site] = CachedDataset(SynthDataset(spec.site, n_train, seed=data_seed, split="train", size=size))
        ds = cache[spec.site]
        method = SourceOnly(spec.backbone, num_classes=2, epochs=spec.epochs, batch_size=32, lr=2e-3,
                            seed=model_seed, device="cpu", progress=False)
        method.fit(ds)
        save_model(method, folder, class_names=["no_finding", "finding"], image_size=(size, size), in_channels=1,
                   training_summary={"source_site": spec.site, "backbone": spec.backbone, "epochs": spec.epochs,
                                     "n_source_images": n_train})
    return paths
