"""Deployment policies of label-free selection: what ``auto`` / the harness's ``selected`` deploy.

A policy turns the validators' scores of the candidates (:func:`shiftkit.evaluation.selection.select`)
into what to deploy: one candidate, or the ensemble (averaged probabilities) of some of them.
:func:`deploy_policy` returns the members and a sentence saying why; :data:`DEPLOY_POLICY` is
the default, chosen on development data seeds (benchmarks/efficacy/dev-pool/policies.md).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from shiftkit.datasets.errors import DataError

from .selection import (
    CandidateOutputs,
    Selection,
    _ensemble_agreement,
    _restyled_val,
    best_of,
    safe_choice,
    validator_scores,
)

__all__ = ["BASELINE_POLICIES", "DEPLOY_POLICY", "POLICIES", "deploy_policy", "deployed_label", "one_se_choice"]

#: The safety-rule policies: ``proposer>...``: (proposing validator, committee that must agree
#: it beats the baseline by :data:`SAFETY_MARGIN`); the fallback is the ensemble of all.
_SAFE_POLICIES = {"mixval>ensv_safe": ("mixval", ("mixval", "ensv")),
                  "restyled_val>safe": ("restyled_val", ("restyled_val",)),
                  "restyled_val>ensv_safe": ("restyled_val", ("restyled_val", "ensv"))}

#: The one-standard-error policies: ``restyled_val_1se`` alone, and with the safety rule of
#: ``restyled_val>ensv_safe`` on its proposal (:func:`one_se_choice`).
_ONE_SE_POLICIES = {"restyled_val_1se": None, "restyled_val_1se>ensv_safe": ("restyled_val", "ensv")}

#: Deployment policies besides a single validator's choice (:func:`deploy_policy`).
BASELINE_POLICIES = ("always_source_only", "always_ensemble", "ensv_top_half", "ensv_top3", "ensv_trimmed",
                     "restyled_val_top3", "restyled_val_top_half")


def one_se_choice(candidates: Mapping[str, CandidateOutputs], restyled: Mapping[str, float],
                  agreement: Mapping[str, float]) -> tuple[str, str]:
    """The one-standard-error rule on the restyled source-validation score: ``(choice, reason)``.

    The candidates whose restyled score lies within one bootstrap standard error
    (``restyled_val_se`` of the best) of the best cannot be told apart by that score; among
    them the one EnsV scores highest (``agreement``: its agreement with the ensemble of all
    candidates) is chosen, ties to the better restyled score. A clear lead is kept as it is.
    With no standard error measured the rule is the restyled score's own argmax.
    """
    names = list(candidates)
    best = best_of(restyled, names)
    se = float(candidates[best].restyled_val_se)
    if not math.isfinite(se):
        return best, "restyled_val's choice (no standard error measured)"
    tied = [n for n in names if math.isfinite(restyled[n]) and restyled[n] >= restyled[best] - se]
    if len(tied) == 1:
        return best, f"restyled_val's choice, ahead of every other candidate by more than its standard error {se:.3f}"
    pick = max(tied, key=lambda n: (agreement[n], restyled[n], -names.index(n)))
    return pick, (f"{len(tied)} candidates within one standard error ({se:.3f}) of the best restyled score "
                  f"({', '.join(tied)}); EnsV prefers {pick}")


def deploy_policy(policy: str, selection: Selection, candidates: Mapping[str, CandidateOutputs], *,
                  baseline: str) -> tuple[tuple[str, ...], str]:
    """What a label-free deployment policy deploys: ``(members, reason)``.

    One member is that candidate; several are their ensemble (averaged probabilities).

    Policies:
        ``always_source_only``: the baseline. ``always_ensemble``: every candidate.
        ``ensv_top_half`` / ``ensv_top3``: the ensemble of the ``ceil(n/2)`` / 3 candidates that
        agree most with the ensemble of all (EnsV's role model), so a candidate that collapsed or
        drifted away from the others does not vote. ``ensv_trimmed``: the same twice over (the
        top half's own ensemble is the second role model; its top half is deployed).
        ``mixval>ensv_safe``: :func:`safe_choice` (MixVal proposes; MixVal and EnsV must both
        score the proposal above the baseline by :data:`SAFETY_MARGIN` of their score range),
        falling back to the ensemble of every candidate. ``restyled_val>safe``: the same with
        ``restyled_val`` proposing and alone in the committee; ``restyled_val>ensv_safe``: with
        EnsV in the committee too. ``restyled_val_1se``: :func:`one_se_choice`;
        ``restyled_val_1se>ensv_safe``: its choice under the safety rule of ``restyled_val>ensv_safe``.
        Any validator name: that validator's choice alone.
    """
    names = list(candidates)
    if baseline not in names:
        raise DataError(f"deploy_policy: baseline {baseline!r} is not a candidate ({names})")

    def top(cands: Sequence[str], k: int) -> list[str]:
        agree = _ensemble_agreement({n: candidates[n] for n in cands})
        order = sorted(cands, key=lambda n: (-agree[n], cands.index(n)))  # ties: listed first
        return order[:k]

    def safe(proposal: Selection, committee: Sequence[str], why: str) -> tuple[tuple[str, ...], str]:
        sc = safe_choice(proposal, baseline, fallback="ensemble", committee=committee)
        return (tuple(names) if sc.chosen == "ensemble" else (sc.chosen,)), why + sc.reason

    if policy == "always_source_only":
        return (baseline,), "the baseline"
    if policy == "always_ensemble":
        return tuple(names), f"the ensemble of all {len(names)} candidates"
    if policy == "ensv_top_half":
        k = math.ceil(len(names) / 2)
        return tuple(top(names, k)), f"the ensemble of the {k} candidates that agree most with the ensemble of all"
    if policy == "ensv_top3":
        return tuple(top(names, min(3, len(names)))), "the ensemble of the 3 candidates that agree most with the ensemble of all"
    if policy == "ensv_trimmed":
        half = top(names, math.ceil(len(names) / 2))
        k = math.ceil(len(half) / 2)
        return tuple(top(half, k)), (f"the ensemble of the {k} candidates that agree most with the ensemble of the "
                                     f"{len(half)} that agree most with the ensemble of all")
    if policy in ("restyled_val_top3", "restyled_val_top_half"):
        sc = selection.scores.get("restyled_val") or _restyled_val(candidates)
        k = 3 if policy.endswith("top3") else math.ceil(len(names) / 2)
        order = sorted(names, key=lambda n: (-sc[n], names.index(n)))[:k]
        return tuple(order), f"the ensemble of the {k} candidates with the best restyled source-validation score"
    if policy in _SAFE_POLICIES:
        proposer, committee = _SAFE_POLICIES[policy]
        scores = dict(selection.scores)
        if proposer not in scores:
            scores[proposer] = validator_scores(candidates, [proposer])[proposer]
        choices = {**selection.choices, proposer: best_of(scores[proposer], names)}
        return safe(Selection(scores=scores, validator=proposer, chosen=choices[proposer], choices=choices),
                    committee, "")
    if policy in _ONE_SE_POLICIES:
        scores = dict(selection.scores)
        for v in ("restyled_val", "ensv"):
            if v not in scores:
                scores[v] = validator_scores(candidates, [v])[v]
        pick, why = one_se_choice(candidates, scores["restyled_val"], scores["ensv"])
        committee = _ONE_SE_POLICIES[policy]
        if committee is None:
            return (pick,), why
        return safe(Selection(scores=scores, validator="restyled_val", chosen=pick, choices=selection.choices),
                    committee, f"{why}; ")
    if policy in selection.choices:
        return (selection.choices[policy],), f"{policy}'s choice"
    raise DataError(f"unknown deployment policy {policy!r}; known: {[*POLICIES, *selection.choices]}")

#: The policy ``selected`` / ``auto`` deploys by default (:func:`deploy_policy`): the restyled
#: source-validation score proposes; the proposal is deployed only when it and EnsV both score
#: it above source-only by :data:`SAFETY_MARGIN` of their range, else the ensemble of all
#: candidates. Development seeds (benchmarks/efficacy/dev-verges/policies.md: the pool with
#: ``augment[lr_mult=1]`` and ``augment[lr_mult=2]``, dashcam with verges, 10 benchmark x seed
#: points): mean regret radiograph 0.010, dashcam 0.000, digits 0.002, no point below
#: source-only; MixVal proposing 0.001 / 0.052 / 0.493; the one-standard-error rule
#: (``restyled_val_1se>ensv_safe``) 0.018 / 0.000 / 0.011 (on radiograph, where the restyled
#: score's standard error is about 0.04, EnsV's pick among the near-ties scored lower). The
#: safety vote never fired there; it is kept for shifts where the restyling misleads. With frame
#: matching and the acquisition candidates (benchmarks/efficacy/dev-frame/policies.md, 12 points):
#: 0.015 / 0.001 / 0.018, gap closed 61 % / 38 % / 89 %; the vote fired once (radiograph seed 101,
#: regret 0.053). The top-3 ensemble (``restyled_val_top3``) scored 0.003 / 0.004 / 0.001 on this
#: pool but 0.031 / 0.013 / 0.016 and 0.020 / 0.003 / 0.091 on the two pools before: not adopted.
DEPLOY_POLICY = "restyled_val>ensv_safe"
#: Every policy :func:`deploy_policy` knows besides a single validator's choice.
POLICIES = (*BASELINE_POLICIES, *_SAFE_POLICIES, *_ONE_SE_POLICIES)


def deployed_label(members: Sequence[str], pool: Sequence[str]) -> str:
    """How a deployment is named in reports: the candidate, ``ensemble`` when every candidate of
    ``pool`` votes, or ``ensemble(a+b+c)`` for a subset."""
    if len(members) == 1:
        return members[0]
    return "ensemble" if set(members) == set(pool) else "ensemble(" + "+".join(members) + ")"
