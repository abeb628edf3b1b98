"""Every section of a run's result is an object with to_dict / from_dict: the saved form reads
back to an equal object, a schema 1.0 metrics.json (the bias section in any of its three old
shapes) still loads, and the audit stays an object (as fairlearn keeps MetricFrame)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from shiftkit.evaluation import bias, report
from shiftkit.evaluation.results import GapSection, OverfittingSection, RunResult, SelectionSection


def _audits() -> dict[str, bias.AuditResult]:
    rng = np.random.default_rng(0)
    n = 300
    df = pd.DataFrame({"label": rng.integers(0, 2, n), "sex": rng.choice(["F", "M"], n)})
    df["score"] = np.clip(0.4 * df["label"] + 0.6 * rng.random(n), 0, 1)
    df["score2"] = np.clip(df["score"] - np.where(df["sex"] == "F", 0.3, 0.0), 0, 1)
    kw = dict(n_boot=20, underdiagnosis=False, seed=0)
    return {"before": bias.audit(df, ["sex"], **kw), "after": bias.audit(df, ["sex"], score_col="score2", **kw)}


_SELECTION = {"validator": "entropy", "chosen": "dann", "candidates": ["source_only", "dann"],
              "outputs": {"source_only": "selection/a.npz", "dann": "selection/b.npz"},
              "true_metric": "target test auroc", "true_target": {"source_only": 0.6, "dann": 0.7},
              "validators": {"entropy": {"choice": "dann", "score": -0.2, "spearman": 1.0, "regret": 0.0}},
              "scores": {"entropy": {"source_only": -0.3, "dann": -0.2}}}


def test_sections_are_objects_and_read_back_equal(tmp_path: Path) -> None:
    audits = _audits()
    section = bias.BiasSection.of(audits)
    result = RunResult(run={"task": "radiograph"}, gap={"before": {"mmd2": 0.1}, "after": {"mmd2": 0.05}},
                       overfitting={"dann": {"best_epoch": 2, "monitor": "val_loss"}}, bias=section,
                       selection=_SELECTION)
    assert isinstance(result.gap, GapSection) and isinstance(result.overfitting, OverfittingSection)
    assert isinstance(result.selection, SelectionSection) and result.selection.chosen == "dann"
    assert isinstance(result.bias.audits["before"], bias.AuditResult)  # an object, not a dict
    assert result.bias.comparison["models"] == ["before", "after"]
    report.write_report(tmp_path, result)
    back = RunResult.load(tmp_path)
    assert isinstance(back.bias.audits["after"], bias.AuditResult)
    assert back.to_dict() == json.loads((tmp_path / "metrics.json").read_text())
    assert back.selection == SelectionSection.from_dict(_SELECTION)
    assert list(back.selection.validator_rows()) == ["entropy"]
    assert back.bias.widened == section.widened


@pytest.mark.parametrize("shape", ["one audit", "compare_audits output", "name -> audit"])
def test_a_schema_1_0_bias_section_still_loads(tmp_path: Path, shape: str) -> None:
    audits = _audits()
    if shape == "one audit":
        old = audits["before"].to_dict()
        labels = ["model"]
    elif shape == "compare_audits output":
        old = bias.compare_audits(audits)
        labels = ["before", "after"]
    else:
        old = {k: a.to_dict() for k, a in audits.items()} | {"comparison": bias.compare_audits(audits)}
        labels = ["before", "after"]
    saved = report.to_jsonable({"schema_version": "1.0", "bias": old,
                                "overfitting": {"best_epoch": 3, "monitor": "val_loss"}})
    (tmp_path / "metrics.json").write_text(json.dumps(saved))
    back = RunResult.load(tmp_path)
    assert list(back.bias.audits) == labels and not back.extra
    assert back.bias.audits[labels[0]].attributes["sex"]["groups"] == saved_groups(old, labels[0])
    assert back.overfitting.analyses["model"]["best_epoch"] == 3
    assert bias.summary_lines(back.bias) and report.terminal_summary(back)


def saved_groups(old: dict, label: str) -> list:
    audit = old if "settings" in old else old["audits"][label] if "audits" in old else old[label]
    return report.to_jsonable(audit)["attributes"]["sex"]["groups"]


def test_a_section_of_another_shape_is_kept_not_guessed() -> None:
    odd = RunResult.from_dict({"selection": {"chosen": "x"}, "bias": {"note": 1}, "gap": [1]})
    assert odd.selection is None and odd.bias is None and odd.gap is None
    assert odd.extra == {"selection": {"chosen": "x"}, "bias": {"note": 1}, "gap": [1]}
