"""`methods: [auto]`: label-free model selection among candidates inside `shiftkit run`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from shiftkit.adapt.job.config import DEFAULT_CANDIDATES, VALIDATOR_NAMES, RunConfig, parse_config
from shiftkit.datasets.errors import ConfigError

_HIDDEN = ("label", "mask", "labels", "masks")


class _NoLabels(dict):
    """A dataset item whose label and mask exist underneath but raise when read."""

    def __getitem__(self, key: Any) -> Any:
        if key in _HIDDEN:
            raise AssertionError(f"target {key!r} read during label-free selection")
        return super().__getitem__(key)

    def get(self, key: Any, default: Any = None) -> Any:
        return self[key] if key in self.keys() or key in _HIDDEN else default



class _GuardedTarget:
    """Wraps a LABELLED target dataset: images pass, any label or mask access raises."""

    def __init__(self, base: Any) -> None:
        self._base = base

    def __len__(self) -> int:
        return len(self._base)

    def __getitem__(self, i: int) -> _NoLabels:
        item = self._base[i]
        return _NoLabels({k: v for k, v in item.items() if k not in _HIDDEN})

    def __getattr__(self, name: str) -> Any:
        if name in _HIDDEN or name == "frame":
            raise AssertionError(f"target dataset .{name} read during label-free selection")
        return getattr(self._base, name)


def test_config_accepts_auto_and_its_selection_section() -> None:
    from shiftkit.adapt.harness.candidates import candidate_pool
    from shiftkit.adapt.harness.efficacy import candidates_for
    from shiftkit.evaluation.selection import DEFAULT_VALIDATOR, VALIDATORS

    config = parse_config({"methods": ["source_only", "auto"],
                           "selection": {"candidates": ["dann", "dann[lambda_max=0.3]", "augment"]}})
    assert config.methods == ["source_only", "auto"]
    assert config.selection.validator == DEFAULT_VALIDATOR
    defaults = RunConfig().selection
    # No list by default: `auto` and the harness's `selected` draw from the same derived pool.
    assert DEFAULT_CANDIDATES == tuple(defaults.candidates) == ()
    assert candidates_for("radiograph") == candidate_pool("classification", num_classes=2)
    assert set(VALIDATOR_NAMES) == {*VALIDATORS, "rank_mean"}
    from shiftkit.adapt.job.config import DEFAULT_POLICY, POLICY_NAMES
    from shiftkit.evaluation.policies import DEPLOY_POLICY, POLICIES

    assert POLICY_NAMES == POLICIES and DEFAULT_POLICY == DEPLOY_POLICY == defaults.policy
    for bad, where in (({"candidates": ["dann", "danm"]}, "danm"),
                       ({"candidates": ["dann", "target_oracle"]}, "target labels"),
                       ({"candidates": ["dann", "dann[lambda_max]"]}, "key=value"),
                       ({"candidates": ["dann", "dann"]}, "twice"),
                       ({"candidates": ["dann"]}, "selection.candidates"),
                       ({"validator": "oracle"}, "unknown validator")):
        with pytest.raises(ConfigError, match=where):
            parse_config({"methods": ["auto"], "selection": bad})


def _tiny(tmp_path: Path, candidates: list[str]) -> RunConfig:
    from shiftkit.adapt.cli.run import demo_config

    config = demo_config(True, out_dir=tmp_path)
    config.data.n_per_domain = 40
    config.data.image_size = 32
    config.train.epochs = 1
    config.evaluation.n_permutations = 50
    config.progress = False
    config.methods = ["source_only", "auto"]
    config.selection.candidates = candidates
    return config


def test_auto_chooses_label_free_and_reports_every_validator(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from shiftkit.adapt.harness import auto_select
    from shiftkit.adapt.job import pipeline
    from shiftkit.evaluation.selection import DEFAULT_VALIDATOR, CandidateOutputs, validator_scores

    # The target images selection reads keep their labels underneath, and reading one raises.
    split = pipeline.split_domains
    monkeypatch.setattr(pipeline, "split_domains", lambda *a, **k: _with_labels(split(*a, **k)))
    original = auto_select.candidate_outputs
    seen: list[int] = []

    def guarded(method: Any, source_val: Any, source_train: Any, target: Any, *a: Any, **k: Any) -> Any:
        assert "label" in target.frame.columns  # labels are there to be (not) read
        seen.append(len(target))
        return original(method, source_val, source_train, _GuardedTarget(target), *a, **k)

    monkeypatch.setattr(auto_select, "candidate_outputs", guarded)
    candidates = ["source_only", "augment", "dann[lambda_max=0.3]"]
    result = pipeline.run(_tiny(tmp_path, candidates))
    assert len(seen) == len(candidates)

    sel = result.selection
    assert sel is not None and list(sel.candidates) == candidates and sel.validator == DEFAULT_VALIDATOR
    # The choice is the argmax of the default validator, recomputed from the saved outputs.
    outputs = {c: CandidateOutputs.from_arrays(np.load(result.run_dir / sel.outputs[c])) for c in candidates}
    scores = validator_scores(outputs, [DEFAULT_VALIDATOR])[DEFAULT_VALIDATOR]
    assert sel.extra["proposed"] == max(candidates, key=lambda c: scores[c])
    assert sel.validators[DEFAULT_VALIDATOR]["score"] == pytest.approx(scores[sel.extra["proposed"]], rel=1e-6)
    # What is deployed is what the policy chooses from the same saved outputs (the safety rule,
    # a validator's choice or an ensemble of some candidates), named with its members and why.
    from shiftkit.evaluation.policies import DEPLOY_POLICY, deploy_policy, deployed_label
    from shiftkit.evaluation.selection import select

    assert sel.extra["policy"] == DEPLOY_POLICY
    members, why = deploy_policy(DEPLOY_POLICY, select(outputs, DEFAULT_VALIDATOR), outputs, baseline="source_only")
    assert sel.chosen == deployed_label(members, candidates) and sel.extra["members"] == list(members)
    assert sel.extra["why"] == why
    assert np.isfinite(sel.extra["ensemble_true_target"])
    # The chosen model is the run's `auto` method, scored and saved like the others.
    truth = sel.true_target
    auto_auroc = result.methods["auto"].target["auroc"]
    assert sel.extra["deployed_true_target"] == pytest.approx(auto_auroc, abs=1e-9)
    if len(members) == 1:
        assert truth[members[0]] == pytest.approx(auto_auroc, abs=1e-9)
    assert truth["source_only"] == pytest.approx(result.methods["source_only"].target["auroc"], abs=1e-9)
    assert (result.model_dir("auto") / "model.safetensors").is_file() or any(result.model_dir("auto").iterdir())
    # What auto deployed loads back, ensemble or single model, and predicts what the run scored.
    from shiftkit.adapt import load

    assert load(result.model_dir("auto")).predict(np.zeros((1, 1, 32, 32), np.float32)).proba.shape == (1, 2)
    # Every validator: its choice, regret from the true target scores, Spearman in [-1, 1] or nan.
    assert set(sel.validators) == set(VALIDATOR_NAMES)
    best = max(truth.values())
    for v, row in sel.validators.items():
        assert row["choice"] in candidates
        assert row["score"] == pytest.approx(sel.scores[v][row["choice"]])
        assert row["regret"] == pytest.approx(best - truth[row["choice"]]) and row["regret"] >= 0
        assert row["spearman"] is None or np.isnan(row["spearman"]) or -1 <= row["spearman"] <= 1
    html = result.report_path.read_text(encoding="utf-8")
    assert "Label-free model selection" in html and "dann[lambda_max=0.3]" in html and "safety rule" in html


def test_the_pool_is_every_label_free_method_that_can_do_the_task() -> None:
    from shiftkit.adapt.harness.candidates import candidate_pool
    from shiftkit.adapt.methods import Method, Requires
    from shiftkit.adapt.methods.registry import _REGISTERED, register

    cls_pool = candidate_pool("classification", num_classes=2)
    seg_pool = candidate_pool("segmentation", num_classes=9)
    assert cls_pool[0] == seg_pool[0] == "source_only"
    assert "target_oracle" not in cls_pool  # trains on target labels
    assert "cdan" in cls_pool and "cdan" not in seg_pool  # CDAN declares it cannot segment
    assert {"dann[lambda_max=0.3]", "augment[restyle_strength=0.5]"} <= set(cls_pool)  # their own grids

    @register("_pool_probe")
    class _Probe(Method):
        requires = Requires(source="labelled", target="unlabelled")
        selection_grid = ({}, {"lr": 0.01})

    try:
        assert candidate_pool("classification", num_classes=2)[-2:] == ("_pool_probe", "_pool_probe[lr=0.01]")
    finally:
        _REGISTERED.pop("_pool_probe")


def _with_labels(splits: Any) -> Any:
    splits.target_train = splits.target_train_labelled
    return splits


def test_auto_rejects_an_unknown_candidate_setting_before_training(tmp_path: Path) -> None:
    from shiftkit.adapt.job.pipeline import run

    config = _tiny(tmp_path, ["source_only", "dann[lamda_max=0.3]"])
    config.methods = ["auto"]
    with pytest.raises(ConfigError, match="lamda_max"):
        run(config)
    assert not (tmp_path / config.name / "checkpoints").exists()
