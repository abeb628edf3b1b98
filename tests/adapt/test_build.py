"""The one build path: settings under one name with one default, one grammar, and each caller's
recipe deciding only where a method starts."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from shiftkit.datasets.errors import ConfigError


def test_every_section_is_its_constructor_same_names_same_defaults() -> None:
    from shiftkit.adapt.methods.build import RECIPES, section_model, setting_names
    from shiftkit.adapt.methods.registry import get_method, method_names, reference_names

    for name in (*method_names(), *reference_names()):
        cls = get_method(name)
        family = [cls]
        for ref in cls.settings_also:  # e.g. the segmentation variant built for segmentation runs
            module, _, attr = ref.partition(":")
            family.append(getattr(__import__(module, fromlist=[attr]), attr))
        fields = section_model(cls).model_fields
        recipe = RECIPES[cls.recipe].model_fields if cls.recipe else {}
        assert set(fields) == setting_names(cls) | set(recipe), name
        for key in setting_names(cls):
            owner = next(k for k in family if key in k._get_param_names())
            # The section's default is what the constructor gives an instance built without it.
            assert fields[key].default == owner().get_params()[key], (name, key)
        assert not set(recipe) & set(cls._get_param_names()) - {"epochs", "lr", "batch_size"}, name


def test_a_config_with_sections_round_trips_through_pickle() -> None:
    import pickle

    from shiftkit.adapt.job.config import parse_config

    config = parse_config({"methods": ["source_only", "mcc"], "mcc": {"mcc_weight": 2.0}})
    again = pickle.loads(pickle.dumps(config))
    assert again.mcc.mcc_weight == 2.0 and again.section("dann").lambda_max == config.dann.lambda_max


def test_one_grammar() -> None:
    from shiftkit.adapt.methods.spec import parse_spec, split_specs

    assert parse_spec("dann") == ("dann", {})
    assert parse_spec(" cdan[entropy_conditioning=false, randomized_dim=512, lambda_max=0.3] ") == (
        "cdan", {"entropy_conditioning": False, "randomized_dim": 512, "lambda_max": 0.3})
    assert parse_spec("tent[window=none,on_collapse=reset,lr=1e-3]") == (
        "tent", {"window": None, "on_collapse": "reset", "lr": 1e-3})
    assert split_specs("source_only, cdan[mcc_weight=1,randomized_dim=512],dann") == [
        "source_only", "cdan[mcc_weight=1,randomized_dim=512]", "dann"]
    for bad in ("dann[lambda_max]", "dann[=1]", "Dann", "dann[a=1,a=2]", "dann[a=1,]", "dann[[a=1]]"):
        with pytest.raises(ConfigError):
            parse_spec(bad)


def test_the_run_recipe_decides_where_each_method_starts(tmp_path: Path) -> None:
    from shiftkit.adapt.cli.run import demo_config
    from shiftkit.adapt.job.pipeline import build_method
    from shiftkit.adapt.models.backbones import build_classifier

    config = demo_config(True, out_dir=tmp_path)
    source = SimpleNamespace(model_=build_classifier("tiny", 1, 2))
    asked: list[str] = []

    def fitted(name: str) -> SimpleNamespace:
        asked.append(name)
        return source

    oracle = build_method("target_oracle", config, 2, tmp_path, 1, fit_method=fitted)
    assert oracle.model == config.model.backbone and not asked  # labelled target, from scratch
    tent = build_method("tent", config, 2, tmp_path, 1, fit_method=fitted)
    assert tent.model is source.model_ and tent.epochs == 1 and tent.lr == config.section("tent").lr
    assert tent.early_stopping is None  # no labelled validation data without the source
    config.mcc.mcc_weight = 2.0  # one name: the constructor's
    mcc = build_method("mcc", config, 2, tmp_path, 1, fit_method=fitted)
    assert mcc.mcc_weight == 2.0 and mcc.model is source.model_ and mcc.lr == config.train.lr * config.mcc.lr_mult
    config.mcc.start = "scratch"
    assert build_method("mcc", config, 2, tmp_path, 1, fit_method=fitted).lr == config.train.lr
