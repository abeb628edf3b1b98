"""Bias audits: every group metric equals what fairlearn / scikit-learn compute on the same
inputs; the bootstrap engine equals MetricFrame on an explicit resample; undefined metrics,
small groups, the under-diagnosis view and model comparison."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from fairlearn.metrics import (
    MetricFrame,
    count,
    false_negative_rate,
    false_positive_rate,
    selection_rate,
)
from sklearn.metrics import accuracy_score, roc_auc_score

from shiftkit.datasets.errors import DataError
from shiftkit.evaluation import bias
from shiftkit.evaluation.calibration import expected_calibration_error


def _frame(n=900, seed=0):
    rng = np.random.default_rng(seed)
    df = pd.DataFrame({
        "sex": rng.choice(["F", "M"], n),
        "age": rng.integers(0, 100, n),
        "site": rng.choice(["A", "B"], n),
    })
    df["label"] = (rng.random(n) < 0.4).astype(int)
    noise = np.where(df["sex"] == "F", 0.9, 0.5)
    df["score"] = np.clip(0.45 * df["label"] + noise * rng.random(n) - 0.1, 0, 1)
    return df


def test_group_metrics_equal_fairlearn_and_sklearn():
    df = _frame()
    res = bias.audit(df, ["sex", "age_band"], n_boot=0)
    thr = 0.5
    df["age_band"] = bias.age_band(df["age"])
    for attr, cols in (("sex", ["sex"]), ("age_band", ["age_band"]), ("sex & age_band", ["sex", "age_band"])):
        rows = {r["group"]: r for r in res.attributes[attr]["groups"]}
        keys = df[cols].astype(str).agg(" & ".join, axis=1)
        assert set(rows) == set(keys)
        for g, row in rows.items():
            sub = df[keys == g]
            y, s = sub["label"].to_numpy(), sub["score"].to_numpy()
            pred = (s >= thr).astype(int)
            assert row["count"] == count(y, pred) == len(sub)
            assert row["accuracy"] == pytest.approx(accuracy_score(y, pred))
            assert row["selection_rate"] == pytest.approx(selection_rate(y, pred))
            assert row["fpr"] == pytest.approx(false_positive_rate(y, pred, pos_label=1))
            assert row["fnr"] == pytest.approx(false_negative_rate(y, pred, pos_label=1))
            assert row["auroc"] == pytest.approx(roc_auc_score(y, s))
            assert row["ece"] == pytest.approx(expected_calibration_error(y, s))
    # Differences / ratios equal MetricFrame's between-groups values.
    mf = MetricFrame(metrics={"fpr": lambda y, p: false_positive_rate(y, p, pos_label=1),
                              "acc": accuracy_score},
                     y_true=df["label"], y_pred=(df["score"] >= thr).astype(int), sensitive_features=df["age_band"])
    d = res.attributes["age_band"]["disparities"]
    assert d["fpr"]["difference"] == pytest.approx(mf.difference()["fpr"])
    assert d["accuracy"]["ratio"] == pytest.approx(mf.ratio()["acc"])
    assert d["accuracy"]["worst_group"] == mf.by_group["acc"].idxmin()
    assert res.overall["auroc"] == pytest.approx(roc_auc_score(df["label"], df["score"]))


def test_bootstrap_engine_equals_metricframe_on_explicit_resample():
    """The vectorised bootstrap (row weights) computes exactly what MetricFrame computes on the
    resampled rows, so the CIs are the usual bootstrap, only faster."""
    df = _frame(300, seed=1)
    y, s = df["label"].to_numpy(), df["score"].to_numpy()
    rng = np.random.default_rng(3)
    idx = rng.integers(0, len(df), len(df))
    w = np.bincount(idx, minlength=len(df)).astype(float)[None, :]
    funcs = bias.group_metric_functions(0.5)
    mf = MetricFrame(metrics=funcs, y_true=y[idx], y_pred=s[idx], sensitive_features=df["sex"].to_numpy()[idx])
    for g in ("F", "M"):
        m = (df["sex"] == g).to_numpy()
        got = bias._weighted_group_metrics(y[m], s[m], w[:, m], 0.5)
        for name in bias.METRICS:
            assert got[name][0] == pytest.approx(mf.by_group.loc[g, name], abs=1e-12), (g, name)


def test_confidence_intervals_bracket_point_estimates():
    res = bias.audit(_frame(), ["sex"], n_boot=100, seed=0, underdiagnosis=False)
    for row in res.attributes["sex"]["groups"]:
        for m in ("accuracy", "auroc", "fpr", "fnr", "ece"):
            lo, hi = row[f"{m}_ci"]
            assert lo <= hi
            assert lo - 0.02 <= row[m] <= hi + 0.02
    d = res.attributes["sex"]["disparities"]["fpr"]
    assert d["difference_ci"][0] <= d["difference"] <= d["difference_ci"][1]


def test_single_class_and_small_groups_do_not_crash():
    df = _frame(400, seed=2)
    extra = pd.DataFrame({"sex": ["X"] * 12, "age": [50] * 12, "site": ["A"] * 12,
                          "label": [1] * 12, "score": np.linspace(0.2, 0.9, 12)})
    tiny = pd.DataFrame({"sex": ["U"] * 3, "age": [30] * 3, "site": ["A"] * 3, "label": [1, 0, 1],
                         "score": [0.9, 0.1, 0.2]})
    res = bias.audit(pd.concat([df, extra, tiny], ignore_index=True), ["sex"], n_boot=20, min_group_size=30)
    rows = {r["group"]: r for r in res.attributes["sex"]["groups"]}
    assert rows["X"]["auroc"] is None and rows["X"]["fpr"] is None
    assert rows["X"]["fnr"] == pytest.approx(np.mean(np.linspace(0.2, 0.9, 12) < 0.5))
    reasons = {(u["group"], u["metric"]): u["reason"] for u in res.attributes["sex"]["undefined"]}
    assert "single class" in reasons[("X", "auroc")] and "no negatives" in reasons[("X", "fpr")]
    assert rows["X"]["small"] and not rows["F"]["small"]
    assert "X" in res.attributes["sex"]["small_groups"]
    # A group of 3 is suppressed: count only, no outcomes of single patients.
    assert rows["U"]["count"] == 3 and "suppressed" in rows["U"] and "accuracy" not in rows["U"]
    assert any("single class" in w for w in res.warnings)
    # The worst group ignores groups below min_group_size when bigger ones exist.
    assert res.attributes["sex"]["disparities"]["fnr"]["worst_group"] in {"F", "M"}


def test_underdiagnosis_is_fpr_of_no_finding_by_sex_and_age_band():
    df = _frame(1200, seed=4)
    res = bias.audit(df, ["sex", "age_band"], n_boot=50)
    ud = res.underdiagnosis
    assert set(ud) == {"sex", "age_band"}
    bands = bias.age_band(df["age"])
    assert [g["group"] for g in ud["age_band"]["groups"]] == ["0-20", "20-40", "40-60", "60-80", "80+"]
    for g in ud["age_band"]["groups"]:
        sub = df[bands == g["group"]]
        sick = sub[sub["label"] == 1]
        assert g["n_with_finding"] == len(sick)
        assert g["rate"] == pytest.approx(np.mean(sick["score"] < 0.5))
        no_finding_true = 1 - sub["label"]
        no_finding_pred = (sub["score"] < 0.5).astype(int)
        assert g["rate"] == pytest.approx(false_positive_rate(no_finding_true, no_finding_pred, pos_label=1))
        assert g["rate_ci"][0] <= g["rate"] + 0.02 and g["rate"] - 0.02 <= g["rate_ci"][1]
    assert list(bias.age_band([0, 19.9, 20, 59, 60, 79, 80, 104, None, -3])) == [
        "0-20", "0-20", "20-40", "40-60", "60-80", "60-80", "80+", "80+", "missing", "missing"]


def test_control_feature_disparities_are_per_site():
    df = _frame(800, seed=5)
    res = bias.audit(df, ["sex"], control=["site"], n_boot=0, underdiagnosis=False)
    a = res.attributes["sex"]
    for site in ("A", "B"):
        alone = bias.audit(df[df["site"] == site], ["sex"], n_boot=0, underdiagnosis=False)
        assert a["disparities_by_control"][site]["fpr"]["difference"] == pytest.approx(
            alone.attributes["sex"]["disparities"]["fpr"]["difference"])


def test_compare_audits_flags_a_widened_disparity():
    df = _frame(1500, seed=6)
    before = bias.audit(df, ["sex"], n_boot=100, seed=0, underdiagnosis=False)
    worse = df.assign(score=np.where(df["sex"] == "F", df["score"] * 0.5, df["score"]))  # adapted model misses F
    after = bias.audit(worse, ["sex"], n_boot=100, seed=0, underdiagnosis=False)
    cmp_ = bias.compare_audits({"source_only": before, "adapted": after})
    fnr = cmp_["attributes"]["sex"]["fnr"]
    assert fnr["widened"] and fnr["change"] > 0.2 and fnr["widened_beyond_ci"]
    assert any("fnr" in w for w in cmp_["widened_beyond_ci"])
    assert bias.summary_lines(cmp_)
    figs = bias.plot_audit(cmp_)
    assert "Bias: sex" in figs


def test_bad_inputs_name_column_and_row():
    df = _frame(50)
    df.loc[7, "label"] = 2
    with pytest.raises(DataError, match="'label' row 7"):
        bias.audit(df, ["sex"], n_boot=0)
    df = _frame(50)
    df.loc[3, "score"] = 1.7
    with pytest.raises(DataError, match="'score' row 3"):
        bias.audit(df, ["sex"], n_boot=0)
    with pytest.raises(DataError, match="not found"):
        bias.audit(_frame(50), ["ethnicity"], n_boot=0)
