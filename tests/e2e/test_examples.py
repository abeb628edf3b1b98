"""Every script in examples/ runs, at tiny sizes, and does what its docstring says.

Each example's `main(argv)` is called in-process (the scripts are plain files, loaded with
runpy) from a temporary working directory, so this is the code a user copies, not a copy of it.
Sizes are the smallest that still exercise every step: together about a minute on 2 cores.
"""

from __future__ import annotations

import json
import runpy
from pathlib import Path

import pandas as pd
import pytest

EXAMPLES = Path(__file__).parents[2] / "examples"


def _main(name: str):
    return runpy.run_path(str(EXAMPLES / name), run_name="example")["main"]


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SHIFTKIT_PROGRESS", "off")


def test_audit_of_another_teams_csv_finds_the_group_it_fails(tmp_path: Path, capsys) -> None:
    metrics = _main("audit_predictions_csv.py")(["--n", "1500", "--n-boot", "30"])
    # The made-up model is worse for women over 60 at site B: the audit names them.
    inter = metrics["bias"]["audits"]["y_prob"]["attributes"]["sex & age_band"]["disparities_by_control"]
    worst = inter["B"]["auroc"]["worst_group"]
    assert worst.startswith("F & ") and worst.split(" & ")[1] in ("60-80", "80+"), worst
    assert inter["B"]["auroc"]["difference"] > 2 * inter["A"]["auroc"]["difference"]
    out = capsys.readouterr().out
    assert "label_col=y_true" in out and "score_col=y_prob" in out
    assert "P000" not in out  # identifiers never printed
    assert not list(Path("runs").rglob("metrics.json"))  # nothing written without --out


def test_clinical_prototype_predicts_on_dicom_flags_shift_and_refuses_bad_files(tmp_path: Path) -> None:
    res = _main("clinical_prototype.py")(["--work", "clin", "--size", "32", "--n", "96", "--epochs", "1"])
    p = res["predictions"]
    assert set(p) == {"rural", "icu", "noise"}
    assert abs(sum(p["rural"]["proba"].values()) - 1) < 1e-5
    assert p["noise"]["outside_adapted_domain"] and p["noise"]["shift_score"] > p["rural"]["shift_score"]
    assert res["refused"]["pickle"] == "UnsafeModelFileError"
    sidecar = json.loads(next(Path("clin/model").glob("*.json")).read_text())
    if "weights_sha256" in sidecar:  # model files that record a hash of their weights
        assert res["refused"]["edited_weights"] is not None
    else:
        assert res["refused"]["edited_weights"] is None


def test_real_data_through_the_chexpert_adapter(tmp_path: Path) -> None:
    metrics = _main("real_data_adapter.py")(["--work", "real", "--n", "30", "--size", "32", "--epochs", "1",
                                               "--n-permutations", "50"])
    assert set(metrics["methods"]) == {"source_only", "dann"}
    manifest = pd.read_csv(next(Path("real").rglob("manifest_chexpert_by_projection.csv")))
    assert set(manifest["domain"]) == {"PA", "AP"} and len(manifest) == 60
    assert not {"Path", "patient", "patient_id"} & set(manifest.columns)
    assert manifest["image"].str.endswith("view1_frontal.jpg").all()


def test_dashcam_segmentation_adaptation_runs(tmp_path: Path) -> None:
    metrics = _main("dashcam_segmentation.py")(["--out", "dash", "--n", "24", "--size", "32", "--epochs", "1",
                                                 "--n-permutations", "50"])
    run = metrics["run"]
    assert (run["task"], run["source_domain"], run["target_domain"]) == ("segmentation", "urban_day", "rural_day")
    assert run["target_labels_used_for"] == "evaluation only"
    for name in ("source_only", "dann"):
        assert 0.0 <= metrics["methods"][name]["target"]["miou"] <= 1.0
    assert Path("dash/dashcam/report.html").exists()


def test_timm_model_adapted_from_a_local_weights_file(tmp_path: Path) -> None:
    res = _main("timm_local_weights.py")(["--n", "40", "--size", "32", "--epochs", "1", "--out", "timm"])
    assert set(res["auroc"]) == {"source_only", "dann"}
    assert res["reloaded_equal"]
    arch = res["sidecar"]["architecture"]
    assert arch["name"] == "timm:resnet10t" and arch["in_channels"] == 1 and arch["num_classes"] == 2
    assert Path("timm/weights.safetensors").is_file()
