"""Overfitting diagnostics and label-free target-risk estimators."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import entropy, spearmanr

from shiftkit.datasets.errors import DataError
from shiftkit.evaluation import overfitting, risk


def _history(n=12, turn=5):
    h = []
    for e in range(n):
        h.append({"epoch": e, "train_loss": 1.0 / (e + 1), "val_loss": 0.5 + 0.03 * (e - turn) ** 2,
                  "train_acc": min(1.0, 0.6 + 0.04 * e), "val_acc": 0.8 - 0.005 * abs(e - turn),
                  "target_acc": 0.6 + 0.01 * e})
    return h


def test_analyse_history_best_epoch_early_stopping_and_warnings():
    a = overfitting.analyse_history(_history(), patience=3, n_params=2_000_000, n_samples=500)
    assert a["monitor"] == "val_loss" and a["best_epoch"] == 5
    assert a["stop_epoch"] == 8  # 3 epochs without improvement after epoch 5
    assert a["generalisation_gap"][0] == pytest.approx(0.5 + 0.03 * 25 - 1.0)
    assert a["domain_gap"][5] == pytest.approx((0.8) - (0.65))
    assert a["target_at_best_epoch"]["target_acc"] == pytest.approx(0.65)
    # The oracle (target-selected) epoch is reported, labelled, never used for the choice.
    assert a["oracle_best_epoch"]["epoch"] == 11 and "oracle" in a["oracle_best_epoch"]["note"]
    assert any("overfitting" in w for w in a["warnings"])
    assert any("4,000 per image" in w for w in a["warnings"])
    assert "epoch 8" in a["advice"] and "epoch 5" in a["advice"]


def test_analyse_history_no_false_alarm_and_still_improving():
    h = [{"epoch": e, "train_loss": 1 / (e + 1), "val_loss": 1.1 / (e + 1), "val_acc": 0.5 + 0.03 * e}
         for e in range(8)]
    a = overfitting.analyse_history(h, n_params=1000, n_samples=5000)
    assert a["best_epoch"] == 7 and a["warnings"] == []
    assert "train longer" in a["advice"]
    b = overfitting.analyse_history(h, monitor="val_acc")
    assert b["mode"] == "max" and b["best_epoch"] == 7


def test_analyse_history_refuses_target_monitor_and_bad_input():
    with pytest.raises(DataError, match="target"):
        overfitting.analyse_history(_history(), monitor="target_acc")
    with pytest.raises(DataError, match="empty"):
        overfitting.analyse_history([])
    with pytest.raises(DataError, match="not a numeric key"):
        overfitting.analyse_history(_history(), monitor="val_dice")
    # No series at all (a method without an iterative fit): a report, not an exception.
    assert overfitting.analyse_history([{"epoch": 0, "note": "closed form"}])["monitor"] is None
    only_train = overfitting.analyse_history([{"epoch": e, "train_loss": 1 / (e + 1)} for e in range(3)])
    assert only_train["monitor"] == "train_loss" and "no source-validation" in only_train["warnings"][0]


def test_data_efficiency_curves_and_labels_saved():
    res = [{"init": "from_source", "n_labelled": n, "score": s} for n, s in ((10, 0.70), (100, 0.80), (1000, 0.85))]
    res += [{"init": "from_scratch", "n_labelled": n, "score": s} for n, s in ((10, 0.5), (100, 0.65), (1000, 0.75))]
    res += [{"init": "from_scratch", "n_labelled": 1000, "score": 0.77}]
    d = overfitting.data_efficiency(res)
    assert d["curves"]["from_scratch"]["mean"][-1] == pytest.approx(0.76)
    assert d["curves"]["from_scratch"]["sd"][-1] == pytest.approx(np.std([0.75, 0.77], ddof=1))
    assert d["labels_to_match"]["from_scratch"]["n_to_match"] == 1000
    fig = overfitting.data_efficiency_figure({"a": {10: 0.5, 20: 0.6}, "b": {10: 0.4, 20: 0.7}})
    assert fig.axes[0].get_xscale() == "log"


def test_iwcv_and_dev_recover_target_risk_under_covariate_shift():
    """Source x ~ N(0,1), target x ~ N(1,1), loss x^2: target risk 2, source risk 1.
    True density ratio exp(x - 1/2). DEV's control variate must cut the variance of IWCV."""
    iw, dv, src = [], [], []
    for t in range(100):
        x = np.random.default_rng(t).normal(size=400)
        w, loss = np.exp(x - 0.5), x**2
        iw.append(risk.iwcv_risk(loss, w, normalise=False)["risk"])
        dv.append(risk.dev_risk(loss, w)["risk"])
        src.append(loss.mean())
    assert np.mean(src) == pytest.approx(1.0, abs=0.05)
    assert np.mean(iw) == pytest.approx(2.0, abs=0.15)
    assert np.mean(dv) == pytest.approx(2.0, abs=0.15)
    assert np.std(dv) < 0.8 * np.std(iw)
    # Constant weights: both reduce to the plain mean.
    lo = np.arange(5.0)
    assert risk.dev_risk(lo, np.ones(5))["risk"] == pytest.approx(2.0)
    assert risk.iwcv_risk(lo, np.ones(5))["ess"] == pytest.approx(5.0)


def test_classifier_density_ratio_tracks_true_ratio():
    rng = np.random.default_rng(0)
    xs, xt = rng.normal(size=(2000, 1)), rng.normal(size=(2000, 1)) + 1.0
    ev = np.linspace(-1.5, 1.5, 7)[:, None]
    w = risk.classifier_density_ratio(xs, xt, ev)
    assert spearmanr(w, np.exp(ev[:, 0] - 0.5)).statistic == pytest.approx(1.0)
    assert w[3] == pytest.approx(np.exp(-0.5), rel=0.25)


def test_entropy_and_snd_equal_direct_formulas():
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(40, 3)) * 2
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    assert risk.prediction_entropy(p) == pytest.approx(np.mean(entropy(p, axis=1)))
    assert risk.prediction_entropy(np.full((4, 3), 1 / 3)) == pytest.approx(math.log(3))
    # SND by its definition, with explicit loops.
    q = p / np.linalg.norm(p, axis=1, keepdims=True)
    tot = 0.0
    for i in range(len(q)):
        sims = np.array([q[i] @ q[j] / 0.05 for j in range(len(q)) if j != i])
        s = np.exp(sims - sims.max())
        s /= s.sum()
        tot += -(s * np.log(s)).sum()
    assert risk.soft_neighborhood_density(p) == pytest.approx(tot / len(q), rel=1e-9)


def test_evaluate_estimators_spearman_error_and_regret():
    truth = [0.30, 0.25, 0.20, 0.22, 0.35]
    est = {"iwcv": [0.32, 0.26, 0.21, 0.24, 0.33], "snd": [1.0, 1.2, 1.5, 1.4, 0.9], "entropy": [0.5, 0.4, 0.45, 0.3, 0.6]}
    ev = risk.evaluate_estimators(est, truth)
    assert ev["iwcv"]["spearman"] == pytest.approx(spearmanr(est["iwcv"], truth).statistic)
    assert ev["snd"]["spearman"] == pytest.approx(spearmanr(-np.array(est["snd"]), truth).statistic)
    assert ev["snd"]["selected"] == 2 and ev["snd"]["regret"] == 0
    assert ev["entropy"]["selected"] == 3 and ev["entropy"]["regret"] == pytest.approx(0.02)
    assert ev["iwcv"]["abs_error"] == pytest.approx(np.mean(np.abs(np.subtract(est["iwcv"], truth))))
    assert "abs_error" not in ev["snd"]
    with pytest.raises(DataError, match="checkpoints"):
        risk.evaluate_estimators({"iwcv": [1, 2]}, truth)
