"""train.decision_threshold: a bad value is a clear config error; the model file carries the
threshold (old files without it predict at 0.5) and the predictor's labels follow it; a run
scores every binary method's test splits at the threshold chosen from source data."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from shiftkit.adapt import load, save_model
from shiftkit.adapt.job.config import DEFAULT_PROVENANCE, parse_config
from shiftkit.adapt.models.backbones import build_classifier
from shiftkit.adapt.training.data import ArrayDataset
from shiftkit.datasets.errors import ConfigError
from shiftkit.evaluation.thresholds import prior_threshold


@pytest.mark.parametrize("bad", [0, 1, 1.5, -0.2, "prior", "0.3", None, True])
def test_bad_decision_threshold_is_a_config_error_naming_the_field(bad) -> None:
    with pytest.raises(ConfigError, match=r"train\.decision_threshold: must be a number strictly between 0 and 1"):
        parse_config({"train": {"decision_threshold": bad}})


def test_decision_threshold_accepts_numbers_and_named_settings_and_has_a_provenance() -> None:
    for good in (0.3, "source_prior", "source_val"):
        assert parse_config({"train": {"decision_threshold": good}}).train.decision_threshold == good
    assert "dev data" in DEFAULT_PROVENANCE["train.decision_threshold"]


def _images(n: int = 40, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.random((n, 1, 32, 32)).astype("f4")


def _p1(model: torch.nn.Module, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return torch.softmax(model(torch.from_numpy(x)), 1)[:, 1].numpy()


def test_model_file_keeps_the_threshold_and_the_predictor_labels_follow_it(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = build_classifier("tiny", 1, 2).eval()
    x = _images()
    p1 = _p1(model, x)
    # a threshold that puts some images on the other side than 0.5 does
    t = float(np.quantile(p1, 0.25 if (p1 >= 0.5).mean() < 0.5 else 0.75))
    assert ((p1 >= t) != (p1 >= 0.5)).any()
    _, j = save_model(model, tmp_path / "m", target=ArrayDataset(x), decision_threshold=t)
    assert json.loads(j.read_text())["decision_threshold"] == t
    p = load(tmp_path / "m")
    assert p.decision_threshold == t
    pred = p.predict(x)
    np.testing.assert_array_equal(pred.label, (pred.proba[:, 1] >= t).astype(np.int64))
    assert pred.to_dict()["decision_threshold"] == t

    # from a fitted method's attribute, as a run saves it
    class Fitted:
        model_ = model
        decision_threshold_ = 0.3

    _, j2 = save_model(Fitted(), tmp_path / "m2", target=ArrayDataset(x))
    assert json.loads(j2.read_text())["decision_threshold"] == 0.3


def test_file_without_a_threshold_loads_with_one_half(tmp_path: Path) -> None:
    torch.manual_seed(1)
    model = build_classifier("tiny", 1, 2).eval()
    x = _images(seed=1)
    _, j = save_model(model, tmp_path / "old", target=ArrayDataset(x))
    assert "decision_threshold" not in json.loads(j.read_text())  # the format written before the setting
    p = load(tmp_path / "old")
    assert p.decision_threshold == 0.5
    pred = p.predict(x)
    np.testing.assert_array_equal(pred.label, (pred.proba[:, 1] >= 0.5).astype(np.int64))


def test_edited_threshold_is_refused_and_multiclass_files_take_none(tmp_path: Path) -> None:
    from shiftkit.adapt.deploy.model_format import ModelFileError

    torch.manual_seed(2)
    x = _images(seed=2)
    _, j = save_model(build_classifier("tiny", 1, 2).eval(), tmp_path / "m", target=ArrayDataset(x),
                      decision_threshold=0.4)
    side = json.loads(j.read_text())
    side["decision_threshold"] = 0.1
    j.write_text(json.dumps(side))
    with pytest.raises(ModelFileError, match="decision_threshold"):
        load(tmp_path / "m")
    with pytest.raises(ConfigError, match="decision_threshold"):
        save_model(build_classifier("tiny", 1, 3).eval(), tmp_path / "k3", target=ArrayDataset(x),
                   decision_threshold=0.4)
    save_model(build_classifier("tiny", 1, 3).eval(), tmp_path / "k3", target=ArrayDataset(x))
    assert load(tmp_path / "k3").decision_threshold is None  # argmax


@pytest.mark.parametrize("setting", [0.35, "source_prior"])
def test_run_scores_both_test_splits_at_the_source_threshold_and_saves_it(tmp_path: Path, setting) -> None:
    from shiftkit.adapt.cli.run import demo_config
    from shiftkit.adapt.job.pipeline import run

    config = demo_config(True, out_dir=tmp_path)
    config.data.n_per_domain = 40
    config.data.image_size = 32
    config.train.epochs = 1
    config.train.decision_threshold = setting
    config.evaluation.n_permutations = 50
    config.progress = False
    config.methods = ["source_only"]
    result = run(config)
    if setting == "source_prior":  # the share of class 1 in the source training split
        from shiftkit.adapt.job.data import domains_for, split_domains
        from shiftkit.datasets import load_manifest

        frame = load_manifest(result.run_dir / "data" / "manifest.csv")
        source, target = domains_for(config)
        expected = prior_threshold(split_domains(frame, source, target, config.data.seed).source_train["label"])
    else:
        expected = setting
    block = result.metrics["methods"]["source_only"]
    assert block["source"]["threshold"] == pytest.approx(expected)
    assert block["target"]["threshold"] == pytest.approx(expected)
    saved = load(result.run_dir / "models" / "source_only")
    assert saved.decision_threshold == pytest.approx(expected)


def test_source_val_setting_is_youdens_threshold_of_the_method_on_source_validation(caplog) -> None:
    import pandas as pd

    from shiftkit.adapt.job.config import RunConfig
    from shiftkit.adapt.job.pipeline import _set_threshold
    from shiftkit.evaluation.thresholds import youden_threshold

    rng = np.random.default_rng(0)
    y_val = rng.integers(0, 2, 60)
    q = np.clip(0.3 * y_val + 0.5 * rng.random(60), 0, 1)  # positives score higher, not perfectly

    class Fitted:
        def predict_proba(self, data):
            assert data is val  # the source validation split, never the target
            return np.stack([1 - q, q], 1)

    class Splits:
        source_train = pd.DataFrame({"label": [0, 0, 0, 1]})

    val = ArrayDataset(_images(60), labels=y_val)
    config = RunConfig(name="t")
    config.train.decision_threshold = "source_val"
    m = Fitted()
    _set_threshold(m, config, Splits(), {"source_val": val})
    assert m.decision_threshold_ == youden_threshold(y_val, q) != 0.5
    config.train.decision_threshold = "source_prior"
    _set_threshold(m, config, Splits(), {"source_val": val})
    assert m.decision_threshold_ == pytest.approx(0.25)
    Splits.source_train = pd.DataFrame({"label": [0, 0, 0]})  # one class: no prior to take
    with caplog.at_level("WARNING"):
        _set_threshold(m, config, Splits(), {"source_val": val})
    assert m.decision_threshold_ == 0.5 and "using 0.5" in caplog.text
