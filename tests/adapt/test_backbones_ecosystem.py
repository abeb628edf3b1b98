"""timm / torchvision / segmentation-models-pytorch backbones: library-equal outputs from local
weight files, every kind of method on them, save/load round trips, and no network access."""

from __future__ import annotations

import numpy as np
import pytest
import torch

timm = pytest.importorskip("timm")
smp = pytest.importorskip("segmentation_models_pytorch")
torchvision = pytest.importorskip("torchvision")

from safetensors.torch import save_file  # noqa: E402

from shiftkit.adapt import load, save_model  # noqa: E402
from shiftkit.adapt.models.backbones import build_classifier, build_segmenter  # noqa: E402
from shiftkit.adapt.models.ecosystem import WeightsMismatchError  # noqa: E402
from shiftkit.adapt.training.data import ArrayDataset  # noqa: E402

VIT = dict(img_size=32, patch_size=8, depth=2)  # a 2-block ViT-Tiny on 32 px images
SMP = dict(encoder_depth=3, decoder_channels=[32, 16, 8])


def _save(module: torch.nn.Module, path) -> str:
    save_file({k: v.detach().contiguous() for k, v in module.state_dict().items()}, str(path))
    return str(path)


def _norm(model, x: torch.Tensor) -> torch.Tensor:
    """What the library model receives: the images normalised with the recorded mean/std."""
    n = model.arch["normalize"]
    return (x - torch.tensor(n["mean"]).view(1, -1, 1, 1)) / torch.tensor(n["std"]).view(1, -1, 1, 1)


def _pre(lib: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    return lib.forward_head(lib.forward_features(x), pre_logits=True)


@pytest.mark.parametrize("name,kw", [("resnet10t", {}), ("vit_tiny_patch16_224", VIT)])
def test_timm_weights_give_the_library_outputs(tmp_path, name, kw) -> None:
    torch.manual_seed(0)
    lib = timm.create_model(name, num_classes=5, **kw).eval()
    path = _save(lib, tmp_path / "w.safetensors")
    x = torch.rand(2, 3, 32, 32)
    ours = build_classifier(f"timm:{name}", 3, 5, weights=path, **kw).eval()
    with torch.no_grad():  # same classes: the file's head is kept, logits equal
        torch.testing.assert_close(ours(x), lib(_norm(ours, x)), atol=1e-5, rtol=0)
        torch.testing.assert_close(ours.encoder(x), _pre(lib, _norm(ours, x)), atol=1e-5, rtol=0)
    # one channel: timm's own in_chans conversion of the same file is the reference
    lib1 = timm.create_model(name, pretrained=True, pretrained_cfg_overlay=dict(file=path), in_chans=1,
                             num_classes=2, **kw).eval()
    ours1 = build_classifier(f"timm:{name}", 1, 2, weights=path, **kw).eval()
    g = torch.rand(2, 1, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(ours1.encoder(g), _pre(lib1, _norm(ours1, g)), atol=1e-5, rtol=0)
    assert ours1.arch["normalize"]["mean"] == [pytest.approx(np.mean(lib.pretrained_cfg["mean"]))]
    assert ours1(g).shape == (2, 2)  # a new head for the task's two classes


def test_torchvision_weights_give_the_library_outputs(tmp_path) -> None:
    torch.manual_seed(0)
    lib = torchvision.models.resnet18(num_classes=7).eval()
    path = tmp_path / "tv.pt"
    torch.save(lib.state_dict(), path)  # a weights-only torch file
    ours = build_classifier("tv:resnet18", 3, 7, weights=path).eval()
    assert ours.arch["normalize"]["mean"] == pytest.approx([0.485, 0.456, 0.406])  # the weights' transforms
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), lib(_norm(ours, x)), atol=1e-5, rtol=0)
    # one channel: the RGB kernels summed (timm's adapt_input_conv) = the grey image as R = G = B
    ours1 = build_classifier("tv:resnet18", 1, 3, weights=path).eval()
    g = torch.rand(2, 1, 32, 32)
    m1 = ours1.arch["normalize"]
    lib.fc = torch.nn.Identity()
    with torch.no_grad():
        ref = lib(((g - m1["mean"][0]) / m1["std"][0]).repeat(1, 3, 1, 1))
        torch.testing.assert_close(ours1.encoder(g), ref, atol=1e-5, rtol=0)


def test_smp_weights_give_the_library_outputs(tmp_path) -> None:
    torch.manual_seed(0)
    lib = smp.create_model("Unet", encoder_name="resnet18", encoder_weights=None, classes=4, **SMP).eval()
    full = _save(lib, tmp_path / "unet.safetensors")
    x = torch.rand(2, 3, 32, 32)
    ours = build_segmenter("smp:Unet-resnet18", 3, 4, weights=full, **SMP).eval()
    with torch.no_grad():
        torch.testing.assert_close(ours(x), lib(_norm(ours, x)), atol=1e-5, rtol=0)
        assert ours.features(x).shape == (2, lib.encoder.out_channels[-1])
    # encoder weights only, one channel: smp's own set_in_channels on the same encoder is the reference
    enc = _save(lib.encoder, tmp_path / "enc.safetensors")
    ours1 = build_segmenter("smp:Unet-resnet18", 1, 3, weights=enc, **SMP).eval()
    lib.encoder.set_in_channels(1, pretrained=True)
    g = torch.rand(2, 1, 32, 32)
    with torch.no_grad():
        want = lib.encoder(_norm(ours1, g))[-1].mean(dim=(2, 3))
        torch.testing.assert_close(ours1.features(g), want, atol=1e-5, rtol=0)


def test_mismatched_and_missing_files_name_the_path_and_keys(tmp_path) -> None:
    torch.manual_seed(0)
    other = _save(timm.create_model("resnet18", num_classes=2), tmp_path / "r18.safetensors")
    with pytest.raises(WeightsMismatchError) as err:
        build_classifier("timm:resnet10t", 3, 2, weights=other)
    assert "r18.safetensors" in str(err.value) and "conv1" in str(err.value)
    with pytest.raises(Exception, match="nothere.safetensors"):
        build_classifier("timm:resnet10t", 3, 2, weights=tmp_path / "nothere.safetensors")


def _images(n: int, c: int, shift: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(rng.random((n, c, 32, 32)) * 0.6 + shift, 0, 1).astype("f4")


def _roundtrip(method, tmp_path, x: np.ndarray) -> None:
    want = method.predict_proba(x)
    save_model(method, tmp_path / type(method).__name__)
    pred = load(tmp_path / type(method).__name__)
    assert pred.sidecar["preprocessing"]["normalize"]["applied_by"] == "network"
    out = pred.predict(x)
    if want.ndim == 4:  # segmentation: the same masks
        np.testing.assert_array_equal(out.mask, want.argmax(1))
    else:
        np.testing.assert_allclose(out.proba, want, atol=1e-5)


@pytest.mark.parametrize("method", ["dann", "cdan", "self_training", "tent"])
def test_methods_fit_timm_classifiers_and_round_trip(tmp_path, method) -> None:
    from shiftkit.adapt.methods import get_method

    xs, xt = _images(16, 3, 0.0, 0), _images(16, 3, 0.3, 1)
    ys = np.arange(16) % 2
    train = dict(num_classes=2, epochs=1, batch_size=8, progress=False, seed=0)
    torch.manual_seed(0)
    # TENT adapts norm layers: the ViT's LayerNorms (no BatchNorm there); the CNN for the rest
    model = (build_classifier("timm:vit_tiny_patch16_224", 3, 2, **VIT) if method == "tent"
             else build_classifier("timm:resnet10t", 3, 2))
    m = get_method(method)(model, **train)
    m.fit(None if method == "tent" else ArrayDataset(xs, ys), ArrayDataset(xt))
    assert m.predict_proba(xt).shape == (16, 2)
    _roundtrip(m, tmp_path, xt)


@pytest.mark.parametrize("method", ["SegDANN", "self_training"])
def test_methods_fit_smp_segmenters_and_round_trip(tmp_path, method) -> None:
    from shiftkit.adapt.methods import SegDANN, get_method

    xs, xt = _images(12, 3, 0.0, 0), _images(12, 3, 0.3, 1)
    masks = np.random.default_rng(0).integers(0, 3, (12, 32, 32))
    torch.manual_seed(0)
    model = build_segmenter("smp:Unet-resnet18", 3, 3, **SMP)
    cls = SegDANN if method == "SegDANN" else get_method(method)
    m = cls(model, num_classes=3, task="segmentation", epochs=1, batch_size=4, progress=False, seed=0)
    m.fit(ArrayDataset(xs, masks=masks), ArrayDataset(xt))
    assert m.predict(xt[:2]).shape == (2, 32, 32)
    _roundtrip(m, tmp_path, xt)


def test_missing_weights_file_fails_before_anything_runs(tmp_path) -> None:
    from shiftkit.adapt.job.config import parse_config
    from shiftkit.adapt.job.pipeline import run
    from shiftkit.datasets.errors import ConfigError

    # (the whole path from a config to a saved model without network access runs in test_tracking.py)
    raw = {"name": "missing", "out_dir": str(tmp_path / "runs"), "methods": ["source_only"],
           "data": {"benchmark": "radiograph", "n_per_domain": 40, "image_size": 32},
           "model": {"backbone": "timm:resnet10t", "weights": str(tmp_path / "gone.safetensors")}}
    with pytest.raises(ConfigError, match="gone.safetensors"):
        run(parse_config(raw))
    assert not (tmp_path / "runs" / "missing").exists()  # checked before any export or training


def test_rank_scores_timm_and_torchvision_candidates_from_files(tmp_path) -> None:
    from shiftkit.adapt.harness.rank import load_candidate, rank_candidates

    torch.manual_seed(0)
    a = _save(timm.create_model("resnet10t", num_classes=4), tmp_path / "a.safetensors")
    b = tmp_path / "b.pt"
    torch.save(torchvision.models.mobilenet_v3_small(num_classes=4).state_dict(), b)  # small at 224 px
    rng = np.random.default_rng(0)
    target = ArrayDataset(rng.random((24, 1, 32, 32)).astype("f4"), np.arange(24) % 2)
    cand = load_candidate(f"timm:resnet10t={a}", in_channels=1)
    assert cand.model.head.out_features == 4  # the file's own classifier: LEEP reads its probabilities
    assert cand.image_size == tuple(cand.model.arch["normalize"]["input_size"][1:])
    res = rank_candidates([cand, f"tv:mobilenet_v3_small={b}"], target)
    assert set(res.table["candidate"]) == {"timm:resnet10t:a", "tv:mobilenet_v3_small:b"}
    assert np.isfinite(res.table[res.default_score].to_numpy(float)).all()
