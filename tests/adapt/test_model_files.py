"""Saved models that cannot silently lie: hashed weights, a fully validated sidecar, no label
from a broken model, a three-valued shift flag, strict JSON, preprocessing that travels."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from shiftkit.adapt import load, save_model
from shiftkit.adapt.deploy.model_format import ModelFileError
from shiftkit.adapt.deploy.saving import upgrade_model
from shiftkit.adapt.models.backbones import build_classifier
from shiftkit.adapt.training.data import ArrayDataset
from shiftkit.datasets.errors import ConfigError, DataError


def _images(n: int = 30, seed: int = 0, c: int = 1, size: int = 32) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(0.4 + 0.1 * rng.standard_normal((n, c, size, size)), 0, 1).astype("f4")


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> Path:
    """A 2-class tiny model with shift statistics, saved once; tests copy it before editing."""
    torch.manual_seed(0)
    d = tmp_path_factory.mktemp("m") / "m"
    save_model(build_classifier("tiny", 1, 2).eval(), d, target=ArrayDataset(_images()),
               class_names=["no finding", "finding"])
    return d


def _copy(saved: Path, tmp_path: Path) -> Path:
    out = tmp_path / "copy"
    out.mkdir()
    for f in saved.iterdir():
        (out / f.name).write_bytes(f.read_bytes())
    return out


def _edit_sidecar(d: Path, fn) -> None:
    side = json.loads((d / "model.json").read_text())
    fn(side)
    (d / "model.json").write_text(json.dumps(side))


def test_clean_model_loads_and_predictions_are_strict_json(saved: Path) -> None:
    p = load(saved)
    out = p.predict(_images(4, seed=5))
    d = out.to_dict()
    json.dumps(d, allow_nan=False)
    assert {r["shift"] for r in d["predictions"]} <= {"inside", "outside"}
    assert all(r["status"] == "ok" and r["label"] in ("no finding", "finding") for r in d["predictions"])
    side = json.loads((saved / "model.json").read_text())
    assert side["format_version"] == 2 and len(side["weights_sha256"]) == 64


def test_tampered_weights_are_refused_naming_the_file(saved: Path, tmp_path: Path) -> None:
    d = _copy(saved, tmp_path)
    w = d / "model.safetensors"
    blob = bytearray(w.read_bytes())
    mid = len(blob) // 2
    blob[mid:mid + 16] = bytes(255 - b for b in blob[mid:mid + 16])  # 16 flipped bytes inside the weights
    w.write_bytes(bytes(blob))
    with pytest.raises(ModelFileError, match=r"(?s)model\.safetensors.*changed or damaged"):
        load(d)


def test_damaged_header_names_the_file(saved: Path, tmp_path: Path) -> None:
    d = _copy(saved, tmp_path)
    w = d / "model.safetensors"
    blob = bytearray(w.read_bytes())
    blob[10:30] = b"!" * 20  # inside the JSON header
    w.write_bytes(bytes(blob))
    with pytest.raises(ModelFileError) as exc:
        load(d)
    assert str(w) in str(exc.value) and "SafetensorError" not in type(exc.value).__name__


def test_nan_model_is_never_saved_and_never_loaded(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = build_classifier("tiny", 1, 2).eval()
    with torch.no_grad():
        model.head.weight.fill_(float("nan"))
    with pytest.raises(DataError, match="NaN/Inf"):
        save_model(model, tmp_path / "nan")
    # A NaN written into the file itself (hash recomputed, as a careless converter would) is refused too.
    from safetensors.torch import load_file, save

    torch.manual_seed(0)
    w, j = save_model(build_classifier("tiny", 1, 2).eval(), tmp_path / "ok")
    from safetensors import safe_open

    with safe_open(str(w), framework="pt") as fh:
        meta = fh.metadata()
    tensors = load_file(str(w))
    tensors["model.head.weight"][0, 0] = float("nan")
    blob = save(tensors, metadata=meta)
    w.write_bytes(blob)
    import hashlib

    _edit_sidecar(tmp_path / "ok", lambda s: s.update(weights_sha256=hashlib.sha256(blob).hexdigest()))
    with pytest.raises(ModelFileError, match="head.weight.*NaN"):
        load(tmp_path / "ok")


def test_non_finite_outputs_give_an_error_state_not_a_label(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = build_classifier("tiny", 1, 2).eval()
    with torch.no_grad():  # finite weights whose logits overflow float32 to +-inf -> NaN softmax
        model.head.weight.fill_(3e38)
        model.head.bias.fill_(3e38)
    save_model(model, tmp_path / "big")
    out = load(tmp_path / "big").predict(_images(3))
    assert list(out.status) == ["error"] * 3 and (out.label == -1).all() and not out.ok.any()
    d = out.to_dict()
    json.dumps(d, allow_nan=False)
    assert all(r["label"] is None and r["proba"] is None and "not finite" in r["error"] for r in d["predictions"])


def _set(path: list, value):
    def fn(side: dict) -> None:
        node = side
        for k in path[:-1]:
            node = node[k]
        node[path[-1]] = value
    return fn


@pytest.mark.parametrize("edit, key, says", [
    (_set(["shift", "threshold"], "high"), "shift.threshold", "valid number"),
    (_set(["shift", "threshold"], -1.0), "shift.threshold", "greater than 0"),
    (_set(["preprocessing", "image_size"], "64x64"), "preprocessing.image_size", "'64x64'"),
    (_set(["preprocessing", "in_channels"], 3), "preprocessing.in_channels", "the network takes 1"),
    (_set(["class_names"], ["a", "b", "c"]), "class_names", "3 names for a 2-class model"),
    (_set(["class_names"], ["a", "a"]), "class_names", "duplicate"),
    (_set(["class_names"], ["finding", "no finding"]), "class_names", "swapped"),
    (_set(["task"], "segmentation"), "task", "does not match"),
    (_set(["architecture", "kind"], "resnet"), "architecture.kind", "resnet"),
    (_set(["feature_dim"], "64"), "feature_dim", "valid integer"),
    (_set(["weights_sha256"], "abc"), "weights_sha256", "pattern"),
    (_set(["surprise"], 1), "surprise", "unknown key"),
    (lambda s: s.pop("class_names"), "class_names", "missing"),
])
def test_each_malformed_sidecar_field_is_named(saved: Path, tmp_path: Path, edit, key: str, says: str) -> None:
    d = _copy(saved, tmp_path)
    _edit_sidecar(d, edit)
    with pytest.raises(ModelFileError) as exc:
        load(d)
    msg = str(exc.value)
    assert "model.json" in msg and f"{key}:" in msg and says in msg, msg


def test_source_only_model_reports_unknown_shift_and_refuses_tiny_images(tmp_path: Path) -> None:
    from shiftkit.adapt.methods import SourceOnly

    x = _images(24, c=1, size=32)
    y = (x.mean(axis=(1, 2, 3)) > 0.4).astype(int)
    m = SourceOnly("tiny", num_classes=2, epochs=1, batch_size=8, progress=False).fit(ArrayDataset(x, y))
    w, j = save_model(m, tmp_path / "so", class_names=["no finding", "finding"])
    side = json.loads(j.read_text())
    assert side["shift"] is None and side["preprocessing"]["image_size"] == [32, 32]
    p = load(tmp_path / "so")
    out = p.predict(x[:3])
    assert list(out.shift) == ["unknown"] * 3 and not out.outside.any()
    d = out.to_dict()
    text = json.dumps(d, allow_nan=False)
    assert all(r["shift"] == "unknown" and r["outside_adapted_domain"] is None and r["shift_score"] is None
               for r in d["predictions"]), text
    with pytest.raises(DataError, match="smaller than the 16 px minimum"):
        p.predict(np.full((1, 1), 0.5, dtype="f4"))


@pytest.mark.parametrize("bad, match", [
    (np.zeros((0, 1, 32, 32), "f4"), "empty batch"),
    ([], "empty list"),
    (np.zeros((32, 32, 3), "f4"), "channel-last"),
    (np.full((1, 32, 32), np.nan, "f4"), "NaN"),
    (np.zeros((2, 32, 32), "f4"), "2 channels, the model expects 1"),
    (np.zeros((1, 1, 1, 32, 32), "f4"), "expected an image"),
    (np.array([["a"]]), "numeric"),
])
def test_bad_predict_inputs_raise_what_was_expected(saved: Path, bad, match: str) -> None:
    with pytest.raises(DataError, match=match):
        load(saved).predict(bad)


def test_format_1_is_refused_with_an_upgrade_path(saved: Path, tmp_path: Path) -> None:
    d = _copy(saved, tmp_path)
    from safetensors.torch import load_file, save_file

    # What the previous version wrote: no hash, no bound copy, no reader/min_size.
    save_file(load_file(str(d / "model.safetensors")), str(d / "model.safetensors"), metadata={"format": "shiftkit-model"})
    side = json.loads((d / "model.json").read_text())
    side.pop("weights_sha256")
    side["format_version"] = 1
    for k in ("reader", "pipeline", "min_size"):
        side["preprocessing"].pop(k)
    (d / "model.json").write_text(json.dumps(side))
    with pytest.raises(ModelFileError, match="upgrade_model"):
        load(d)
    upgrade_model(d)
    np.testing.assert_allclose(load(d).predict(_images(2)).proba, load(saved).predict(_images(2)).proba, atol=1e-6)


def test_save_refuses_duplicate_class_names(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="duplicates"):
        save_model(build_classifier("tiny", 1, 2), tmp_path / "d", class_names=["x", "x"])


def _png_items(folder: Path, n: int) -> list[dict]:
    from PIL import Image

    rng = np.random.default_rng(0)
    items = []
    for i in range(n):
        img = (rng.random((40, 56)) * 120 + 40).astype(np.uint8)  # not square: a transpose shows
        if i % 2:
            img[:20, :10] = 250
        Image.fromarray(img).save(folder / f"{i}.png")
        items.append({"image": str(folder / f"{i}.png"), "label": i % 2})
    return items


def test_monai_pipeline_travels_with_the_model(tmp_path: Path) -> None:
    """Trained through LoadImaged (PIL reader: transposed) + per-image ScaleIntensityd + Resized:
    after save/load the same files give the same probabilities and labels."""
    from monai.data import Dataset
    from monai.transforms import Compose, EnsureChannelFirstd, LoadImaged, RandFlipd, Resized, ScaleIntensityd

    from shiftkit.adapt.methods import SourceOnly

    items = _png_items(tmp_path, 24)
    pre = [LoadImaged(keys="image"), EnsureChannelFirstd(keys="image"), ScaleIntensityd(keys="image"),
           Resized(keys="image", spatial_size=(32, 32))]
    train = Dataset(items, transform=Compose([*pre, RandFlipd(keys="image", prob=0.5, spatial_axis=0)]))
    m = SourceOnly("tiny", num_classes=2, epochs=1, batch_size=8, progress=False).fit(train)
    before = m.predict_proba(Dataset(items, transform=Compose(pre)))
    _, j = save_model(m, tmp_path / "monai", class_names=["no finding", "finding"])
    side = json.loads(j.read_text())["preprocessing"]
    assert side["reader"] == "monai"
    assert [t["name"] for t in side["pipeline"]["transforms"]] == ["LoadImaged", "EnsureChannelFirstd",
                                                                   "ScaleIntensityd", "Resized"]
    assert "RandFlipd" in side["pipeline"]["dropped"][0]
    p = load(tmp_path / "monai")
    after = p.predict([it["image"] for it in items])
    assert np.abs(after.proba - before).max() < 1e-5
    assert np.array_equal(after.label, before.argmax(1))
    # An array has no file for the recorded reader to orient: refused rather than guessed.
    with pytest.raises(DataError, match="pass image file paths"):
        p.predict(np.zeros((1, 32, 32), "f4"))

    # Behind shiftkit's training-time wrappers (restyling, importance weights) the same is recorded.
    from shiftkit.adapt.augment.dataset import AugmentedDataset
    from shiftkit.adapt.reweight.importance_weighted import WeightedSource

    class Wrapped:
        model_ = m.model_
        fit_source_ = AugmentedDataset(WeightedSource(train, np.ones(len(items))), lambda item: item)
        fit_target_ = None

    _, j2 = save_model(Wrapped(), tmp_path / "wrapped", class_names=["no finding", "finding"])
    assert json.loads(j2.read_text())["preprocessing"] == side


def test_unrecordable_pipeline_is_refused_at_save(tmp_path: Path) -> None:
    from monai.data import Dataset
    from monai.transforms import Compose, EnsureChannelFirstd, Lambdad, LoadImaged

    from shiftkit.adapt.deploy.preprocessing import PreprocessingError

    items = _png_items(tmp_path, 2)
    ds = Dataset(items, transform=Compose([LoadImaged(keys="image"), EnsureChannelFirstd(keys="image"),
                                           Lambdad(keys="image", func=lambda x: x / 255.0)]))

    class Fitted:  # what save_model reads from a method
        model_ = build_classifier("tiny", 1, 2).eval()
        fit_source_ = ds
        fit_target_ = None

    with pytest.raises(PreprocessingError, match="Lambdad"):
        save_model(Fitted(), tmp_path / "x")


def test_tampered_pipeline_name_is_refused(saved: Path, tmp_path: Path) -> None:
    d = _copy(saved, tmp_path)
    _edit_sidecar(d, _set(["preprocessing", "pipeline"], {"kind": "monai", "dropped": [],
                                                           "transforms": [{"name": "Lambdad", "args": {}}]}))
    with pytest.raises(ModelFileError, match="preprocessing"):
        load(d)


def test_monai_transforms_on_a_manifest_dataset_travel_too(tmp_path: Path) -> None:
    """No loader in the pipeline: files are read by shiftkit's reader, then the recorded
    per-image ScaleIntensityd and Resized run as in training."""
    from monai.transforms import Compose, Resized, ScaleIntensityd

    from shiftkit.adapt.methods import SourceOnly
    from shiftkit.datasets import ManifestDataset, load_manifest

    items = _png_items(tmp_path, 12)
    pd = pytest.importorskip("pandas")
    pd.DataFrame({"image": [Path(it["image"]).name for it in items], "label": [it["label"] for it in items],
                  "domain": "a"}).to_csv(tmp_path / "m.csv", index=False)
    frame = load_manifest(tmp_path / "m.csv")
    pre = Compose([ScaleIntensityd(keys="image"), Resized(keys="image", spatial_size=(24, 24))])
    m = SourceOnly("tiny", num_classes=2, epochs=1, batch_size=4, progress=False).fit(ManifestDataset(frame, pre))
    _, j = save_model(m, tmp_path / "mf")
    side = json.loads(j.read_text())["preprocessing"]
    assert side["reader"] == "shiftkit" and side["image_size"] == [24, 24]
    assert [t["name"] for t in side["pipeline"]["transforms"]] == ["ScaleIntensityd", "Resized"]
    after = load(tmp_path / "mf").predict(frame["image"].tolist())
    assert np.abs(after.proba - m.predict_proba(ManifestDataset(frame, pre))).max() < 1e-5


def test_known_transforms_rebuild_with_their_non_default_arguments() -> None:
    from monai import transforms as T

    from shiftkit.adapt.deploy.preprocessing import build_pipeline, describe_pipeline

    x = torch.rand(1, 20, 28, generator=torch.Generator().manual_seed(0))
    pipeline = [T.ScaleIntensityRanged(keys="image", a_min=0.2, a_max=0.8, b_min=-1, b_max=1, clip=True),
                T.NormalizeIntensityd(keys="image", subtrahend=0.3, divisor=0.2),
                T.SpatialPadd(keys="image", spatial_size=(32, 32), mode="reflect"),
                T.CenterSpatialCropd(keys="image", roi_size=(24, 30)),
                T.Rotate90d(keys="image", k=3), T.Flipd(keys="image", spatial_axis=1),
                T.Resized(keys="image", spatial_size=(16, 12), mode="bilinear"),
                T.RepeatChanneld(keys="image", repeats=3)]
    desc = json.loads(json.dumps(describe_pipeline(pipeline, {"image": x.clone()})))  # through JSON
    a, b = {"image": x.clone()}, {"image": x.clone()}
    for t in pipeline:
        a = t(a)
    for t in build_pipeline(desc):
        b = t(b)
    assert tuple(b["image"].shape) == (3, 16, 12)
    np.testing.assert_allclose(np.asarray(b["image"]), np.asarray(a["image"]), atol=1e-6)
    # Default arguments would give another image: the recorded ones matter.
    assert not np.allclose(np.asarray(T.Resized(keys="image", spatial_size=(16, 12))({"image": x})["image"]),
                           np.asarray(T.Resized(keys="image", spatial_size=(16, 12), mode="bilinear")({"image": x})["image"]))
