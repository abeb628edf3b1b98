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
- ``mixval``: mixed samples as probes (MixVal, Hu et al. 2023, NeurIPS, "Mixed Samples as
  Probes for Unsupervised Model Selection in Domain Adaptation"; port of
  github.com/LHXXHB/MixVal ``val_mixval_intra.py`` / ``val_mixval_inter.py``). Target images
  are mixed in pairs with a fixed weight (0.55) and the model's accuracy on the mixtures against
  the mixed pseudo-labels is measured, once for pairs of the same pseudo-class (intra-cluster)
  and once for pairs of different pseudo-classes (inter-cluster). A model that is confidently
  wrong on a region of the target cannot keep its mixtures consistent, which entropy rewards.
  Its two scores need the model (:func:`mixval_probes`), so they are stored in
  :class:`CandidateOutputs`; the validator takes the mean of their ranks over the candidates.
- ``restyled_val``: the candidate's score on a pseudo-target validation set: the labelled
  source validation images restyled toward unlabelled target images (Fourier amplitude swap,
  histogram matching or pixel-distribution matching, one at random per image, fixed seed), so
  the labels are the source's and the look is the target's. It measures what an acquisition
  shift (scanner, camera, contrast) costs a candidate, not a change of content; it is measured
  while the model exists and stored in :class:`CandidateOutputs` (``restyled_val_score``).
- ``rank_mean``: the mean rank of ``source_val``, ``dev`` and ``ensv`` (an ensemble of validators).

:func:`safe_choice` adds a safety rule on top of a :class:`Selection`: it keeps the chosen
candidate only when a committee of validators agrees that it beats the baseline (source-only)
by a margin, and otherwise falls back (to the baseline, or to the ensemble of the candidates),
saying why.

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

__all__ = ["CandidateOutputs", "DEFAULT_VALIDATOR", "MIXVAL_LAMBDA", "SafeChoice", "Selection", "VALIDATORS",
           "candidate_outputs_from_predictions", "mixval_probes", "safe_choice", "select", "validator_scores"]

#: The validator `select` uses by default: it proposes, and :data:`DEPLOY_POLICY` decides. How
#: it was chosen (development data only, benchmarks/efficacy/dev-pool/policies.md: the derived
#: pool, radiograph seeds 102-103, dashcam 102-104, digits 100-104): the lowest worst-case mean
#: regret (restyled_val 0.010 / 0.001 / 0.000; EnsV 0.006 / 0.025 / 0.323; MixVal
#: 0.001 / 0.019 / 0.463, MixVal choosing source-only on most digits seeds).
#: Its known bias: the restyling it validates with is the one target-style augmentation trains
#: with, so it favours that candidate; EnsV's vote in :data:`DEPLOY_POLICY` is the check.
DEFAULT_VALIDATOR = "restyled_val"


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
        mixval_intra, mixval_inter: MixVal's intra- / inter-cluster probe accuracies in [0, 1]
            (:func:`mixval_probes`); NaN when not measured (the ``mixval`` validator then
            refuses to score).
        restyled_val_score: the source validation score (AUROC / accuracy / mIoU) on the
            source validation images restyled toward unlabelled target images (a pseudo-target
            validation set); NaN when not measured (the ``restyled_val`` validator then refuses).
        restyled_val_se: its bootstrap standard error over the validation images; NaN when not measured.
    """

    source_val_loss: np.ndarray
    source_val_score: float
    source_features: np.ndarray
    source_val_features: np.ndarray
    target_features: np.ndarray
    target_proba: np.ndarray
    target_pred: np.ndarray
    mixval_intra: float = math.nan
    mixval_inter: float = math.nan
    restyled_val_score: float = math.nan
    restyled_val_se: float = math.nan

    def to_arrays(self) -> dict[str, np.ndarray]:
        """The fields as arrays (for ``np.savez``)."""
        return {k: np.asarray(getattr(self, k)) for k in self.__dataclass_fields__}

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, Any]) -> CandidateOutputs:
        optional = ("mixval_intra", "mixval_inter", "restyled_val_score", "restyled_val_se")  # older outputs lack them
        missing = [k for k in cls.__dataclass_fields__ if k not in arrays and k not in optional]
        if missing:
            raise DataError(f"candidate outputs lack {missing}")
        kw = {k: np.asarray(arrays[k]) for k in cls.__dataclass_fields__ if k in arrays}
        for k in ("source_val_score", *optional):
            if k in kw:
                kw[k] = float(kw[k])
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


def _miou(a: np.ndarray, b: np.ndarray, k: int) -> float:
    cm = np.bincount(a * k + b, minlength=k * k).reshape(k, k)
    inter = np.diag(cm).astype(float)
    union = cm.sum(0) + cm.sum(1) - inter
    present = union > 0
    return float((inter[present] / union[present]).mean()) if present.any() else float("nan")


#: MixVal's fixed mixing weight (the official code's ``--lam`` default, 0.55: the mixture's
#: pseudo-label is the first image's, and the second image is a strong perturbation).
MIXVAL_LAMBDA = 0.55


def mixval_probes(predict: Callable[[np.ndarray], np.ndarray], images: np.ndarray,
                  pseudo: np.ndarray | None = None, *, lam: float = MIXVAL_LAMBDA, batch_size: int = 128,
                  seed: int = 0) -> dict[str, float]:
    """MixVal's intra- and inter-cluster probe accuracies of one model on unlabelled target images.

    A port of ``mixval()`` in github.com/LHXXHB/MixVal (``val_mixval_inter.py`` and
    ``val_mixval_intra.py``): the target images in a (seeded) shuffled order are cut into
    batches of ``batch_size``; image ``i`` of a batch is mixed with image ``B-1-i`` of the same
    batch (the official ``torch.arange(B).flip(0)`` pairing), ``x = lam*x_a + (1-lam)*x_b``, and
    the mixture's label is ``argmax(lam*onehot(pl_a) + (1-lam)*onehot(pl_b))``. Inter-cluster:
    the accuracy of the model's argmax on the mixtures of pairs whose pseudo-labels differ, in
    the shuffled order. Intra-cluster: the same for pairs whose pseudo-labels agree, with the
    images first sorted by pseudo-label (the official code re-orders the target list by
    predicted class so that most pairs share one).

    Segmentation (not in the paper; shiftkit's extension): pseudo-labels are per-pixel maps,
    pairs are formed in the shuffled order only, and a pixel counts as intra- or inter-cluster
    by whether the two images' pseudo-labels agree at that pixel.

    Args:
        predict: ``predict(x)`` with ``x`` a float32 batch ``(B, C, H, W)`` (the model's own
            input scale) -> class probabilities or logits ``(B, K)`` or ``(B, K, H, W)``.
            Only the argmax is read.
        images: ``(N, C, H, W)`` unlabelled target images.
        pseudo: ``(N,)`` or ``(N, H, W)`` the model's hard predictions on ``images`` (computed
            with ``predict`` when not given).
        lam: mixing weight in (0.5, 1).
        batch_size: the official default is 128.
        seed: the order of the "shuffled target list".

    Returns:
        ``{"intra": float, "inter": float, "n_intra": int, "n_inter": int}``: accuracies in
        [0, 1] (NaN when no pair of that kind exists) and how many samples / pixels each counts.
    """
    if not 0.5 < lam < 1:
        raise DataError(f"mixval lam must be in (0.5, 1), got {lam}")
    x = np.asarray(images, np.float32)
    if x.ndim != 4 or len(x) < 2:
        raise DataError(f"mixval needs (N, C, H, W) images with N >= 2, got shape {x.shape}")

    def hard(batch: np.ndarray) -> np.ndarray:
        return np.asarray(predict(batch)).argmax(1)

    if pseudo is None:
        pseudo = np.concatenate([hard(x[i:i + batch_size]) for i in range(0, len(x), batch_size)])
    pseudo = np.asarray(pseudo).astype(np.int64)
    order = np.random.default_rng(seed).permutation(len(x))
    seg = pseudo.ndim == 3
    counts = {"intra": [0, 0], "inter": [0, 0]}  # [correct, total]
    orders = {"inter": order} if seg else {"inter": order,
                                           "intra": order[np.argsort(pseudo[order], kind="stable")]}
    for kind, idx in orders.items():
        for start in range(0, len(idx), batch_size):
            a = idx[start:start + batch_size]
            b = a[::-1]
            mixed = lam * x[a] + (1 - lam) * x[b]
            pred = hard(mixed)
            pl_a, pl_b = pseudo[a], pseudo[b]
            # argmax of lam*onehot(a) + (1-lam)*onehot(b) with lam > 0.5 is pl_a
            ok = pred == pl_a
            same = pl_a == pl_b
            if seg:
                for k, sel in (("intra", same), ("inter", ~same)):
                    counts[k][0] += int(ok[sel].sum())
                    counts[k][1] += int(sel.sum())
            else:
                sel = same if kind == "intra" else ~same
                counts[kind][0] += int(ok[sel].sum())
                counts[kind][1] += int(sel.sum())
    return {"intra": counts["intra"][0] / counts["intra"][1] if counts["intra"][1] else math.nan,
            "inter": counts["inter"][0] / counts["inter"][1] if counts["inter"][1] else math.nan,
            "n_intra": counts["intra"][1], "n_inter": counts["inter"][1]}


def _mixval(cands: Mapping[str, CandidateOutputs]) -> dict[str, float]:
    names = list(cands)
    missing = [n for n in names if not (np.isfinite(cands[n].mixval_intra) or np.isfinite(cands[n].mixval_inter))]
    if missing:
        raise DataError(f"mixval: candidates {missing} have no MixVal probe scores "
                        "(compute them with shiftkit.evaluation.selection.mixval_probes while the model exists)")
    # The two probe accuracies are combined by the mean of their ranks over the candidates
    # (scale-free; a candidate without pairs of one kind is ranked on the other alone).
    ranks = [_ranks({n: getattr(cands[n], f) for n in names}) for f in ("mixval_intra", "mixval_inter")]
    out = {}
    for n in names:
        r = [rk[n] for rk, f in zip(ranks, ("mixval_intra", "mixval_inter"), strict=True)
             if np.isfinite(getattr(cands[n], f))]
        out[n] = float(np.mean(r))
    return out


def _restyled_val(cands: Mapping[str, CandidateOutputs]) -> dict[str, float]:
    missing = [n for n, c in cands.items() if not np.isfinite(c.restyled_val_score)]
    if missing:
        raise DataError(f"restyled_val: candidates {missing} have no restyled source-validation score "
                        "(measure it while the model exists: shiftkit.adapt.harness.auto_select.candidate_outputs)")
    return {n: float(c.restyled_val_score) for n, c in cands.items()}


def _per_candidate(fn: Callable[[CandidateOutputs], float]) -> Callable[[Mapping[str, CandidateOutputs]], dict[str, float]]:
    return lambda cands: {n: float(fn(c)) for n, c in cands.items()}


VALIDATORS: dict[str, Callable[[Mapping[str, CandidateOutputs]], dict[str, float]]] = {
    "source_val": _per_candidate(lambda c: c.source_val_score),
    "iwcv": _per_candidate(lambda c: -iwcv_risk(c.source_val_loss, _density_weights(c))["risk"]),
    "dev": _per_candidate(lambda c: -dev_risk(c.source_val_loss, _density_weights(c))["risk"]),
    "entropy": _per_candidate(lambda c: -prediction_entropy(c.target_proba)),
    "snd": _per_candidate(lambda c: soft_neighborhood_density(c.target_proba)),
    "ensv": _ensemble_agreement,
    "mixval": _mixval,
    "restyled_val": _restyled_val,
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
    if validators is None:
        names = [*VALIDATORS, "rank_mean"]
        if not all(np.isfinite(c.mixval_intra) or np.isfinite(c.mixval_inter) for c in candidates.values()):
            names.remove("mixval")  # outputs without probe scores: every other validator still runs
        if not all(np.isfinite(c.restyled_val_score) for c in candidates.values()):
            names.remove("restyled_val")
    else:
        names = list(validators)
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


def best_of(scores: Mapping[str, float], names: Sequence[str]) -> str:
    """The name with the highest finite score (ties: listed first; NaN never wins)."""
    vals = np.array([scores[n] if np.isfinite(scores[n]) else -np.inf for n in names])
    return names[int(np.argmax(vals))]


def select(candidates: Mapping[str, CandidateOutputs], validator: str = DEFAULT_VALIDATOR,
           validators: Sequence[str] | None = None) -> Selection:
    """Score ``candidates`` ({name: CandidateOutputs}) with every validator and choose with ``validator``.

    Uses only source labels and unlabelled target data. Ties go to the candidate listed first.
    """
    if validators is None:
        scores = validator_scores(candidates)
        if validator not in scores:
            scores[validator] = validator_scores(candidates, [validator])[validator]
    else:
        names = list(validators) + ([validator] if validator not in validators else [])
        scores = validator_scores(candidates, names)
    choices = {v: best_of(sc, list(candidates)) for v, sc in scores.items()}
    return Selection(scores=scores, validator=validator, chosen=choices[validator], choices=choices)


#: Validators whose agreement :func:`safe_choice` requires by default (each one that was
#: computed votes): MixVal (built to resist confident wrong answers) and EnsV (agreement with the
#: candidates' average; never rewards a collapse). Chosen on development seeds with
#: :data:`SAFETY_MARGIN` (benchmarks/efficacy/dev/safety_rule.md): adding entropy changed nothing
#: there; EnsV is the vote that stopped MixVal's SHOT choice on radiograph. The deployment
#: policies name their own committees (:func:`deploy_policy`).
SAFETY_COMMITTEE = ("mixval", "ensv")
#: Smallest lead over the baseline, as a share of the validator's score range over the
#: candidates, that counts as "confidently better". Development seeds: 0.1 -> mean regret 0.020,
#: no point below source-only; 0.0 -> 0.033, one point (radiograph 101, SHOT) below.
SAFETY_MARGIN = 0.1


@dataclass(frozen=True)
class SafeChoice:
    """What :func:`safe_choice` decided.

    Attributes:
        chosen: what to deploy: the proposed candidate, or ``fallback`` when the rule fired.
        proposed: the selecting validator's choice.
        fell_back: whether the rule replaced ``proposed`` by the fallback.
        reason: one sentence saying why (reported in metrics.json and the efficacy table).
        leads: per committee validator, the proposed candidate's lead over the baseline as a
            share of that validator's score range over the candidates (> 0: it prefers the
            proposed one).
    """

    chosen: str
    proposed: str
    fell_back: bool
    reason: str
    leads: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"chosen": self.chosen, "proposed": self.proposed, "fell_back": self.fell_back,
                "reason": self.reason, "leads": dict(self.leads)}


def safe_choice(selection: Selection, baseline: str, *, fallback: str | None = None,
                committee: Sequence[str] = SAFETY_COMMITTEE, margin: float = SAFETY_MARGIN) -> SafeChoice:
    """Keep the selected candidate only when it is confidently better than ``baseline``.

    The rule (label-free: it reads validator scores only): every validator of ``committee``
    that was computed in ``selection`` must score the proposed candidate above ``baseline`` by
    more than ``margin`` x (its score range over the candidates). Otherwise -- the validators
    disagree, or the lead is within the margin -- the result is ``fallback`` (default: the
    baseline itself; pass the name of the candidates' ensemble to fall back to it).

    Args:
        selection: the scores of every candidate, including ``baseline``.
        baseline: the candidate that does no harm by construction (source-only).
        fallback: what to deploy when the rule fires (default ``baseline``).
        committee: the validators that vote; those absent from ``selection.scores`` are skipped.
        margin: required lead, as a share of each validator's score range (0 = any lead).
    """
    names = list(next(iter(selection.scores.values())))
    if baseline not in names:
        raise DataError(f"safe_choice: baseline {baseline!r} is not a candidate ({names})")
    fallback = fallback or baseline
    proposed = selection.chosen
    if proposed == baseline:
        return SafeChoice(baseline, proposed, False, f"{selection.validator} prefers the baseline {baseline}")
    voters = [v for v in committee if v in selection.scores]
    if not voters:
        raise DataError(f"safe_choice: none of the committee validators {list(committee)} was computed")
    leads: dict[str, float] = {}
    for v in voters:
        sc = selection.scores[v]
        vals = np.array([sc[n] for n in names], float)
        span = float(np.ptp(vals[np.isfinite(vals)])) if np.isfinite(vals).any() else 0.0
        lead = float(sc[proposed] - sc[baseline])
        leads[v] = lead / span if span > 0 and np.isfinite(lead) else (0.0 if lead == 0 or span == 0 else math.nan)
    against = [v for v, lead in leads.items() if not (np.isfinite(lead) and lead > margin)]
    if against:
        why = ", ".join(f"{v} (lead {leads[v]:+.2f})" for v in against)
        return SafeChoice(fallback, proposed, True,
                          f"{proposed} is not confidently better than {baseline} by {why} "
                          f"(margin {margin:.2f} of each score range); deploying {fallback}", leads)
    return SafeChoice(proposed, proposed, False,
                      f"every committee validator ({', '.join(voters)}) scores {proposed} above {baseline} "
                      f"by more than {margin:.2f} of its range", leads)
