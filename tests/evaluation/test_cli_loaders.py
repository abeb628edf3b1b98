"""Evaluation jobs (`audit_predictions`, `gap_between`: what `shiftkit audit` / `gap` run) and
the feature loaders (never unpickling). The CLI layer itself is tested in
tests/adapt/test_cli_evaluate.py; nothing here imports shiftkit.adapt."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from shiftkit.datasets.errors import DataError
from shiftkit.evaluation import jobs, loaders


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


def test_audit_detects_sklearn_column_names_and_equals_fairlearn(tmp_path: Path):
    from fairlearn.metrics import MetricFrame, false_positive_rate
    from sklearn.metrics import roc_auc_score

    df = pd.read_csv(_predictions(tmp_path / "p.csv", n=500)).rename(columns={"label": "y_true", "score": "y_score"})
    df.to_csv(tmp_path / "sk.csv", index=False)
    job = jobs.audit_predictions(tmp_path / "sk.csv", "sex", n_boot=20)
    assert job.out_dir is None and job.report_path is None
    assert not (tmp_path / "metrics.json").exists() and sorted(p.name for p in tmp_path.iterdir()) == ["p.csv", "sk.csv"]
    run = job.metrics["run"]
    assert (run["label_col"], run["score_col"]) == ("y_true", "y_score")
    groups = {g["group"]: g for g in job.metrics["bias"]["audits"]["y_score"]["attributes"]["sex"]["groups"]}
    mf = MetricFrame(metrics={"auroc": roc_auc_score}, y_true=df["y_true"],
                     y_pred=df["y_score"], sensitive_features=df["sex"])
    y_pred = (df["y_score"] >= 0.5).astype(int)
    fpr = MetricFrame(metrics=false_positive_rate, y_true=df["y_true"], y_pred=y_pred, sensitive_features=df["sex"])
    for sex in ("F", "M"):
        assert groups[sex]["fpr"] == pytest.approx(fpr.by_group[sex], abs=1e-12)
        assert groups[sex]["auroc"] == pytest.approx(mf.by_group.loc[sex, "auroc"], abs=1e-12)
    assert "sex" in job.summary()


def test_audit_column_detection_errors_list_what_was_found(tmp_path: Path):
    df = pd.read_csv(_predictions(tmp_path / "p.csv", n=60))
    both = df.assign(y_true=df["label"])
    with pytest.raises(DataError, match=r"ambiguous label column: \['label', 'y_true'\].*--label-col"):
        jobs.audit_predictions(both, "sex", n_boot=0)
    assert jobs.audit_predictions(both, "sex", label_col="y_true", n_boot=0).metrics["run"]["label_col"] == "y_true"
    none = df.rename(columns={"score": "risk"})
    with pytest.raises(DataError, match=r"no score column: looked for .*'proba'.*found columns .*'risk'"):
        jobs.audit_predictions(none, "sex", n_boot=0)
    with pytest.raises(DataError, match="'nope' not found"):
        jobs.audit_predictions(df, "sex", score_col="nope", n_boot=0)


def test_audit_writes_files_only_when_asked(tmp_path: Path):
    job = jobs.audit_predictions(_predictions(tmp_path / "p.csv", n=200), ["sex"], out=tmp_path / "a", n_boot=10)
    assert job.out_dir == tmp_path / "a" and job.report_path.exists()
    assert json.loads(job.metrics_path.read_text())["run"]["rows"] == 200


def test_gap_on_one_features_table_split_by_domain(tmp_path: Path):
    rng = np.random.default_rng(0)
    df = pd.DataFrame(rng.normal(size=(200, 4)), columns=list("abcd")).assign(domain=["s"] * 100 + ["t"] * 100)
    df.loc[df["domain"] == "t", "a"] += 1.0
    df.to_csv(tmp_path / "f.csv", index=False)
    job = jobs.gap_between(tmp_path / "f.csv", tmp_path / "f.csv", source_domain="s", target_domain="t",
                           n_permutations=99)
    g = job.metrics["gap"]["source_vs_target"]
    assert job.out_dir is None and g["n_source"] == g["n_target"] == 100 and g["dim"] == 4
    assert g["mmd_p_value"] <= 0.05
    with pytest.raises(DataError, match="domain values are"):
        jobs.gap_between(tmp_path / "f.csv", tmp_path / "f.csv", source_domain="s", target_domain="x")


def test_gap_command_on_manifests_uses_image_statistics(tmp_path: Path):
    from shiftkit.datasets.synth import radiograph

    manifest = radiograph.export(tmp_path / "data", ("city", "rural"), 24, size=32, progress=False)
    job = jobs.gap_between(manifest, manifest, out=tmp_path / "g", source_domain="city",
                           target_domain="rural", n_permutations=99, progress=False)
    metrics = job.metrics
    assert job.report_path.exists()
    g = metrics["gap"]["source_vs_target"]
    assert g["n_source"] == 24 and g["dim"] == len(loaders.IMAGE_STAT_NAMES)
    assert g["mmd_p_value"] <= 0.05  # the synthetic sites differ in acquisition
    assert any("image statistics" in w for w in metrics["warnings"])
    with pytest.raises(DataError, match="no rows with domain"):
        jobs.gap_between(manifest, manifest, source_domain="mars")


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
