"""Adapt a timm model from a local weights file (radiographs: city hospital -> rural hospital).

Stands in for "the ResNet weights our team already has on disk": it writes a randomly
initialised timm ``resnet10t`` (ImageNet layout: 3-channel stem, 1000-class head) to a
safetensors file, then builds ``timm:resnet10t`` from that file for one-channel radiographs
(timm's own first-convolution adaptation, a new two-class head, the weights' mean/std), trains
it on the city hospital, adapts it to the rural one with DANN, saves the adapted model and
loads it back by name (no pickled code, nothing downloaded). Replace the file with real
pretrained weights (``--weights PATH``) for a real run.

    .venv/bin/python examples/timm_local_weights.py --n 300 --size 64 --epochs 3 --out runs/example_timm
"""

from __future__ import annotations

import argparse
import copy
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

from shiftkit.adapt import DANN, SourceOnly, build_classifier, load, save_model
from shiftkit.adapt.training.data import CachedDataset
from shiftkit.datasets.synth import radiograph


def write_stand_in_weights(path: Path, name: str = "resnet10t") -> Path:
    """A random-init timm model's state dict as safetensors (what a real pretrained file holds)."""
    import timm
    import torch
    from safetensors.torch import save_file

    torch.manual_seed(0)
    net = timm.create_model(name, pretrained=False)  # never downloads
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(path))
    return path


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser()
    ap.add_argument("--weights", default=None, help="a timm weights file (default: write a random-init stand-in)")
    ap.add_argument("--model", default="resnet10t")
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--out", default="runs/example_timm")
    args = ap.parse_args(argv)
    out = Path(args.out)
    weights = Path(args.weights) if args.weights else write_stand_in_weights(out / "weights.safetensors", args.model)

    src = CachedDataset(radiograph.SynthDataset("city", args.n, split="train", size=args.size))
    tgt = CachedDataset(radiograph.SynthDataset("rural", args.n, split="train", size=args.size))
    test = CachedDataset(radiograph.SynthDataset("rural", args.n // 2, split="test", size=args.size))
    y = [int(item["label"]) for item in test.items]

    model = build_classifier(f"timm:{args.model}", in_channels=1, num_classes=2, weights=weights)
    print(f"built timm:{args.model} from {weights}: normalisation {model.arch['normalize']}")
    common = dict(num_classes=2, epochs=args.epochs, lr=1e-3, batch_size=32, seed=0, progress=False)
    base = SourceOnly(model, **common).fit(src)
    # DANN adapts a copy of the source model at a quarter of its learning rate (the run pipeline's recipe)
    dann = DANN(copy.deepcopy(base.model_), **{**common, "lr": 2.5e-4}).fit(src, tgt)
    auroc = {name: float(roc_auc_score(y, m.predict_proba(test)[:, 1])) for name, m in
             (("source_only", base), ("dann", dann))}
    print("rural AUROC: " + ", ".join(f"{k} {v:.3f}" for k, v in auroc.items()))

    save_model(dann, out / "model", class_names=["normal", "finding"])
    pred = load(out / "model")  # rebuilt by name from the sidecar, normalisation included
    x = np.stack([np.asarray(test[i]["image"]) for i in range(4)])
    same = bool(np.allclose(pred.predict(x).proba, dann.predict_proba(x), atol=1e-5))
    print(f"saved to {out / 'model'}; reloaded predictions equal: {same}")
    return {"auroc": auroc, "reloaded_equal": same, "sidecar": pred.sidecar}


if __name__ == "__main__":
    main()
