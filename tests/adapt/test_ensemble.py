"""An ensemble of candidates (averaged probabilities) saves as safetensors + JSON and loads with load()."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import shiftkit.adapt as sa
from shiftkit.adapt.deploy.model_format import ModelFileError
from shiftkit.adapt.models.backbones import build_classifier, build_segmenter


def _models(build, k: int, n: int = 3, name: str = "tiny") -> list[torch.nn.Module]:
    out = []
    for seed in range(n):
        torch.manual_seed(seed)
        out.append(build(name, 1, k).eval())
    return out


def test_classification_ensemble_predicts_the_mean_of_its_members(tmp_path: Path) -> None:
    members = _models(build_classifier, 3)
    sa.save_ensemble(members, tmp_path / "ens", names=["a", "b", "c"], class_names=["x", "y", "z"],
                     image_size=(16, 16), in_channels=1)
    x = np.random.default_rng(0).random((5, 1, 16, 16)).astype(np.float32)
    p = sa.load(tmp_path / "ens").predict(x)
    with torch.no_grad():
        want = np.mean([torch.softmax(m(torch.from_numpy(x)), 1).numpy() for m in members], axis=0)
    np.testing.assert_allclose(p.proba, want, atol=1e-5)
    assert p.class_names == ["x", "y", "z"] and set(p.shift) == {"unknown"}
    # each member also loads alone, as an ordinary model
    single = sa.load(tmp_path / "ens" / "member1").predict(x).proba
    with torch.no_grad():
        np.testing.assert_allclose(single, torch.softmax(members[1](torch.from_numpy(x)), 1).numpy(), atol=1e-5)


def test_segmentation_ensemble_averages_pixel_probabilities(tmp_path: Path) -> None:
    members = _models(build_segmenter, 4, n=2, name="tiny-unet")
    sa.save_ensemble(members, tmp_path / "seg", image_size=(16, 16), in_channels=1)
    x = np.random.default_rng(1).random((2, 1, 16, 16)).astype(np.float32)
    mask = sa.load(tmp_path / "seg").predict(x).mask
    with torch.no_grad():
        want = np.mean([torch.softmax(m(torch.from_numpy(x)), 1).numpy() for m in members], axis=0).argmax(1)
    assert (mask == want).mean() > 0.99  # argmax ties aside


def test_a_swapped_member_or_a_bad_sidecar_is_refused(tmp_path: Path) -> None:
    members = _models(build_classifier, 2, n=2)
    sa.save_ensemble(members, tmp_path / "ens", image_size=(16, 16), in_channels=1)
    sa.save_model(members[0], tmp_path / "other", image_size=(16, 16), in_channels=1,
                  class_names=["p", "q"])
    for f in ("model.json", "model.safetensors"):
        (tmp_path / "ens" / "member1" / f).write_bytes((tmp_path / "other" / f).read_bytes())
    with pytest.raises(ModelFileError, match="member1/model.json sha256"):
        sa.load(tmp_path / "ens")
    side = json.loads((tmp_path / "ens" / "ensemble.json").read_text())
    side["members"][0]["path"] = "../other"
    (tmp_path / "ens" / "ensemble.json").write_text(json.dumps(side))
    with pytest.raises(ModelFileError, match="members.0.path"):
        sa.load(tmp_path / "ens")


def test_fitted_ensemble_predicts_like_its_saved_and_loaded_copy(tmp_path: Path) -> None:
    from shiftkit.adapt.deploy.ensemble import fitted_ensemble
    from shiftkit.adapt.methods import SourceOnly

    rng = np.random.default_rng(0)
    x = rng.random((24, 1, 16, 16)).astype(np.float32)
    y = (x.mean(axis=(1, 2, 3)) > 0.5).astype(np.int64)
    members = [SourceOnly("tiny", epochs=1, batch_size=8, seed=s, progress=False, device="cpu")
               .fit(sa.ArrayDataset(x, labels=y)) for s in (0, 1)]
    ens = fitted_ensemble(members, "classification", 2)
    want = np.mean([m.predict_proba(x) for m in members], axis=0)
    np.testing.assert_allclose(ens.predict_proba(x), want, atol=1e-5)
    sa.save_ensemble(members, tmp_path / "auto", image_size=(16, 16), in_channels=1)
    np.testing.assert_allclose(sa.load(tmp_path / "auto").predict(x).proba, want, atol=1e-5)
