"""The ``auto`` method of a run config: label-free model selection inside ``shiftkit run``.

``methods: [auto]`` fits every ``selection.candidates`` entry (default: the pool of every
registered label-free method that can do the task, with the settings grid each declares,
:func:`shiftkit.adapt.harness.candidates.candidate_pool`) through the registry, as any other method,
describes each by what a deployment has -- labelled SOURCE validation data and UNLABELLED
target training images (:class:`shiftkit.evaluation.selection.CandidateOutputs`, with MixVal's
probe accuracies on the target images and the score on the source validation images restyled
toward them) -- and deploys what ``selection.policy`` chooses
(:func:`shiftkit.evaluation.policies.deploy_policy`; default ``DEPLOY_POLICY``: the restyled
source-validation score proposes, and the proposal is kept only when it and EnsV agree it beats
source-only, else the candidates' ensemble of averaged probabilities,
:func:`shiftkit.adapt.deploy.ensemble.fitted_ensemble`); ``metrics.json`` names what was deployed
and why. The choice never reads a target label: the
target images it sees are the target training split with its ``label`` and ``mask`` columns
removed. Target test labels are read afterwards, only to report how good each validator's
choice was (Spearman rank correlation with the true target metric, and regret = best
candidate's true target score minus the chosen one's).

Each candidate's outputs are saved under ``run_dir/selection/<candidate>.npz``
(``CandidateOutputs.to_arrays``), so the choice can be recomputed from the run folder.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from shiftkit.adapt.job.config import RunConfig
from shiftkit.adapt.job.data import test_labels
from shiftkit.adapt.methods.build import BuildContext
from shiftkit.adapt.methods.spec import parse_spec, slug
from shiftkit.datasets.errors import ConfigError
from shiftkit.datasets.files import atomic_write_npz

__all__ = ["candidate_outputs", "fit_auto", "parse_candidate", "slug"]


def parse_candidate(spec: str) -> tuple[str, dict[str, Any]]:
    """``name[key=value,...]`` -> ``(name, {key: value})`` (the one grammar,
    :func:`shiftkit.adapt.methods.spec.parse_spec`)."""
    return parse_spec(spec, "selection.candidates")


def _candidate_context(context: BuildContext, spec: str) -> BuildContext:
    """The build context of one candidate: its settings replace its section's (checked here,
    before anything trains: a key the section does not have is named)."""
    from pydantic import ValidationError

    name, params = parse_candidate(spec)
    child = copy.copy(context)
    child.name, child.method, child.overrides = f"auto_{slug(spec)}", name, params
    try:
        child.section()
    except ValidationError as exc:
        raise ConfigError("selection.candidates", [f"{spec!r}: {'.'.join(map(str, e['loc']))}: {e['msg']}"
                                                   for e in exc.errors()]) from None
    return child


class _ImagesOnly:
    """A view of a dataset that yields only each item's ``image`` (no label, no mask, however the
    underlying dataset was built)."""

    def __init__(self, base: Any) -> None:
        self.base = base

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {"image": self.base[i]["image"]}


def candidate_outputs(method: Any, source_val: Any, source_train: Any, target_unlabelled: Any,
                      task: str, num_classes: int, *, pixel_sample: int = 4000) -> Any:
    """A fitted candidate's :class:`~shiftkit.evaluation.selection.CandidateOutputs`.

    Reads labels of ``source_val`` only; ``source_train`` and ``target_unlabelled`` are passed
    through the model for features and probabilities (their labels are never read).
    Segmentation: the per-image source loss is the mean pixel cross-entropy and the target
    probabilities are a fixed sample of ``pixel_sample`` pixels (the same for every candidate).
    """
    from dataclasses import replace

    from shiftkit.adapt.training.data import ArrayDataset
    from shiftkit.evaluation.selection import candidate_outputs_from_predictions, mixval_probes
    from shiftkit.evaluation.statistics import bootstrap_se, metric_from_stats

    p_val, f_val = method.predict_proba_and_features(source_val)
    _, f_src = method.predict_proba_and_features(_ImagesOnly(source_train))
    p_t, f_t = method.predict_proba_and_features(_ImagesOnly(target_unlabelled))
    # MixVal predicts on mixtures of the target images: it needs the model, not stored outputs.
    images = np.stack([np.asarray(target_unlabelled[i]["image"], np.float32) for i in range(len(target_unlabelled))])
    probes = mixval_probes(lambda x: method.predict_proba_and_features(ArrayDataset(x))[0], images, p_t.argmax(1))
    labels = test_labels(source_val, task).astype(np.int64)
    out = candidate_outputs_from_predictions(p_val, f_val, labels, f_src, p_t, f_t, task, pixel_sample=pixel_sample)
    restyled = restyled_validation(source_val, images, task)
    p_r, _ = method.predict_proba_and_features(ArrayDataset(restyled))
    restyled_stats = _image_stats(labels, p_r, task, num_classes)
    return replace(out, mixval_intra=float(probes["intra"]), mixval_inter=float(probes["inter"]),
                   restyled_val_score=metric_from_stats(restyled_stats), restyled_val_se=bootstrap_se(restyled_stats))


def restyled_validation(source_val: Any, target_images: np.ndarray, task: str, *, seed: int = 0) -> np.ndarray:
    """The source validation images restyled toward the unlabelled ``target_images``
    ``(N_t, C, H, W)``: ``(N_val, C, H, W)`` float32 in [0, 1], the same for every candidate
    (fixed seed per image). The restyle is :func:`shiftkit.adapt.augment.restyle.target_restyle`
    (``"mixed"``: FDA, histogram or pixel-distribution matching at random, full strength),
    after a target image's flat borders are painted on (:class:`FrameMatch`; only when the
    target images have any), as target-style augmentation trains; geometry is untouched, so
    source labels and masks still hold."""
    from shiftkit.adapt.augment.framing import FrameMatch, measure_frames
    from shiftkit.adapt.augment.pipeline import Augmenter
    from shiftkit.adapt.augment.restyle import load_target_pool, target_restyle

    pool = load_target_pool(np.asarray(target_images, np.float32), max_images=256, seed=seed)  # target_restyle's own
    aug = target_restyle(pool, method="mixed", strength=1.0, seed=seed)
    frame = FrameMatch(measure_frames(pool))
    framing = Augmenter([frame], seed=seed, name="frame") if frame.any_frame else None
    out = []
    for i in range(len(source_val)):
        img = np.asarray(source_val[i]["image"], np.float32)  # (C, H, W)
        hwc = np.moveaxis(img, 0, -1)
        if framing is not None:
            hwc = np.asarray(framing(hwc, seed=i)["image"], np.float32).reshape(hwc.shape)
        r = np.asarray(aug(hwc, seed=i)["image"], np.float32)
        out.append(np.moveaxis(r if r.ndim == 3 else r[..., None], -1, 0))
    return np.clip(np.stack(out), 0.0, 1.0)


def _image_stats(labels: np.ndarray, proba: np.ndarray, task: str, num_classes: int) -> dict[str, np.ndarray]:
    """Per-image statistics (:mod:`shiftkit.evaluation.statistics`) of ``proba`` against ``labels``:
    binary AUROC, multi-class accuracy or segmentation mIoU, by ``metric_from_stats``."""
    from shiftkit.evaluation.metrics import segmentation_counts

    if task == "classification":
        if proba.shape[1] == 2:
            return {"label": labels, "score": proba[:, 1]}
        return {"label": labels, "pred": proba.argmax(1)}
    return {"counts": segmentation_counts(labels, proba.argmax(1), num_classes)}


def _true_score(method: Any, data: dict[str, Any], task: str, num_classes: int) -> float:
    """Target test score (AUROC, accuracy or mIoU, as the restyled score): for reporting the
    validators only."""
    from shiftkit.evaluation.statistics import metric_from_stats

    proba, _ = method.predict_proba_and_features(data["target_test"])
    return metric_from_stats(_image_stats(np.asarray(data["target_test_labels"]), proba, task, num_classes))


def fit_auto(config: RunConfig, data: dict[str, Any], fit: Callable[[str], Any], context: BuildContext,
             fit_built: Callable[[Any], Any], *, num_classes: int, run_dir: Path) -> tuple[Any, dict[str, Any]]:
    """Fit the candidates, choose one label-free; return (chosen fitted method, selection section).

    Args:
        fit: ``fit(name)``, the run's cached fit of a registered method with the run's own
            settings (a candidate without settings is that same model).
        context: the run's build context; a candidate with settings is built by its method's
            ``from_config`` with the settings replacing its section's.
        fit_built: fits a built method on the run's data (target labels hidden).
        data: the run's datasets (``source_train``, ``source_val``, ``target_train``
            (no label/mask columns), ``target_test`` and ``target_test_labels`` for reporting).
    """
    from shiftkit.adapt.deploy.ensemble import fitted_ensemble
    from shiftkit.adapt.harness.candidates import BASELINE, ENSEMBLE, candidate_pool
    from shiftkit.adapt.methods import get_method
    from shiftkit.evaluation.policies import deploy_policy, deployed_label
    from shiftkit.evaluation.selection import select

    sel = config.selection
    specs = list(sel.candidates) or list(candidate_pool(config.task, num_classes=num_classes))
    plans = []
    for spec in specs:  # every setting is checked before anything trains
        name, params = parse_candidate(spec)
        if get_method(name).requires.target == "labelled":
            raise ConfigError("selection.candidates", [f"{spec!r} trains on target labels; not a label-free candidate"])
        plans.append((spec, name, params, _candidate_context(context, spec)))
    fitted: dict[str, Any] = {}
    outputs: dict[str, Any] = {}
    for spec, name, params, child in plans:
        method = fit(name) if not params else fit_built(get_method(name).from_config(child))
        fitted[spec] = method
        outputs[spec] = candidate_outputs(method, data["source_val"], data["source_train"], data["target_train"],
                                          config.task, num_classes)
        atomic_write_npz(run_dir / "selection" / f"{slug(spec)}.npz", outputs[spec].to_arrays())
    choice = select(outputs, sel.validator)
    if BASELINE in outputs:
        members, why = deploy_policy(sel.policy, choice, outputs, baseline=BASELINE)
    else:  # no source-only among the user's candidates: nothing to compare with
        members, why = (choice.chosen,), f"{choice.validator}'s choice (no {BASELINE} among the candidates: no safety rule)"
    deployed = deployed_label(members, specs)
    # The ensemble of every candidate (averaged probabilities) is a reported row either way;
    # a deployed ensemble is built from its members' fitted models. Nothing trains.
    ensemble = fitted_ensemble(list(fitted.values()), config.task, num_classes)
    model = (fitted[members[0]] if len(members) == 1 else ensemble if deployed == ENSEMBLE
             else fitted_ensemble([fitted[m] for m in members], config.task, num_classes))
    # Target test labels from here on: reporting how each validator did, never the choice.
    truth = {spec: _true_score(m, data, config.task, num_classes) for spec, m in fitted.items()}
    evaluation = choice.evaluate(truth)
    section = {
        "validator": choice.validator,
        "chosen": deployed,
        "policy": sel.policy,
        "members": list(members),
        "why": why,
        "deployed_true_target": _true_score(model, data, config.task, num_classes),
        "proposed": choice.chosen,
        "safety": {"fell_back": members != (choice.chosen,), "reason": why},
        "ensemble_true_target": _true_score(ensemble, data, config.task, num_classes),
        "candidates": specs,
        "outputs": {spec: f"selection/{slug(spec)}.npz" for spec in specs},
        "true_metric": "target test " + ("miou" if config.task == "segmentation" else
                                         "auroc" if num_classes == 2 else "accuracy"),
        "true_target": truth,
        "validators": {v: {"choice": choice.choices[v], "score": float(choice.scores[v][choice.choices[v]]),
                           "spearman": evaluation[v]["spearman"], "regret": evaluation[v]["regret"]}
                       for v in choice.scores},
        "scores": {v: dict(s) for v, s in choice.scores.items()},
    }
    return model, section
