"""The efficacy protocol as tests: data seeds apart from model seeds, no test data seed in any
tuning file, every adaptation default says how it was chosen, no label-bearing target column
reaches a method, and the efficacy harness runs (quick), resumes and selects label-free."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from shiftkit.datasets.errors import ConfigError
from shiftkit.datasets.synth.seeds import DEV_DATA_SEEDS, TEST_DATA_SEEDS

ROOT = Path(__file__).parents[2]


def _tuning_files() -> list[Path]:
    """Scripts and configs where choices are made: examples, benchmark scripts, every YAML
    config, the efficacy harness and the run config. Reported results (benchmarks/efficacy/test*)
    are outputs, not tuning files."""
    files = [*ROOT.glob("examples/**/*"), *ROOT.glob("benchmarks/*.py"), ROOT / "adapt" / "efficacy.py",
             ROOT / "adapt" / "config.py", ROOT / "Makefile"]
    files += [p for p in ROOT.rglob("*.y*ml") if ".venv" not in p.parts and "runs" not in p.parts
              and not any(part.startswith("test") for part in p.relative_to(ROOT).parts[:-1])]
    return sorted({p for p in files if p.is_file()})


def test_no_test_data_seed_in_a_tuning_script_or_config() -> None:
    pattern = re.compile(r"(?<![\d.])(" + "|".join(str(s) for s in TEST_DATA_SEEDS) + r")(?![\d.])")
    hits = []
    for path in _tuning_files():
        text = path.read_text(encoding="utf-8", errors="replace")
        hits += [f"{path.relative_to(ROOT)}:{text[:m.start()].count(chr(10)) + 1}: {m.group(0)}"
                 for m in pattern.finditer(text)]
    assert not hits, "test data seeds are for reporting only:\n" + "\n".join(hits)
    assert set(DEV_DATA_SEEDS).isdisjoint(TEST_DATA_SEEDS)


def test_the_harness_dev_mode_refuses_a_test_data_seed(tmp_path: Path) -> None:
    from shiftkit.adapt.harness import efficacy as E

    with pytest.raises(ConfigError, match="test data seeds"):
        E.check_seeds("dev", [DEV_DATA_SEEDS[0], TEST_DATA_SEEDS[0]])
    with pytest.raises(ConfigError, match="test data seeds"):
        E.run_grid(E.grid(["source_only"], ["radiograph"], [TEST_DATA_SEEDS[0]]), tmp_path, mode="dev")
    with pytest.raises(ConfigError, match="not test data seeds"):
        E.check_seeds("test", [DEV_DATA_SEEDS[0]])
    assert E.seeds_for("dev") == DEV_DATA_SEEDS[:5] and E.seeds_for("test") == TEST_DATA_SEEDS[:5]


def test_every_adaptation_default_records_how_it_was_chosen() -> None:
    from shiftkit.adapt.harness.efficacy import BENCHMARKS
    from shiftkit.adapt.job.config import DEFAULT_PROVENANCE, RunConfig
    from shiftkit.adapt.methods.registry import method_names

    config = RunConfig()
    missing = [f"train.{k}" for k in type(config.train).model_fields if f"train.{k}" not in DEFAULT_PROVENANCE]
    kinds = ("dev data", "label-free", "literature", "convention", "cost")
    # Every method's section (generated from its constructor, plus its recipe) shows each
    # default's provenance record as the field's description.
    records = dict(DEFAULT_PROVENANCE)
    for name in method_names():
        for key, info in type(config.section(name)).model_fields.items():
            if info.description is None:
                missing.append(f"{name}.{key}")
            else:
                records[f"{name}.{key}"] = info.description
    assert not missing, f"defaults without a recorded origin: {missing}"
    vague = [k for k, v in records.items() if not v.startswith(kinds)]
    assert not vague, vague
    for spec in BENCHMARKS.values():
        assert {"n_test", "n_train", "epochs", "adapt_epochs"} <= {k for k, _ in spec.provenance}


def test_data_seed_not_model_seed_decides_the_benchmark_images(tmp_path: Path) -> None:
    from shiftkit.adapt.job.config import RunConfig
    from shiftkit.adapt.job.pipeline import prepare_manifest

    def export(name: str, data_seed: int, model_seed: int) -> pd.DataFrame:
        cfg = RunConfig(name=name, out_dir=tmp_path, progress=False)
        cfg.data.n_per_domain, cfg.data.image_size = 20, 32
        cfg.data.seed, cfg.train.seed = data_seed, model_seed
        manifest = prepare_manifest(cfg, cfg.run_dir)
        frame = pd.read_csv(manifest)
        frame["bytes"] = [(manifest.parent / p).read_bytes() for p in frame["image"]]
        return frame

    a = export("a", DEV_DATA_SEEDS[0], 0)
    b = export("b", DEV_DATA_SEEDS[0], 7)
    c = export("c", DEV_DATA_SEEDS[1], 0)
    assert a["bytes"].tolist() == b["bytes"].tolist()  # the model seed does not change the data
    assert a["bytes"].tolist() != c["bytes"].tolist()  # the data seed does


class _Guarded(dict):
    """A batch item whose label-bearing keys raise on access (and are absent)."""

    def __getitem__(self, key):
        if key in ("label", "mask"):
            raise AssertionError(f"a method read the target {key!r}")
        return super().__getitem__(key)

    def get(self, key, default=None):
        if key in ("label", "mask"):
            raise AssertionError(f"a method read the target {key!r}")
        return super().get(key, default)


class _GuardedTarget:
    def __init__(self, base):
        self.base = base

    def __len__(self):
        return len(self.base)

    def __getitem__(self, i):
        item = self.base[i]
        return _Guarded({k: v for k, v in item.items() if k not in ("label", "mask")})


def test_no_label_bearing_target_column_reaches_a_method(tmp_path: Path, monkeypatch) -> None:
    """The pipeline drops `label` and `mask` from the target training split, and every method
    it runs trains on a target dataset whose `label`/`mask` raise if anything reads them."""
    from shiftkit.adapt.job import pipeline
    from shiftkit.adapt.job.config import METHOD_NAMES, RunConfig
    from shiftkit.adapt.job.data import LABEL_BEARING_COLUMNS

    frame = pd.DataFrame({"image": ["a.png"] * 10, "label": [0, 1] * 5, "mask": ["m.png"] * 10,
                          "domain": ["s"] * 5 + ["t"] * 5, "sex": ["F"] * 10})
    splits = pipeline.split_domains(frame, "s", "t", seed=DEV_DATA_SEEDS[0])
    assert not set(LABEL_BEARING_COLUMNS) & set(splits.target_train.columns)
    assert "sex" in splits.target_train.columns

    real = pipeline.method_datasets
    seen = []

    def guarded(splits, skip_bad):
        out = real(splits, skip_bad)
        assert "label" not in splits.target_train.columns and "mask" not in splits.target_train.columns
        out["target_train"] = _GuardedTarget(out["target_train"])
        seen.append(True)
        return out

    monkeypatch.setattr(pipeline, "method_datasets", guarded)
    cfg = RunConfig(name="guard", out_dir=tmp_path, progress=False)
    cfg.methods = [m for m in METHOD_NAMES if m != "target_oracle"]
    cfg.data.n_per_domain, cfg.data.image_size, cfg.data.seed = 40, 32, DEV_DATA_SEEDS[0]
    cfg.model.backbone, cfg.train.epochs, cfg.train.batch_size = "tiny", 1, 8
    cfg.evaluation.n_permutations = 50
    result = pipeline.run(cfg)
    assert seen and set(result.metrics["methods"]) == set(cfg.methods)


def test_validators_choose_and_are_scored_against_the_truth() -> None:
    from shiftkit.evaluation.selection import CandidateOutputs, select

    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 300)  # hidden target labels, used only to score the validators
    f_s, f_v, f_t = rng.normal(size=(200, 4)), rng.normal(size=(100, 4)), rng.normal(0.5, 1, size=(300, 4))

    def cand(noise: float, val_score: float) -> CandidateOutputs:
        s = np.clip(0.5 + 0.3 * (2 * y - 1) + rng.normal(0, noise, 300), 0.01, 0.99)
        proba = np.stack([1 - s, s], 1)
        return CandidateOutputs(rng.uniform(0.2, 0.8, 100), val_score, f_s, f_v, f_t, proba, proba.argmax(1))

    cands = {"good": cand(0.2, 0.7), "mid": cand(0.6, 0.8), "bad": cand(2.0, 0.9)}
    truth = {"good": 0.95, "mid": 0.75, "bad": 0.6}
    sel = select(cands, "ensv")
    assert sel.chosen == "good"  # agrees most with the ensemble of all candidates
    assert sel.choices["source_val"] == "bad"  # source validation cannot see the target
    ev = sel.evaluate(truth)
    assert ev["ensv"]["regret"] == 0.0 and ev["ensv"]["spearman"] == pytest.approx(1.0)
    assert ev["source_val"]["regret"] == pytest.approx(0.35) and ev["source_val"]["spearman"] == pytest.approx(-1.0)
    assert set(ev) >= {"source_val", "iwcv", "dev", "entropy", "snd", "ensv", "rank_mean"}


def test_quick_benchmark_runs_resumes_and_selects(tmp_path: Path) -> None:
    """`shiftkit benchmark --quick` writes per-cell files, the table and the plot; a second call
    re-runs nothing; `--cell` and `shiftkit select` work on the same folder."""
    from typer.testing import CliRunner

    from shiftkit.adapt.cli import app

    runner = CliRunner()
    args = ["benchmark", "--quick", "--mode", "dev", "--seeds", str(DEV_DATA_SEEDS[0]), "--benchmarks",
            "radiograph,dashcam", "--methods", "source_only,dann,finetune[frac=0.1],oracle", "--out", str(tmp_path),
            "--no-progress"]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    table = json.loads((tmp_path / "table.json").read_text())
    md = (tmp_path / "table.md").read_text()
    assert (tmp_path / "efficacy.png").stat().st_size > 1000 and "gap closed" in md
    # The rows that train on target labels are marked, and only they.
    assert "| oracle * |" in md and "| finetune[frac=0.1] * |" in md and "| dann |" in md
    assert table["command"].startswith("shiftkit benchmark")
    for b in ("radiograph", "dashcam"):
        rows = table["benchmarks"][b]["rows"]
        assert set(rows) == {"source_only", "dann", "finetune[frac=0.1]", "oracle"}
        for r in rows.values():
            lo, hi = r["target_ci"][0]
            assert lo <= r["target"][0] <= hi and 0 <= r["source"][0] <= 1
        assert rows["oracle"]["gap_closed"][0] == pytest.approx(1.0)
    cells = sorted((tmp_path / "cells").rglob("*.json"))
    assert len(cells) == 8
    stamps = [p.stat().st_mtime_ns for p in cells]
    assert runner.invoke(app, args).exit_code == 0
    assert [p.stat().st_mtime_ns for p in cells] == stamps  # finished cells are never re-run
    listing = runner.invoke(app, [*args[:-1], "--list"]).output.splitlines()
    assert len(listing) == 8 and listing[0].split("\t")[0] == "0"
    # One more cell through --cell (a scheduler's array task), then a label-free choice.
    extra = ["benchmark", "--quick", "--mode", "dev", "--seeds", str(DEV_DATA_SEEDS[0]), "--benchmarks",
             "radiograph", "--methods", "adabn", "--out", str(tmp_path)]
    assert runner.invoke(app, [*extra, "--cell", "0"]).exit_code == 0
    sel = runner.invoke(app, ["select", "--out", str(tmp_path), "--benchmark", "radiograph",
                              "--seed", str(DEV_DATA_SEEDS[0]), "--json"])
    assert sel.exit_code == 0, sel.output
    out = json.loads(sel.output)
    assert set(out["candidates"]) == {"source_only", "dann", "adabn"}
    for v, e in out["evaluation"].items():
        assert e["regret"] == pytest.approx(max(out["true_target"].values()) - out["true_target"][e["choice"]]), v


def test_every_method_default_records_how_it_was_chosen() -> None:
    import inspect

    from shiftkit.adapt import methods as M
    from shiftkit.adapt.job.provenance import METHOD_DEFAULTS
    from shiftkit.adapt.methods.registry import get_method, method_names, reference_names

    classes = [getattr(M, n) for n in getattr(M, "__all__", []) if inspect.isclass(getattr(M, n, None))]
    classes += [get_method(n) for n in (*method_names(), *reference_names())]  # every registered method
    checked = {c for c in classes if hasattr(c, "fit")}
    assert len(checked) >= 6, checked
    missing = []
    for cls in checked:
        for p in inspect.signature(cls.__init__).parameters.values():
            if p.default is inspect.Parameter.empty or p.kind is p.VAR_KEYWORD:
                continue
            if f"{cls.__name__}.{p.name}" not in METHOD_DEFAULTS and f"*.{p.name}" not in METHOD_DEFAULTS:
                missing.append(f"{cls.__name__}.{p.name}={p.default!r}")
    assert not missing, f"method defaults without a recorded origin: {missing}"
    # ... and no record outlives its argument (a renamed or removed class or argument).
    from shiftkit.adapt import ImportanceWeighting, TargetStyle  # the source adapters the methods default to

    known = {f"{c.__name__}.{p}" for c in (*checked, ImportanceWeighting, TargetStyle)
             for p in inspect.signature(c.__init__).parameters}
    stale = sorted(k for k in METHOD_DEFAULTS if not k.startswith("*.") and k not in known)
    assert not stale, f"records of arguments that no longer exist: {stale}"
    kinds = ("dev data", "label-free", "literature", "convention", "cost")
    assert all(v.startswith(kinds) for v in METHOD_DEFAULTS.values())


FEW_LABEL = ("finetune[frac=0.01]", "finetune[frac=0.05]", "finetune[frac=0.1]", "linear_probe")


def test_the_harness_takes_every_registered_method_and_refuses_unknown_settings(tmp_path: Path) -> None:
    """Every registry name, the few-label references and the oracle make cells (on the tasks they
    support) and are in `make efficacy`'s default grid; an unknown method, an unknown setting or a
    finetune without its fraction is refused before any training, naming the problem."""
    from typer.testing import CliRunner

    from shiftkit.adapt.cli import app
    from shiftkit.adapt.harness import efficacy as E
    from shiftkit.adapt.methods.registry import get_method, method_names

    registered = [n for n in method_names() if n != "target_oracle"]
    wanted = [*registered, *FEW_LABEL, "oracle"]
    assert set(wanted) <= set(E.DEFAULT_METHODS)
    cells = E.grid(wanted, ["radiograph", "dashcam"], [DEV_DATA_SEEDS[0]])
    assert [c.method for c in cells if c.benchmark == "radiograph"] == wanted  # classification: all of them
    dashcam = {c.method for c in cells if c.benchmark == "dashcam"}
    for name in registered:  # left out of segmentation only where the method itself says it cannot do it
        problems = get_method(name)("tiny-unet", task="segmentation", num_classes=9).check_params()
        assert (name in dashcam) == (not problems), (name, problems)
    # LinearProbe needs an (encoder, head) model: classification only.
    assert set(FEW_LABEL) - {"linear_probe"} | {"source_only", "dann", "oracle"} <= dashcam
    assert "linear_probe" not in dashcam
    assert E.grid(["cdan[entropy_conditioning=false,mcc_weight=0.1]", "dann[lambda_max=0.3]"], ["radiograph"], [DEV_DATA_SEEDS[0]])
    # The oracle's start is part of its cell key: the two oracle rows are different cells.
    from shiftkit.adapt.harness.grid import ORACLE_START

    keys = {m: E.cell_key_of(E.Cell(m, "radiograph", DEV_DATA_SEEDS[0]))
            for m in ("oracle", f"oracle[start={ORACLE_START}]", "oracle[start=scratch]")}
    assert keys["oracle"] == keys[f"oracle[start={ORACLE_START}]"] and keys["oracle"] != keys["oracle[start=scratch]"]

    for bad, why in [("cdan[bogus=1]", r"unknown setting\(s\) \['bogus'\]; cdan takes"),
                     ("source_only[lambda_max=1]", r"unknown setting\(s\) \['lambda_max'\]"),
                     ("finetune", "needs the fraction"), ("finetune[frac=2]", r"frac must be a number in \(0, 1\]"),
                     ("no_such_method", "unknown method"),
                     ("oracle[start=imagenet]", "start must be 'scratch' or 'source'"),
                     ("oracle[frac=0.5]", r"unknown setting\(s\) \['frac'\]; oracle takes \['start'\]")]:
        with pytest.raises(ConfigError, match=why):
            E.grid([bad], ["radiograph"], [DEV_DATA_SEEDS[0]])
    res = CliRunner().invoke(app, ["benchmark", "--quick", "--mode", "dev", "--seeds", str(DEV_DATA_SEEDS[0]),
                                   "--methods", "tent[bogus=1]", "--out", str(tmp_path), "--no-progress"])
    assert res.exit_code == 2 and "bogus" in res.output and not (tmp_path / "cells").exists()


def test_a_cell_is_keyed_by_the_code_and_its_resolved_settings(tmp_path: Path, monkeypatch) -> None:
    """A cell made by other code or under other settings is re-run, never reused."""
    import numpy as np

    from shiftkit.adapt.harness import cells as C
    from shiftkit.adapt.harness import efficacy as E

    cell = E.Cell("dann", "radiograph", DEV_DATA_SEEDS[0])
    key, settings = E.cell_key_of(cell)
    assert settings["lambda_max"] == 1.0 and settings["lr_mult"] == E.BENCHMARKS["radiograph"].lr_mult
    assert E.cell_key_of(E.Cell("dann[lambda_max=0.3]", "radiograph", DEV_DATA_SEEDS[0]))[0] != key
    assert E.cell_key_of(cell, quick=True)[0] != key
    # The code hash reads the source bytes: one changed byte in a result-changing file changes it.
    src = tmp_path / "m.py"
    src.write_text("x = 1\n")
    monkeypatch.setattr(C, "_source_files", lambda: [("shiftkit.adapt/m.py", src)])
    C.code_hash.cache_clear()
    before = C.code_hash()
    src.write_text("x = 2\n")
    C.code_hash.cache_clear()
    assert C.code_hash() != before
    assert E.cell_key_of(cell)[0] != key
    monkeypatch.undo()
    C.code_hash.cache_clear()
    # A finished cell is reused only under its own key.
    js, npz = cell.paths(tmp_path)
    js.parent.mkdir(parents=True)
    np.savez(npz, x=np.zeros(1))
    js.write_text(json.dumps({"cell_key": key}))
    assert E._cell_done(cell, tmp_path, key)
    js.write_text(json.dumps({"cell_key": "0" * 16}))
    assert not E._cell_done(cell, tmp_path, key)
    # The command line and the table code are outside the hash: editing them re-runs nothing.
    names = [n for n, _ in C._source_files()]
    assert "shiftkit.adapt/harness/efficacy.py" in names and "shiftkit.evaluation/selection.py" in names
    assert "shiftkit.adapt/harness/table.py" not in names and "shiftkit.adapt/cli/efficacy.py" not in names


def test_the_cached_source_model_is_keyed_by_the_code(tmp_path: Path, monkeypatch) -> None:
    """A source model cached before a generator or training change is retrained, never
    reused: its file name holds the same code hash as the cells' key."""
    from shiftkit.adapt.harness import efficacy as E
    from shiftkit.adapt.harness.benchmarks import QUICK

    spec, seed = QUICK["digits"], DEV_DATA_SEEDS[0]
    E.pretrained_source(spec, seed, 0, tmp_path, augment=None)
    first = sorted((tmp_path / "digits").glob("*.safetensors"))
    assert len(first) == 1 and E.code_hash() in first[0].name
    E.pretrained_source(spec, seed, 0, tmp_path, augment=None)  # same code: reused
    assert sorted((tmp_path / "digits").glob("*.safetensors")) == first
    monkeypatch.setattr(E, "code_hash", lambda: "0123456789ab")  # other code: trained again
    E.pretrained_source(spec, seed, 0, tmp_path, augment=None)
    files = sorted((tmp_path / "digits").glob("*.safetensors"))
    assert len(files) == 2 and any("0123456789ab" in f.name for f in files)

