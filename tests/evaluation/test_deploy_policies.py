"""Deployment policies of label-free selection: ensembles of the top candidates, the pseudo-target
(restyled source validation) validator, the one-standard-error rule, and the ensemble the harness
scores from stored cells."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest

from shiftkit.datasets.errors import DataError
from shiftkit.evaluation.policies import POLICIES, deploy_policy, deployed_label, one_se_choice
from shiftkit.evaluation.selection import CandidateOutputs, safe_choice, select, validator_scores


def _cand(proba: np.ndarray, *, restyled: float = math.nan, mix: float = 0.5, se: float = math.nan) -> CandidateOutputs:
    rng = np.random.default_rng(0)
    return CandidateOutputs(
        source_val_loss=rng.random(20).astype(np.float32), source_val_score=0.8,
        source_features=rng.normal(size=(30, 4)).astype(np.float32),
        source_val_features=rng.normal(size=(20, 4)).astype(np.float32),
        target_features=rng.normal(size=(len(proba), 4)).astype(np.float32),
        target_proba=proba.astype(np.float32), target_pred=proba.argmax(1), mixval_intra=mix, mixval_inter=mix,
        restyled_val_score=restyled, restyled_val_se=se)


def _pool(n: int = 200, k: int = 4) -> tuple[dict[str, CandidateOutputs], np.ndarray]:
    """Five candidates that are noisy copies of the truth and one that collapsed to class 0."""
    rng = np.random.default_rng(1)
    y = rng.integers(0, k, n)
    cands = {}
    for i, name in enumerate(["source_only", "a", "b", "c", "d"]):
        logits = rng.normal(size=(n, k)) + 2.5 * np.eye(k)[y] * (0.6 + 0.1 * i)
        p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
        cands[name] = _cand(p, restyled=0.5 + 0.1 * i)
    collapsed = np.full((n, k), 0.01)
    collapsed[:, 0] = 0.97
    cands["collapsed"] = _cand(collapsed, restyled=0.1)
    return cands, y


def test_ensv_top_half_leaves_out_a_collapsed_candidate_and_restyled_top3_takes_the_best_scores() -> None:
    cands, _ = _pool()
    sel = select(cands, "entropy")  # entropy prefers the collapsed, confident candidate
    assert sel.chosen == "collapsed"
    members, why = deploy_policy("ensv_top_half", sel, cands, baseline="source_only")
    assert len(members) == 3 and "collapsed" not in members and "3 candidates" in why
    members, _ = deploy_policy("restyled_val_top3", sel, cands, baseline="source_only")
    assert members == ("d", "c", "b")  # restyled scores 0.9, 0.8, 0.7
    assert deploy_policy("always_ensemble", sel, cands, baseline="source_only")[0] == tuple(cands)
    assert deploy_policy("always_source_only", sel, cands, baseline="source_only")[0] == ("source_only",)
    assert deploy_policy("restyled_val", sel, cands, baseline="source_only")[0] == ("d",)
    trimmed, _ = deploy_policy("ensv_trimmed", sel, cands, baseline="source_only")
    assert len(trimmed) == 2 and set(trimmed) <= set(deploy_policy("ensv_top_half", sel, cands, baseline="source_only")[0])


def test_the_safety_rule_policies_are_safe_choice_with_the_ensemble_fallback() -> None:
    cands, _ = _pool()
    sel = select(cands, "mixval")
    sc = safe_choice(sel, "source_only", fallback="ensemble", committee=("mixval", "ensv"))
    members, why = deploy_policy("mixval>ensv_safe", select(cands, "entropy"), cands, baseline="source_only")
    assert why == sc.reason
    assert members == (tuple(cands) if sc.chosen == "ensemble" else (sc.chosen,))
    # restyled_val proposes "d" (its best score); EnsV agrees d beats source-only: deployed.
    members, why = deploy_policy("restyled_val>ensv_safe", sel, cands, baseline="source_only")
    assert members == ("d",) and "restyled_val, ensv" in why
    # A collapsed candidate with the best restyled score: EnsV objects, the ensemble is deployed.
    cands["collapsed"] = _cand(cands["collapsed"].target_proba, restyled=0.99)
    members, why = deploy_policy("restyled_val>ensv_safe", select(cands, "entropy"), cands, baseline="source_only")
    assert members == tuple(cands) and "collapsed is not confidently better than source_only by ensv" in why
    # Alone, restyled_val keeps its proposal.
    assert deploy_policy("restyled_val>safe", select(cands, "entropy"), cands, baseline="source_only")[0] == ("collapsed",)
    assert deployed_label(tuple(cands), list(cands)) == "ensemble"
    assert deployed_label(("a", "b"), list(cands)) == "ensemble(a+b)"
    assert deployed_label(("a",), list(cands)) == "a"


def test_policies_refuse_an_unknown_name_a_missing_baseline_and_missing_restyled_scores() -> None:
    cands, _ = _pool()
    sel = select(cands, "entropy")
    with pytest.raises(DataError, match="unknown deployment policy 'best'.*always_ensemble"):
        deploy_policy("best", sel, cands, baseline="source_only")
    with pytest.raises(DataError, match="baseline 'plain'"):
        deploy_policy("always_ensemble", sel, cands, baseline="plain")
    bare = {n: _cand(c.target_proba) for n, c in cands.items()}
    with pytest.raises(DataError, match="restyled source-validation score"):
        deploy_policy("restyled_val_top3", select(bare, "entropy"), bare, baseline="source_only")
    assert set(POLICIES) >= {"always_ensemble", "ensv_top_half", "restyled_val_top3", "mixval>ensv_safe"}


def _se_pool(se: float) -> dict[str, CandidateOutputs]:
    """One-standard-error rule: four candidates that are noisy copies of the truth, and one
    ("drift") whose predictions left the others' (random) but whose restyled score is the best
    by a small lead."""
    rng = np.random.default_rng(1)
    n, k = 300, 4
    y = rng.integers(0, k, n)
    cands = {}
    for i, (name, restyled) in enumerate([("source_only", 0.60), ("a", 0.70), ("b", 0.87), ("c", 0.89)]):
        logits = rng.normal(size=(n, k)) + 2.5 * np.eye(k)[y] * (0.6 + 0.1 * i)
        cands[name] = _cand(np.exp(logits) / np.exp(logits).sum(1, keepdims=True), restyled=restyled, se=se)
    drift = rng.dirichlet(np.ones(k), n)
    cands["drift"] = _cand(drift, restyled=0.90, se=se)
    return cands


def test_a_lead_within_the_standard_error_goes_to_the_candidate_ensv_prefers() -> None:
    cands = _se_pool(se=0.03)
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
    cands = _se_pool(se=se)
    sel = select(cands)
    members, _ = deploy_policy("restyled_val_1se", sel, cands, baseline="source_only")
    assert members == ("drift",) == (sel.choices["restyled_val"],)


def test_only_the_best_candidates_standard_error_sets_the_band() -> None:
    cands = _se_pool(se=0.005)
    cands["drift"] = replace(cands["drift"], restyled_val_se=0.025)  # b (0.87) stays outside
    scores = validator_scores(cands, ["restyled_val", "ensv"])
    pick, why = one_se_choice(cands, scores["restyled_val"], scores["ensv"])
    assert "2 candidates" in why and pick == "c"
