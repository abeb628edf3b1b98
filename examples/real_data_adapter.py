"""Real data on disk -> adapter -> manifest -> adaptation run, on a CheXpert-shaped folder.

For anyone with a public dataset already downloaded: an adapter (``shiftkit.datasets.adapters``:
CheXpert, NIH ChestX-ray14, MIMIC-CXR-JPG, BDD100K, Cityscapes) reads the dataset's own files
and writes a manifest (image path, label, domain, split, sex, age, view, projection; never a
patient identifier). Here the domains are the projection: PA radiographs (standing, mostly
outpatients) as the labelled source, AP radiographs (portable, mostly inpatients) as the
unlabelled target -- a real acquisition shift inside one hospital's data. Then the same job as
`shiftkit run` adapts source-only -> DANN and reports.

    .venv/bin/python examples/real_data_adapter.py --root /data/CheXpert-v1.0-small --epochs 8 --size 224
    .venv/bin/python examples/real_data_adapter.py          # builds a small CheXpert-shaped fixture first

Without ``--root`` it writes a fixture tree in CheXpert's layout (``train.csv``/``valid.csv``
with ``Path, Sex, Age, Frontal/Lateral, AP/PA, No Finding, <observations>`` and JPEGs under
``train/patientNNNNN/study1/``), with synthetic radiographs standing in for the images: PA from
one synthetic site, AP from a portable-scanner one.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from shiftkit.adapt import RunConfig, run
from shiftkit.datasets.adapters import chexpert, chexpert_frame
from shiftkit.datasets.adapters.chexpert import OBSERVATIONS
from shiftkit.datasets.synth import radiograph


def chexpert_fixture(folder: Path, n_per_projection: int, size: int) -> Path:
    """A folder laid out like CheXpert-v1.0-small, images from the synthetic benchmark."""
    from PIL import Image

    root = folder / "CheXpert-v1.0-small"
    rng = np.random.default_rng(0)
    rows = []
    for projection, site in (("PA", "city"), ("AP", "icu")):
        for i in range(n_per_projection):
            s = radiograph.sample(site, i, split="train", size=size)
            patient = len(rows) + 1
            split = "valid" if i % 5 == 0 else "train"
            rel = f"CheXpert-v1.0-small/{split}/patient{patient:05d}/study1/view1_frontal.jpg"
            (folder / rel).parent.mkdir(parents=True, exist_ok=True)
            pixels = (np.clip(np.asarray(s["image"])[0], 0, 1) * 255).astype(np.uint8)
            Image.fromarray(pixels).save(folder / rel, quality=95)
            finding = int(s["label"])
            row = {"Path": rel, "Sex": rng.choice(["Female", "Male"]), "Age": int(rng.integers(20, 90)),
                   "Frontal/Lateral": "Frontal", "AP/PA": projection, "No Finding": "" if finding else 1.0}
            row |= {obs: "" for obs in OBSERVATIONS}
            if finding:
                row["Pleural Effusion"] = 1.0
            rows.append((split, row))
    for split in ("train", "valid"):
        pd.DataFrame([r for s, r in rows if s == split]).to_csv(root / f"{split}.csv", index=False)
    return root


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--root", type=Path, default=None, help="a CheXpert(-v1.0-small) folder with train.csv")
    ap.add_argument("--work", type=Path, default=Path("runs/example_real_data"))
    ap.add_argument("--n", type=int, default=200, help="fixture images per projection (without --root)")
    ap.add_argument("--size", type=int, default=64, help="model input side in pixels")
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--backbone", default="tiny")
    ap.add_argument("--n-permutations", type=int, default=200)
    a = ap.parse_args(argv)

    root = a.root or chexpert_fixture(a.work / "fixture", a.n, a.size)
    frame = chexpert_frame(root, frontal_only=True)
    print(f"adapter: {len(frame)} frontal images; projections {frame['projection'].value_counts().to_dict()}")
    # One manifest per question: here the domain is the projection. The adapter's manifest keeps
    # paths relative to its folder, so the re-labelled copy sits next to it.
    manifest = chexpert(root, frontal_only=True)
    table = pd.read_csv(manifest)
    table["domain"] = table["projection"].fillna("unknown")
    # CheXpert ships train and valid only (its test labels are private): without a split
    # column the run cuts each domain 60/20/20 into train/val/test by the seed.
    table = table.drop(columns=["split"])
    by_projection = manifest.with_name("manifest_chexpert_by_projection.csv")
    table.to_csv(by_projection, index=False)

    config = RunConfig(
        name="pa_to_ap", out_dir=a.work / "runs", task="classification", methods=["source_only", "dann"],
        data={"benchmark": None, "manifest": by_projection, "source_domain": "PA", "target_domain": "AP",
              "image_size": a.size},
        model={"backbone": a.backbone},
        train={"epochs": a.epochs, "batch_size": 32, "seed": 0, "device": "cpu"},
        evaluation={"n_permutations": a.n_permutations},
    )
    result = run(config)
    for name, m in result.metrics["methods"].items():
        print(f"{name:12s} PA (source) AUROC {m['source'].get('auroc', float('nan')):.3f}   "
              f"AP (target) AUROC {m['target'].get('auroc', float('nan')):.3f}")
    print(f"manifest: {by_projection}\nreport:   {result.report_path}")
    return result.metrics


if __name__ == "__main__":
    main()
