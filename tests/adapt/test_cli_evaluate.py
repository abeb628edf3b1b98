"""`shiftkit audit` / `shiftkit gap`: the thin CLI over shiftkit.evaluation.jobs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import typer
from typer.testing import CliRunner

from shiftkit.adapt.cli import evaluate as cli_evaluate


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
    assert data["bias"]["comparison"]["models"] == ["score", "score_adapted"]
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


def test_audit_without_out_prints_and_writes_nothing(app, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    pred = _predictions(tmp_path / "preds.csv", n=200)
    df = pd.read_csv(pred).rename(columns={"label": "y_true", "score": "y_prob"})
    df.to_csv(pred, index=False)
    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(app, ["audit", str(pred), "--sensitive", "sex,age_band", "--n-boot", "10"])
    assert res.exit_code == 0, res.output
    assert "nothing written" in res.output and "label_col=y_true" in res.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["preds.csv"]


def test_audit_ambiguous_columns_exit_2_and_name_them(app, tmp_path: Path):
    pred = _predictions(tmp_path / "preds.csv", n=60)
    pd.read_csv(pred).assign(proba=0.5).to_csv(pred, index=False)
    res = CliRunner().invoke(app, ["audit", str(pred), "--sensitive", "sex"])
    assert res.exit_code == 2 and "ambiguous score column" in res.output and "--score-col" in res.output


