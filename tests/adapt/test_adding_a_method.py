"""Adding a method is one module plus one registry call: a method defined in a temporary module
(no file of the project edited) runs from a config file (with its own section), is listed by
`shiftkit methods`, makes a harness cell with a setting, and is an `auto` candidate."""

from __future__ import annotations

import importlib
import json
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from shiftkit.datasets.synth.seeds import DEV_DATA_SEEDS

NAME = "tmp_entropy_min"

MODULE = textwrap.dedent('''
    """A small method: source cross-entropy plus weight x the mean entropy of target predictions."""

    import torch

    from shiftkit.adapt import Method, Requires, register
    from shiftkit.adapt.methods import supervised_loss

    BUILT = []  # the weights every built instance received (the test reads them)


    class TmpEntropyMin(Method):
        requires = Requires(source="labelled", target="unlabelled")
        title = "Entropy minimisation (test)"

        def __init__(self, model="tiny", *, weight: float = 0.1, **kwargs):
            super().__init__(model, **kwargs)
            self.weight = weight
            BUILT.append(weight)

        def check_params(self):
            return [] if self.weight >= 0 else [f"weight must be >= 0, got {self.weight!r}"]

        def training_step(self, source, target, p):
            ns = source["image"].shape[0]
            logits = self.model_(torch.cat([source["image"], target["image"]], 0))
            loss, acc = supervised_loss(logits[:ns], source, self.task_)
            prob = logits[ns:].softmax(1)
            ent = -(prob * prob.clamp_min(1e-8).log()).sum(1).mean()
            return loss + self.weight * ent, {"train_acc": acc, "entropy": ent.detach()}


    register("tmp_entropy_min", TmpEntropyMin)
''')


@pytest.fixture
def new_method(tmp_path: Path):
    """Write the module into tmp_path, import it (it registers itself); unregister afterwards so
    the registry-wide tests of this session do not see it."""
    from shiftkit.adapt.methods import registry

    folder = tmp_path / "plugin"
    folder.mkdir()
    (folder / "tmp_method_module.py").write_text(MODULE, encoding="utf-8")
    sys.path.insert(0, str(folder))
    try:
        yield importlib.import_module("tmp_method_module")
    finally:
        sys.path.remove(str(folder))
        sys.modules.pop("tmp_method_module", None)
        registry._REGISTERED.pop(NAME, None)


def test_adding_a_method_needs_one_module_and_one_register_call(tmp_path: Path, new_method) -> None:
    from typer.testing import CliRunner

    from shiftkit.adapt.cli import app
    from shiftkit.adapt.harness import efficacy as E

    runner = CliRunner()
    # `shiftkit methods` lists it.
    listing = runner.invoke(app, ["methods"])
    assert listing.exit_code == 0 and NAME in listing.output and "Entropy minimisation (test)" in listing.output

    # A config file: the method, its own section (generated from its constructor), and `auto`
    # with it as a candidate (a setting in the one grammar).
    config = {
        "name": "plugin", "out_dir": str(tmp_path / "runs"), "progress": False,
        "methods": ["source_only", NAME, "auto"],
        "data": {"n_per_domain": 40, "image_size": 32, "seed": DEV_DATA_SEEDS[0]},
        "model": {"backbone": "tiny"},
        "train": {"epochs": 1, "batch_size": 8},
        NAME: {"weight": 0.5},
        "selection": {"candidates": ["source_only", f"{NAME}[weight=0.75]"]},
        "evaluation": {"n_permutations": 50},
    }
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    res = runner.invoke(app, ["run", str(path)])
    assert res.exit_code == 0, res.output
    metrics = json.loads((tmp_path / "runs" / "plugin" / "metrics.json").read_text())
    assert set(metrics["methods"]) == {"source_only", NAME, "auto"}
    assert "entropy" in metrics["histories"][NAME][0]  # its own training step ran
    selection = metrics["selection"]
    assert selection["candidates"] == ["source_only", f"{NAME}[weight=0.75]"]
    assert f"{NAME}[weight=0.75]" in selection["true_target"]
    assert 0.5 in new_method.BUILT and 0.75 in new_method.BUILT  # the section and the candidate's setting

    # A typo in its section is an error naming the key, before anything trains.
    bad = dict(config, **{NAME: {"wieght": 0.5}})
    path.write_text(yaml.safe_dump(bad), encoding="utf-8")
    res = runner.invoke(app, ["run", str(path)])
    assert res.exit_code == 2 and f"{NAME}.wieght: unknown key" in res.output

    # A harness cell at the quick size, with a setting; an unknown setting is refused.
    cell = E.Cell(f"{NAME}[weight=0.25]", "radiograph", DEV_DATA_SEEDS[0])
    out = E.run_cell(cell, tmp_path / "bench", quick=True, mode="dev")
    assert 0.0 <= out["target"] <= 1.0 and "entropy" in out["history"][0]
    assert 0.25 in new_method.BUILT
    with pytest.raises(Exception, match="wieght"):
        E.check_method(f"{NAME}[wieght=1]")
