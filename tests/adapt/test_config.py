"""RunConfig validation: every problem reported at once, with its key path."""

from __future__ import annotations

import pytest

from shiftkit.adapt.job.config import load_config, parse_config
from shiftkit.datasets.errors import ConfigError


def test_defaults_are_valid() -> None:
    config = parse_config({})
    assert config.methods == ["source_only", "dann"]
    assert config.data.benchmark == "radiograph"


def test_every_problem_is_listed_with_its_key() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({
            "data": {"benchmarkk": "radiograph", "n_per_domain": "many"},
            "train": {"epochs": 0},
            "methods": ["source_only", "magic"],
            "colour": "blue",
        })
    problems = info.value.problems
    joined = "\n".join(problems)
    assert len(problems) == 5, joined
    for key in ("data.benchmarkk: unknown key", "data.n_per_domain", "train.epochs", "methods.1",
                "colour: unknown key"):
        assert key in joined


def test_manifest_needs_domains(tmp_path) -> None:
    with pytest.raises(ConfigError, match="source_domain"):
        parse_config({"data": {"benchmark": None, "manifest": str(tmp_path / "m.csv")}})


def test_yaml_file_errors_name_the_file(tmp_path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [unclosed\n")
    with pytest.raises(ConfigError, match="bad.yaml"):
        load_config(bad)
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(wrong)
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.yaml")


def test_example_config_is_valid() -> None:
    from pathlib import Path

    config = load_config(Path(__file__).parents[2] / "examples" / "demo.yaml")
    assert config.name
    # the example is "the demo job as a config file": the data and model it names are the demo's
    from shiftkit.adapt.cli.run import demo_config

    demo = demo_config()
    for section, key in (("data", "n_per_domain"), ("data", "image_size"), ("model", "backbone"),
                         ("train", "epochs"), ("train", "early_stopping_patience")):
        assert getattr(getattr(config, section), key) == getattr(getattr(demo, section), key), (section, key)


def test_cli_makes_omp_threads_sleep_only_on_an_oversubscribed_machine(monkeypatch) -> None:
    """Spinning OpenMP threads are faster on an idle box and several times slower on a busy one
    (benchmarks/bench_omp.py): the CLI asks for PASSIVE only when load >= cores."""
    import os

    from shiftkit.adapt import cli

    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    monkeypatch.setattr(os, "getloadavg", lambda: (2.5, 1.0, 1.0))
    assert cli._busy_machine()
    monkeypatch.setattr(os, "getloadavg", lambda: (1.2, 1.0, 1.0))
    assert not cli._busy_machine()

    def no_loadavg():
        raise OSError("no load average here")

    monkeypatch.setattr(os, "getloadavg", no_loadavg)
    assert not cli._busy_machine()
