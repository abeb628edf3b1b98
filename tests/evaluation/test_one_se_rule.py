"""The one-standard-error rule of label-free deployment: the restyled source-validation score
decides only where its lead exceeds its own bootstrap standard error; among the candidates it
cannot tell apart, the one that agrees most with the ensemble of all (EnsV) is deployed."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
from sklearn.metrics import accuracy_score

from shiftkit.evaluation.policies import deploy_policy, one_se_choice
from shiftkit.evaluation.selection import CandidateOutputs, select, validator_scores
from shiftkit.evaluation.statistics import bootstrap_se, metric_from_stats


def _cand(proba: np.ndarray, restyled: float, se: float) -> CandidateOutputs:
    rng = np.random.default_rng(0)
    return CandidateOutputs(
        source_val_loss=rng.random(20).astype(np.float32), source_val_score=0.8,
        source_features=rng.normal(size=(30, 4)).astype(np.float32),
        source_val_features=rng.normal(size=(20, 4)).astype(np.float32),
        target_features=rng.normal(size=(len(proba), 4)).astype(np.float32),
        target_proba=proba.astype(np.float32), target_pred=proba.argmax(1), mixval_intra=0.5, mixval_inter=0.5,
        restyled_val_score=restyled, restyled_val_se=se)


def _pool(se: float) -> dict[str, CandidateOutputs]:
    """Four candidates that are noisy copies of the truth, and one ("drift") whose predictions
    left the others' (random) but whose restyled score is the best by a small lead."""
    rng = np.random.default_rng(1)
    n, k = 300, 4
    y = rng.integers(0, k, n)
    cands = {}
    for i, (name, restyled) in enumerate([("source_only", 0.60), ("a", 0.70), ("b", 0.87), ("c", 0.89)]):
        logits = rng.normal(size=(n, k)) + 2.5 * np.eye(k)[y] * (0.6 + 0.1 * i)
        cands[name] = _cand(np.exp(logits) / np.exp(logits).sum(1, keepdims=True), restyled, se)
    drift = rng.dirichlet(np.ones(k), n)
    cands["drift"] = _cand(drift, 0.90, se)
    return cands


def test_a_lead_within_the_standard_error_goes_to_the_candidate_ensv_prefers() -> None:
    cands = _pool(se=0.03)
    restyled = validator_scores(cands, ["restyled_val"])["restyled_val"]
    agree = validator_scores(cands, ["ensv"])["ensv"]
    pick, why = one_se_choice(cands, restyled, agree)
    # drift (0.90), c (0.89) and b (0.87) lie within 0.03 of the best; drift agrees least.
    assert "3 candidates" in why and "drift" in why
    assert pick == max(("drift", "c", "b"), key=agree.__getitem__) and pick != "drift"
    members, _ = deploy_policy("restyled_val_1se", select(cands), cands, baseline="source_only")
    assert members == (pick,)
    # Under the safety rule the proposal stands: both validators put it well above source-only.
    members, why = deploy_policy("restyled_val_1se>ensv_safe", select(cands), cands, baseline="source_only")
    assert members == (pick,) and "every committee validator" in why


@pytest.mark.parametrize("se", [0.005, math.nan])
def test_a_clear_lead_or_an_unmeasured_error_keeps_the_restyled_choice(se: float) -> None:
    cands = _pool(se=se)
    sel = select(cands)
    members, _ = deploy_policy("restyled_val_1se", sel, cands, baseline="source_only")
    assert members == ("drift",) == (sel.choices["restyled_val"],)


def test_only_the_best_candidates_standard_error_sets_the_band() -> None:
    cands = _pool(se=0.005)
    cands["drift"] = replace(cands["drift"], restyled_val_se=0.025)  # b (0.87) stays outside
    scores = validator_scores(cands, ["restyled_val", "ensv"])
    pick, why = one_se_choice(cands, scores["restyled_val"], scores["ensv"])
    assert "2 candidates" in why and pick == "c"


def test_bootstrap_se_of_accuracy_matches_the_binomial_standard_error() -> None:
    rng = np.random.default_rng(0)
    n = 400
    y = rng.integers(0, 3, n)
    pred = np.where(rng.random(n) < 0.8, y, (y + 1) % 3)
    stats = {"label": y, "pred": pred}
    p = accuracy_score(y, pred)
    assert metric_from_stats(stats) == pytest.approx(p)
    se = bootstrap_se(stats, n_boot=400)
    assert se == pytest.approx(math.sqrt(p * (1 - p) / n), rel=0.15)
    # A perfect segmentation has no spread; a one-class AUROC resample is left out, not NaN.
    counts = np.zeros((10, 3, 2), np.int64)
    counts[:, :, 0] = 50
    assert bootstrap_se({"counts": counts}) == 0.0
    assert np.isfinite(bootstrap_se({"label": np.array([0] * 9 + [1]), "score": np.linspace(0, 1, 10)}))
