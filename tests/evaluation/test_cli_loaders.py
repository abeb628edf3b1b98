"""`shiftkit audit` / `shiftkit gap` and the feature loaders (never unpickling)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import typer
from typer.testing import CliRunner

from shiftkit.adapt import cli_evaluate
from shiftkit.datasets.errors import DataError
from shiftkit.evaluation import loaders


@pytest.fixture(scope="module")
def app() -> typer.Typer:
    a = typer.Typer()
    cli_evaluate.register(a)
    return a


def _predictions(path: Path, n=600, seed=0) -> Path:
    rng = np.random.default_rng(seed)
    df = pd.DataFrame({"patient_id": [f"PID{i:06d}" for i in range(n)],
                       "path": [f"/secure/p{i}/cxr.dcm" for i in range(n)],
                       "sex": rng.choice(["F", "M"], n), "age": rng.integers(0, 100, n), "site": rng.choice(["A", "B"], n)})
    df["label"] = (rng.random(n) < 0.4).astype(int)
    df["score"] = np.clip(0.45 * df["label"] + rng.random(n) * 0.6, 0, 1)
    df["score_adapted"] = np.clip(df["score"] - np.where(df["sex"] == "F", 0.25, 0.0), 0, 1)
    df.to_csv(path, index=False)
    return path


def test_audit_command_writes_report_without_identifiers(app, tmp_path: Path):
    pred = _predictions(tmp_path / "preds.csv", n=400)
    out = tmp_path / "audit"
    res = CliRunner().invoke(app, ["audit", str(pred), "--sensitive", "sex,age_band",
                                   "--out", str(out), "--n-boot", "30", "--compare-col", "score_adapted"])
    assert res.exit_code == 0, res.output
    assert "under-diagnosis" in res.output and "disparities that grew" in res.output
    data = json.loads((out / "metrics.json").read_text())
    assert data["bias"]["models"] == ["score", "score_adapted"]
    assert set(data["bias"]["audits"]["score"]["attributes"]) == {"sex", "age_band", "sex & age_band"}
    html = (out / "report.html").read_text()
    for text in (html, (out / "metrics.json").read_text(), res.output):
        assert "PID0" not in text and "/secure/" not in text


def test_audit_command_with_control(app, tmp_path: Path):
    pred = _predictions(tmp_path / "preds.csv", n=300)
    res = CliRunner().invoke(app, ["audit", str(pred), "--sensitive", "sex", "--control", "site",
                                   "--out", str(tmp_path / "a"), "--n-boot", "20"])
    assert res.exit_code == 0, res.output
    assert "sex within A" in res.output and "sex within B" in res.output


def test_audit_command_bad_column_exits_2(app, tmp_path: Path):
    pred = _predictions(tmp_path / "p.csv", n=50)
    res = CliRunner().invoke(app, ["audit", str(pred), "--sensitive", "ethnicity", "--out", str(tmp_path / "o")])
    assert res.exit_code == 2 and "ethnicity" in res.output


def test_gap_command_on_feature_files(app, tmp_path: Path):
    rng = np.random.default_rng(0)
    np.save(tmp_path / "s.npy", rng.normal(size=(150, 8)).astype(np.float32))
    from safetensors.numpy import save_file

    save_file({"features": (rng.normal(size=(120, 8)) + 0.7).astype(np.float32)}, str(tmp_path / "t.safetensors"))
    res = CliRunner().invoke(app, ["gap", "--source", str(tmp_path / "s.npy"), "--target",
                                   str(tmp_path / "t.safetensors"), "--out", str(tmp_path / "g"),
                                   "--n-permutations", "99"])
    assert res.exit_code == 0, res.output
    g = json.loads((tmp_path / "g" / "metrics.json").read_text())["gap"]["source_vs_target"]
    assert g["mmd_p_value"] == pytest.approx(0.01) and g["n_source"] == 150 and g["n_target"] == 120
    assert "Features coloured by domain" in (tmp_path / "g" / "report.html").read_text()


def test_gap_command_on_manifests_uses_image_statistics(tmp_path: Path):
    from shiftkit.datasets.synth import radiograph

    manifest = radiograph.export(tmp_path / "data", ("city", "rural"), 24, size=32, progress=False)
    metrics, html = cli_evaluate.run_gap(manifest, manifest, out=tmp_path / "g", source_domain="city",
                                         target_domain="rural", n_permutations=99)
    g = metrics["gap"]["source_vs_target"]
    assert g["n_source"] == 24 and g["dim"] == len(loaders.IMAGE_STAT_NAMES)
    assert g["mmd_p_value"] <= 0.05  # the synthetic sites differ in acquisition
    assert any("image statistics" in w for w in metrics["warnings"])
    with pytest.raises(DataError, match="no rows with domain"):
        cli_evaluate.run_gap(manifest, manifest, out=tmp_path / "g2", source_domain="mars")


def test_load_features_formats_and_refusals(tmp_path: Path):
    a = np.arange(12, dtype=np.float32).reshape(4, 3)
    np.save(tmp_path / "a.npy", a)
    np.savez(tmp_path / "a.npz", features=a, other=a)
    pd.DataFrame(a, columns=list("xyz")).assign(domain="s").to_csv(tmp_path / "a.csv", index=False)
    for name in ("a.npy", "a.npz", "a.csv"):
        np.testing.assert_array_equal(loaders.load_features(tmp_path / name), a)
    np.save(tmp_path / "obj.npy", np.array([{"x": 1}, None], dtype=object), allow_pickle=True)
    with pytest.raises(DataError, match="obj.npy"):
        loaders.load_features(tmp_path / "obj.npy")  # a pickle inside is never loaded
    (tmp_path / "m.pkl").write_bytes(b"\x80\x04K\x01.")
    with pytest.raises(DataError, match="never read"):
        loaders.load_features(tmp_path / "m.pkl")
    with pytest.raises(DataError, match="not found"):
        loaders.load_features(tmp_path / "missing.npy")
    np.save(tmp_path / "nan.npy", np.array([[1.0], [np.nan]]))
    with pytest.raises(DataError, match="row 1"):
        loaders.load_features(tmp_path / "nan.npy")


def test_image_statistics_see_exposure_and_blur():
    rng = np.random.default_rng(0)
    img = rng.random((1, 32, 32))
    f = loaders.image_statistics_features(img)
    assert f.shape == (len(loaders.IMAGE_STAT_NAMES),)
    assert f[0] == pytest.approx(img.mean())
    dark = loaders.image_statistics_features(img * 0.5)
    assert dark[0] == pytest.approx(f[0] / 2)
    smooth = loaders.image_statistics_features(np.full((32, 32), 0.5))
    assert smooth[-1] == 0 and smooth[-2] == 0
