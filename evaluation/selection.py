"""Label-free model selection: choose among trained candidates without target labels.

Each candidate (a method with its settings) is described by what a deployment has: labelled
source validation data and unlabelled target data, both passed through the candidate's model
(:class:`CandidateOutputs`). A *validator* turns that into one score per candidate, higher =
better; :func:`select` applies several validators and :meth:`Selection.evaluate` checks them
against true target scores where labels exist (the embedded benchmarks), with Spearman rank
correlation and regret (best candidate's true score minus the chosen one's).

Validators (``VALIDATORS``):

- ``source_val``: source validation score (AUROC / mIoU). Ignores the shift.
- ``iwcv``: minus importance-weighted source-validation loss (Sugiyama et al. 2007), weights
  ``p_t/p_s`` from a logistic domain classifier in the candidate's own feature space.
- ``dev``: minus the Deep Embedded Validation risk (You et al. 2019): IWCV with a control variate.
- ``entropy``: minus the mean target prediction entropy (Morerio et al. 2018).
- ``snd``: soft neighbourhood density of target predictions (Saito et al. 2021).
- ``ensv``: ensemble agreement (EnsV, Hu et al. 2024, "Towards reliable model selection for
  unsupervised domain adaptation"): the average prediction of all candidates is a role model
  that is, in expectation, at least as good as the average candidate; each candidate is scored
  by how well its target predictions agree with it (Spearman of the positive-class score for
  binary tasks, where the metric is a ranking metric; accuracy / mIoU of the hard predictions
  otherwise). It needs no density ratio and no threshold, and it never prefers a candidate
  that collapses to confident wrong answers, which is where entropy and SND fail.
- ``rank_mean``: the mean rank of ``source_val``, ``dev`` and ``ensv`` (an ensemble of validators).

``evaluation`` never imports ``shiftkit.adapt``: the arrays come from whoever trained the models.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from shiftkit.datasets.errors import DataError

from .metrics import confusion_matrix_seg, miou_from_confusion
from .risk import classifier_density_ratio, dev_risk, iwcv_risk, prediction_entropy, soft_neighborhood_density

__all__ = ["CandidateOutputs", "Selection", "VALIDATORS", "DEFAULT_VALIDATOR", "candidate_outputs_from_predictions", "select",
           "validator_scores"]

#: The validator `select` uses by default. How it was chosen (dev data): the validator with the
#: lowest mean regret over the 8-candidate grid of both embedded benchmarks on development data
#: seeds 100 and 101 (benchmarks/efficacy/dev): entropy 0.029 (max 0.035), ensv 0.031 (max
#: 0.049; best mean Spearman, 0.38), rank_mean 0.050, snd 0.053, dev 0.056, iwcv 0.062,
#: source_val 0.073. Never chosen on test data seeds.
DEFAULT_VALIDATOR = "entropy"


@dataclass
class CandidateOutputs:
    """What one trained candidate produces on label-free inputs.

    Attributes:
        source_val_loss: (n_val,) per-sample cross-entropy on labelled SOURCE validation data
            (segmentation: averaged over each image's pixels).
        source_val_score: source validation AUROC (classification) or mIoU (segmentation).
        source_features: (n_s, D) features of source images (density-ratio fit).
        source_val_features: (n_val, D) features of the source validation images.
        target_features: (n_t, D) features of unlabelled target images.
        target_proba: (n_t, K) target class probabilities (segmentation: a fixed sample of
            pixels, (P, K), the same pixels for every candidate).
        target_pred: (n_t,) or (n_t, H, W) hard target predictions (argmax).
    """

    source_val_loss: np.ndarray
    source_val_score: float
    source_features: np.ndarray
    source_val_features: np.ndarray
    target_features: np.ndarray
    target_proba: np.ndarray
    target_pred: np.ndarray

    def to_arrays(self) -> dict[str, np.ndarray]:
        """The fields as arrays (for ``np.savez``)."""
        return {k: np.asarray(getattr(self, k)) for k in self.__dataclass_fields__}

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, Any]) -> CandidateOutputs:
        missing = [k for k in cls.__dataclass_fields__ if k not in arrays]
        if missing:
            raise DataError(f"candidate outputs lack {missing}")
        kw = {k: np.asarray(arrays[k]) for k in cls.__dataclass_fields__}
        kw["source_val_score"] = float(kw["source_val_score"])
        return cls(**kw)


def candidate_outputs_from_predictions(
    source_val_proba: Any, source_val_features: Any, source_val_labels: Any, source_features: Any,
    target_proba: Any, target_features: Any, task: str, *, pixel_sample: int = 4000, ignore_index: int = -1,
) -> CandidateOutputs:
    """The one computation of a candidate's :class:`CandidateOutputs` from its predictions.

    source_val_proba: ``(n_val, K)`` (segmentation ``(n_val, K, H, W)``) probabilities on
    labelled source validation images, ``source_val_labels`` ``(n_val,)`` int (segmentation
    ``(n_val, H, W)``); pixels equal to ``ignore_index`` carry no loss and are left out of the
    mIoU. source_val_features / source_features / target_features: ``(n, D)``. target_proba:
    ``(n_t, K)`` (segmentation ``(n_t, K, H, W)``; a fixed sample of ``pixel_sample`` pixels,
    the same for every candidate, is kept for entropy and SND).
    """
    from .metrics import auroc, segmentation_metrics

    p_val = np.clip(np.asarray(source_val_proba, np.float64), 1e-12, 1.0)
    y = np.asarray(source_val_labels).astype(np.int64)
    p_t = np.asarray(target_proba)
    if task == "classification":
        loss = -np.log(p_val[np.arange(len(y)), y])
        score = auroc(y, p_val)[0]
        t_proba, t_pred = p_t, p_t.argmax(1)
    else:
        valid = y != ignore_index  # unlabelled pixels carry no loss
        lp = np.log(np.take_along_axis(p_val, np.where(valid, y, 0)[:, None], 1)[:, 0])
        loss = -(np.where(valid, lp, 0).reshape(len(y), -1).sum(1) / np.maximum(valid.reshape(len(y), -1).sum(1), 1))
        score = segmentation_metrics(y, p_val.argmax(1), p_val.shape[1], ignore_index=ignore_index)["miou"]
        n, _, h, w = p_t.shape
        pix = np.random.default_rng(0).integers(0, [n, h, w], size=(pixel_sample, 3))
        t_proba = p_t[pix[:, 0], :, pix[:, 1], pix[:, 2]]
        t_pred = p_t.argmax(1).astype(np.uint8)
    return CandidateOutputs(
        source_val_loss=np.asarray(loss, np.float32), source_val_score=float(score),
        source_features=np.asarray(source_features, np.float32),
        source_val_features=np.asarray(source_val_features, np.float32),
        target_features=np.asarray(target_features, np.float32), target_proba=np.asarray(t_proba, np.float32),
        target_pred=np.asarray(t_pred))


def _density_weights(c: CandidateOutputs) -> np.ndarray:
    # In the candidate's own feature space, as DEV prescribes; clipped at 20 (the default of
    # classifier_density_ratio, from the DEV paper's practice of bounding the ratio).
    return classifier_density_ratio(c.source_features, c.target_features, c.source_val_features)


def _ensemble_agreement(cands: Mapping[str, CandidateOutputs]) -> dict[str, float]:
    from scipy.stats import spearmanr

    names = list(cands)
    probas = [np.asarray(cands[n].target_proba, float) for n in names]
    preds = [np.asarray(cands[n].target_pred) for n in names]
    binary = preds[0].ndim == 1 and probas[0].shape[1] == 2
    out: dict[str, float] = {}
    if binary:
        role = np.mean([p[:, 1] for p in probas], axis=0)
        for n, p in zip(names, probas, strict=True):
            out[n] = float(spearmanr(p[:, 1], role).statistic) if np.ptp(p[:, 1]) > 0 else -1.0
        return out
    k = max(int(max(int(p.max()) for p in preds)) + 1, probas[0].shape[1])
    votes = np.zeros((k, *preds[0].shape), dtype=np.int32)
    for p in preds:
        np.add.at(votes, (p.astype(np.int64), *np.indices(p.shape)), 1)
    role_pred = votes.argmax(0)
    for n, p in zip(names, preds, strict=True):
        out[n] = miou_from_confusion(confusion_matrix_seg(role_pred, p, k)) if p.ndim > 1 else float((p == role_pred).mean())
    return out


def _per_candidate(fn: Callable[[CandidateOutputs], float]) -> Callable[[Mapping[str, CandidateOutputs]], dict[str, float]]:
    return lambda cands: {n: float(fn(c)) for n, c in cands.items()}


VALIDATORS: dict[str, Callable[[Mapping[str, CandidateOutputs]], dict[str, float]]] = {
    "source_val": _per_candidate(lambda c: c.source_val_score),
    "iwcv": _per_candidate(lambda c: -iwcv_risk(c.source_val_loss, _density_weights(c))["risk"]),
    "dev": _per_candidate(lambda c: -dev_risk(c.source_val_loss, _density_weights(c))["risk"]),
    "entropy": _per_candidate(lambda c: -prediction_entropy(c.target_proba)),
    "snd": _per_candidate(lambda c: soft_neighborhood_density(c.target_proba)),
    "ensv": _ensemble_agreement,
}
_RANK_MEAN_OF = ("source_val", "dev", "ensv")


def _ranks(scores: Mapping[str, float]) -> dict[str, float]:
    from scipy.stats import rankdata

    names = list(scores)
    vals = np.array([scores[n] if np.isfinite(scores[n]) else -np.inf for n in names])
    return dict(zip(names, rankdata(vals).tolist(), strict=True))


def validator_scores(candidates: Mapping[str, CandidateOutputs],
                     validators: Sequence[str] | None = None) -> dict[str, dict[str, float]]:
    """{validator: {candidate: score}} (higher = better) for the named validators (all by default,
    plus ``rank_mean``)."""
    if len(candidates) < 2:
        raise DataError(f"model selection needs at least 2 candidates, got {len(candidates)}")
    names = list(validators) if validators is not None else [*VALIDATORS, "rank_mean"]
    unknown = [v for v in names if v not in VALIDATORS and v != "rank_mean"]
    if unknown:
        raise DataError(f"unknown validator(s) {unknown}; known: {[*VALIDATORS, 'rank_mean']}")
    needed = set(names) | (set(_RANK_MEAN_OF) if "rank_mean" in names else set())
    out = {v: VALIDATORS[v](candidates) for v in VALIDATORS if v in needed}
    if "rank_mean" in names:
        ranks = [_ranks(out[v]) for v in _RANK_MEAN_OF]
        out["rank_mean"] = {n: float(np.mean([r[n] for r in ranks])) for n in candidates}
    return {v: out[v] for v in names}


@dataclass
class Selection:
    """Scores of every validator on every candidate, and each validator's choice."""

    scores: dict[str, dict[str, float]]
    validator: str
    chosen: str
    choices: dict[str, str] = field(default_factory=dict)

    def evaluate(self, true_scores: Mapping[str, float]) -> dict[str, dict[str, Any]]:
        """Check each validator against true target scores (higher = better; e.g. target AUROC).

        Returns {validator: {"choice", "spearman" (rank correlation of the validator's scores
        with the true ones; 1 = same order), "regret" (best true score minus the chosen
        candidate's true score; 0 = it picked the best)}}.
        """
        from scipy.stats import spearmanr

        missing = [n for n in next(iter(self.scores.values())) if n not in true_scores]
        if missing:
            raise DataError(f"true_scores lacks candidates {missing}")
        best = max(float(v) for v in true_scores.values())
        out: dict[str, dict[str, Any]] = {}
        for v, sc in self.scores.items():
            names = list(sc)
            a = np.array([sc[n] for n in names], float)
            b = np.array([true_scores[n] for n in names], float)
            ok = np.isfinite(a)
            rho = float(spearmanr(a[ok], b[ok]).statistic) if ok.sum() > 2 and np.ptp(a[ok]) > 0 else math.nan
            out[v] = {"choice": self.choices[v], "spearman": rho,
                      "regret": best - float(true_scores[self.choices[v]])}
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"validator": self.validator, "chosen": self.chosen, "choices": dict(self.choices),
                "scores": {v: dict(s) for v, s in self.scores.items()}}


def select(candidates: Mapping[str, CandidateOutputs], validator: str = DEFAULT_VALIDATOR,
           validators: Sequence[str] | None = None) -> Selection:
    """Score ``candidates`` ({name: CandidateOutputs}) with every validator and choose with ``validator``.

    Uses only source labels and unlabelled target data. Ties go to the candidate listed first.
    """
    names = list(validators) if validators is not None else [*VALIDATORS, "rank_mean"]
    if validator not in names:
        names.append(validator)
    scores = validator_scores(candidates, names)
    choices = {}
    for v, sc in scores.items():
        vals = np.array([sc[n] if np.isfinite(sc[n]) else -np.inf for n in candidates])
        choices[v] = list(candidates)[int(np.argmax(vals))]
    return Selection(scores=scores, validator=validator, chosen=choices[validator], choices=choices)
