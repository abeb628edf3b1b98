"""save_model / load: safetensors + JSON sidecar, never unpickling, shift score flags odd images."""

from __future__ import annotations

import json
import os
import pickle

import numpy as np
import pytest
import torch

from shiftkit.adapt import load, save_model
from shiftkit.adapt.deploy.loading import load_weights
from shiftkit.adapt.deploy.model_format import UnsafeModelFileError
from shiftkit.adapt.models.backbones import build_classifier, build_segmenter
from shiftkit.adapt.training.data import ArrayDataset
from shiftkit.datasets.errors import ConfigError


class _Evil:
    """Unpickling this creates a file: the test checks that file never appears."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _target(n: int = 40, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (0.4 + 0.1 * rng.standard_normal((n, 1, 32, 32))).astype("f4")


def test_roundtrip_predicts_the_same_and_sidecar_is_complete(tmp_path) -> None:
    torch.manual_seed(0)
    model = build_classifier("tiny", 1, 2).eval()
    xt = _target()
    w, j = save_model(model, tmp_path / "m", target=ArrayDataset(xt), class_names=["normal", "finding"],
                      training_summary={"source": {"site": "city", "n_images": 100}})
    assert w.suffix == ".safetensors" and j.suffix == ".json"
    side = json.loads(j.read_text())
    assert side["architecture"]["name"] == "tiny"
    assert side["preprocessing"]["image_size"] == [32, 32]
    assert side["class_names"] == ["normal", "finding"]
    assert {"torch", "monai", "shiftkit"} <= set(side["versions"])
    pred = load(tmp_path / "m").predict(xt[:5])
    with torch.no_grad():
        expected = torch.softmax(model(torch.from_numpy(xt[:5])), 1).numpy()
    np.testing.assert_allclose(pred.proba, expected, rtol=1e-5, atol=1e-6)
    assert pred.to_dict()["predictions"][0]["label"] in ("normal", "finding")


def test_shift_score_flags_images_unlike_the_adapted_target(tmp_path) -> None:
    torch.manual_seed(0)
    model = build_classifier("tiny", 1, 2).eval()
    save_model(model, tmp_path / "m", target=ArrayDataset(_target(60)))
    p = load(tmp_path / "m")
    same = p.predict(_target(20, seed=1))
    rng = np.random.default_rng(2)
    odd = p.predict(rng.random((20, 1, 32, 32)).astype("f4") ** 4)  # dark, high-contrast noise
    assert np.median(odd.shift_score) > 2 * np.median(same.shift_score)
    assert odd.outside.mean() > 0.9 and same.outside.mean() < 0.2


def test_predict_from_png_and_dicom_files(tmp_path) -> None:
    from PIL import Image

    torch.manual_seed(0)
    model = build_classifier("tiny", 1, 2).eval()
    save_model(model, tmp_path / "m", target=ArrayDataset(_target()))
    p = load(tmp_path / "m" / "model.safetensors")
    img = (np.random.default_rng(0).random((48, 40)) * 255).astype(np.uint8)
    Image.fromarray(img).save(tmp_path / "x.png")
    from_file = p.predict(str(tmp_path / "x.png"))
    from_array = p.predict(img)  # uint8 scaled to [0, 1] the same way
    np.testing.assert_allclose(from_file.proba, from_array.proba, atol=1e-5)

    pydicom = pytest.importorskip("pydicom")
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    ds = FileDataset(str(tmp_path / "x.dcm"), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.Rows, ds.Columns = img.shape
    ds.SamplesPerPixel, ds.BitsAllocated, ds.BitsStored, ds.HighBit = 1, 8, 8, 7
    ds.PixelRepresentation, ds.PhotometricInterpretation = 0, "MONOCHROME2"
    ds.PixelData = img.tobytes()
    ds.save_as(str(tmp_path / "x.dcm"), enforce_file_format=True)
    assert pydicom.dcmread(str(tmp_path / "x.dcm")).Rows == 48
    from_dicom = p.predict(str(tmp_path / "x.dcm"))
    assert from_dicom.proba.shape == (1, 2) and np.isfinite(from_dicom.shift_score).all()


def test_segmenter_roundtrip_returns_masks_at_input_size(tmp_path) -> None:
    torch.manual_seed(0)
    seg = build_segmenter("tiny-unet", 3, 4).eval()
    rng = np.random.default_rng(0)
    save_model(seg, tmp_path / "s", target=ArrayDataset(rng.random((12, 3, 32, 32)).astype("f4")))
    out = load(tmp_path / "s").predict(rng.random((3, 48, 64)).astype("f4"))
    assert out.mask.shape == (1, 48, 64) and out.mask.max() < 4


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_malicious_pickle_is_refused_and_never_runs(tmp_path, suffix: str) -> None:
    marker = tmp_path / "pwned"
    bad = tmp_path / f"model{suffix}"
    bad.write_bytes(pickle.dumps(_Evil(str(marker))))
    (tmp_path / "model.json").write_text(json.dumps({"format": "shiftkit-model", "format_version": 1}))
    with pytest.raises(UnsafeModelFileError, match="refused"):
        load(bad)
    # load_weights accepts state dicts via torch.load(weights_only=True), which must refuse code.
    with pytest.raises(UnsafeModelFileError, match="refused"):
        load_weights(build_classifier("tiny", 1, 2), bad)
    assert not marker.exists() and not os.path.exists("pwned")


def test_load_weights_reads_safetensors_and_state_dicts(tmp_path) -> None:
    from safetensors.torch import save_file

    torch.manual_seed(0)
    a = build_classifier("tiny", 1, 2)
    save_file(a.state_dict(), str(tmp_path / "a.safetensors"))
    torch.save({"state_dict": a.state_dict()}, tmp_path / "a.pt")
    for f in ("a.safetensors", "a.pt"):
        torch.manual_seed(1)
        b = load_weights(build_classifier("tiny", 1, 2), tmp_path / f)
        assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))


def test_training_summary_refuses_identifiers(tmp_path) -> None:
    with pytest.raises(ConfigError, match="patient identifier"):
        save_model(build_classifier("tiny", 1, 2), tmp_path / "m", training_summary={"patient_ids": ["A1"]})
