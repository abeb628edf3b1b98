"""A clinical prototype: load a saved model, predict on a DICOM file, read the shift flag, and
refuse a model file that was tampered with.

The model is what `save_model` wrote (safetensors weights + JSON sidecar; never a pickle). For
each image the predictor returns class probabilities and a shift score: the Mahalanobis
distance of the image's features to the data the model was adapted to; ``outside`` flags
images beyond the threshold recorded at save time, whose prediction deserves caution.

    .venv/bin/python examples/clinical_prototype.py --model runs/example_dann      # a saved model
    .venv/bin/python examples/clinical_prototype.py                                 # trains a tiny one

Without ``--model`` it trains a small source-only classifier on the embedded radiograph
benchmark and saves it first. The DICOM is written from a synthetic radiograph with pydicom
(no patient data). Then it shows two refusals: a model whose weights were edited after saving
(its sha256 no longer matches the sidecar) and a pickle posing as weights (never unpickled).
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import numpy as np

from shiftkit.adapt import SourceOnly, load, save_model
from shiftkit.datasets.errors import ShiftkitError
from shiftkit.datasets.synth import radiograph


def write_dicom(path: Path, image: np.ndarray) -> Path:
    """An anonymous 8-bit MONOCHROME2 DICOM of ``image`` ``(H, W)`` in [0, 1]."""
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    pixels = (np.clip(image, 0, 1) * 255).astype(np.uint8)
    meta = FileMetaDataset()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"  # digital X-ray
    meta.MediaStorageSOPInstanceUID = generate_uid()
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.Modality = "DX"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.BitsAllocated, ds.BitsStored, ds.HighBit = 1, 8, 8, 7
    ds.PixelRepresentation, ds.PhotometricInterpretation = 0, "MONOCHROME2"
    ds.PixelData = pixels.tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(str(path), enforce_file_format=True)
    return path


def train_small_model(out: Path, size: int, n: int, epochs: int) -> Path:
    src = radiograph.SynthDataset("city", n, split="train", size=size)
    tgt = radiograph.SynthDataset("rural", n // 2, split="train", size=size)
    model = SourceOnly("tiny", num_classes=2, epochs=epochs, batch_size=32, seed=0, progress=False).fit(src)
    # target=: the shift score's reference is the images the model will be used on.
    save_model(model, out, class_names=["no finding", "finding"], target=tgt)
    return out


def tamper(model_dir: Path, into: Path) -> Path:
    """A copy of the model whose weights file had one weight changed (shapes intact)."""
    from safetensors.torch import load_file, save_file

    shutil.copytree(model_dir, into, dirs_exist_ok=True)
    weights = next(into.glob("*.safetensors"))
    tensors = load_file(str(weights))
    name = next(k for k, v in tensors.items() if v.is_floating_point() and v.numel() > 1)
    tensors[name] = tensors[name].clone()
    tensors[name].view(-1)[0] += 0.5
    save_file(tensors, str(weights), metadata=_metadata(weights))
    return into


def _metadata(path: Path) -> dict[str, str] | None:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return f.metadata()


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", type=Path, default=None, help="a folder written by save_model")
    ap.add_argument("--work", type=Path, default=Path("runs/example_clinical"))
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--epochs", type=int, default=3)
    a = ap.parse_args(argv)

    model_dir = a.model or train_small_model(a.work / "model", a.size, a.n, a.epochs)
    predictor = load(model_dir)

    results = {}
    for site in ("rural", "icu"):  # the site it was adapted to, and one it never saw
        image = np.asarray(radiograph.sample(site, 0, split="test", size=a.size)["image"])[0]
        dcm = write_dicom(a.work / f"{site}.dcm", image)
        out = predictor.predict(str(dcm)).to_dict()["predictions"][0]
        results[site] = out
        flag = "OUTSIDE the adapted domain: review" if out["outside_adapted_domain"] else "inside the adapted domain"
        print(f"{dcm.name}: {out['label']} (P(finding) = {out['proba']['finding']:.2f}), "
              f"shift score {out['shift_score']:.1f} -> {flag}")
    noise = np.random.default_rng(0).random((a.size, a.size)) ** 4  # not a radiograph at all
    odd = predictor.predict(str(write_dicom(a.work / "not_a_radiograph.dcm", noise))).to_dict()["predictions"][0]
    results["noise"] = odd
    print(f"not_a_radiograph.dcm: shift score {odd['shift_score']:.1f} -> "
          f"{'OUTSIDE: review' if odd['outside_adapted_domain'] else 'inside'}")

    refused = {}
    bad = tamper(model_dir, a.work / "tampered")
    try:
        load(bad)
        refused["edited_weights"] = None
        print("edited weights: LOADED (this shiftkit does not verify a weights hash)")
    except ShiftkitError as exc:
        refused["edited_weights"] = type(exc).__name__
        print(f"edited weights: refused ({type(exc).__name__}: {str(exc)[:120]})")
    pickled = a.work / "pickled"
    shutil.copytree(model_dir, pickled, dirs_exist_ok=True)
    next(pickled.glob("*.safetensors")).write_bytes(b"\x80\x04\x95\x00\x00\x00\x00\x00\x00\x00\x00.")
    try:
        load(pickled)
        refused["pickle"] = None
    except ShiftkitError as exc:
        refused["pickle"] = type(exc).__name__
        print(f"pickle posing as weights: refused ({type(exc).__name__})")
    return {"predictions": results, "refused": refused}


if __name__ == "__main__":
    main()
