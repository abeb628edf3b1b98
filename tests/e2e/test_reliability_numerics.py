"""Numerical failures are caught and said out loud.

- A NaN/Inf in a batch stops training with a message naming the epoch and step, and the
  checkpoint of the last good epoch stays on disk, loadable and finite (``on_nonfinite="stop"``);
  with ``"skip"`` the bad batch is dropped, counted and warned about, and training finishes.
- Through `shiftkit run`: a NaN pixel in an input file is refused with the file named, and an
  exploding learning rate ends the run with exit code 2 and a one-line error, not a traceback.
- A DANN whose discriminator saturates (features stay separable) or collapses (constant
  output) gets a warning in the log, in ``metrics["warnings"]`` and in report.html.
"""

from __future__ import annotations

import copy
import logging
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import Dataset

from shiftkit.adapt.methods import SourceOnly
from shiftkit.adapt.models.backbones import build_mlp
from shiftkit.adapt.training.trainer import NonFiniteLossError, load_checkpoint


class PoisonableData(Dataset):
    """Vectors (N, 6) with labels; ``poison`` = indices whose features become NaN."""

    def __init__(self, n: int = 64, seed: int = 0):
        rng = np.random.default_rng(seed)
        self.x = torch.from_numpy(rng.standard_normal((n, 6)).astype("f4"))
        self.y = (self.x[:, 0] > 0).long()
        self.poison: set[int] = set()

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict:
        x = self.x[i].clone()
        if i in self.poison:
            x[0] = float("nan")
        return {"image": x, "label": self.y[i], "index": i}


def _method(tmp_path: Path, **kw) -> SourceOnly:
    torch.manual_seed(0)
    return SourceOnly(build_mlp(6, [16], 2), epochs=3, batch_size=16, lr=0.01, progress=False,
                      checkpoint_dir=str(tmp_path / "ckpt"), resume=False, **kw)


def test_nan_batch_stops_and_keeps_last_good_checkpoint(tmp_path: Path, caplog) -> None:
    data = PoisonableData()
    snapshot: dict = {}

    def after_epoch(epoch: int, model: torch.nn.Module) -> None:
        if epoch == 1:  # epoch 1 was clean; from now on every sample is NaN
            snapshot.update(copy.deepcopy(model.state_dict()))
            data.poison = set(range(len(data)))

    m = _method(tmp_path)
    with pytest.raises(NonFiniteLossError) as info:
        m.fit(data, val=PoisonableData(seed=1), callback=after_epoch)
    msg = str(info.value)
    assert "epoch 2, step 1" in msg and "non-finite" in msg
    ckpt = tmp_path / "ckpt" / "last.pt"
    assert str(ckpt) in msg  # says where the good checkpoint is
    state = load_checkpoint(ckpt)
    assert state["epoch"] == 1
    weights = state["modules"]["model"]
    assert all(torch.isfinite(v).all() for v in weights.values())
    for k, v in snapshot.items():  # exactly the weights at the end of the clean epoch
        assert torch.equal(weights[k], v), k


def test_nan_batch_is_skipped_counted_and_warned(tmp_path: Path, caplog) -> None:
    data = PoisonableData()
    data.poison = {5}  # one bad sample: its batch (one per epoch) is dropped
    m = _method(tmp_path, on_nonfinite="skip")
    with caplog.at_level(logging.WARNING, logger="shiftkit"), pytest.warns(RuntimeWarning, match="skipped"):
        m.fit(data, val=PoisonableData(seed=1))
    assert [h["skipped_batches"] for h in m.history_] == [1, 1, 1]
    assert any("skipped 1 batch" in w for w in m.warnings_)
    assert any("non-finite" in r.getMessage() for r in caplog.records)
    assert all(torch.isfinite(p).all() for p in m.model_.parameters())
    assert all(math.isfinite(h["train_loss"]) for h in m.history_)


# ------------------------------------------------------------------ through the pipeline / CLI


def _tiny(tmp_path: Path, name: str, **over) -> dict:
    cfg = {
        "name": name, "out_dir": str(tmp_path / "runs"), "methods": ["source_only"], "progress": False,
        "data": {"n_per_domain": 40, "image_size": 32}, "model": {"backbone": "tiny"},
        "train": {"epochs": 2, "batch_size": 8, "device": "cpu"}, "evaluation": {"n_permutations": 50},
    }
    for section, values in over.items():
        if isinstance(values, dict):
            cfg.setdefault(section, {}).update(values)
        else:
            cfg[section] = values
    return cfg


def _cli(tmp_path: Path, cfg: dict):
    import yaml
    from typer.testing import CliRunner

    from shiftkit.adapt.cli import app

    path = tmp_path / f"{cfg['name']}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return CliRunner().invoke(app, ["run", str(path)])


@pytest.mark.slow
def test_exploding_run_ends_with_a_clear_error(tmp_path: Path) -> None:
    result = _cli(tmp_path, _tiny(tmp_path, "explode", train={"lr": 1e30}))
    assert result.exit_code == 2, result.output
    assert "non-finite loss or gradient at epoch" in result.output
    assert "Traceback" not in result.output


@pytest.mark.slow
def test_nan_pixel_in_an_input_file_is_refused_with_its_name(tmp_path: Path) -> None:
    import nibabel as nib

    from shiftkit.datasets.synth import radiograph

    data = tmp_path / "data"
    manifest = radiograph.export(data, ["city", "rural"], 20, seed=0, size=32)
    bad = np.full((32, 32), 0.5, dtype=np.float32)
    bad[3, 4] = np.nan
    nib.save(nib.Nifti1Image(bad, np.eye(4)), data / "nan_scan.nii")
    text = manifest.read_text().splitlines()
    header = text[0].split(",")
    row = dict(zip(header, text[1].split(","), strict=True))  # a city training row, re-pointed
    row.update(image="nan_scan.nii", mask="")
    manifest.write_text("\n".join([*text, ",".join(row[h] for h in header)]) + "\n")
    cfg = _tiny(tmp_path, "nanpixel", data={"benchmark": None, "manifest": str(manifest),
                                            "source_domain": "city", "target_domain": "rural"})
    cfg["data"].pop("n_per_domain")
    cfg["data"].pop("image_size")
    result = _cli(tmp_path, cfg)
    assert result.exit_code == 2, result.output
    assert "nan_scan.nii" in result.output and "NaN" in result.output
    assert "Traceback" not in result.output


def _dann_run(tmp_path: Path, name: str, **over):
    from shiftkit.adapt.job.config import parse_config
    from shiftkit.adapt.job.pipeline import run

    cfg = _tiny(tmp_path, name, methods=["dann"], **over)
    return run(parse_config(cfg))


@pytest.mark.slow
def test_saturated_dann_discriminator_is_warned_in_metrics_and_report(tmp_path: Path, caplog) -> None:
    # lambda_max ~ 0: nothing pushes the encoder to hide the domain, so the discriminator wins.
    with caplog.at_level(logging.WARNING, logger="shiftkit"):
        res = _dann_run(tmp_path, "saturate", train={"epochs": 10, "batch_size": 4, "lr": 0.01},
                        dann={"lambda_max": 1e-6, "disc_hidden": [64, 64],
                              "disc_lr_mult": 5.0})
    saturated = [h["epoch"] for h in res.histories["dann"] if h["disc_acc"] > 0.99 and h["domain_loss"] < 0.05]
    assert saturated, res.histories["dann"]  # it really saturated, in at least one epoch
    warned = [w for w in res.metrics["warnings"] if "saturated" in w]
    assert warned and all(w.startswith("dann: ") for w in warned), res.metrics["warnings"]
    assert all(any(f"epoch {e}:" in w for w in warned) for e in saturated), (saturated, warned)
    assert "saturated" in res.report_path.read_text()
    assert any("saturated" in r.getMessage() for r in caplog.records)


@pytest.mark.slow
def test_collapsed_dann_discriminator_is_warned_in_metrics_and_report(tmp_path: Path, monkeypatch) -> None:
    from shiftkit.adapt.methods import dann

    original = dann.DomainDiscriminator.__init__

    def dead_relus(self, *args, **kwargs):
        # Every hidden ReLU starts dead (negative bias, zero weights): no gradient ever revives
        # them, so the discriminator outputs a constant - the failure the warning is for.
        original(self, *args, **kwargs)
        with torch.no_grad():
            last_hidden = [m for m in self.net if isinstance(m, torch.nn.Linear)][-2]
            last_hidden.weight.zero_()
            last_hidden.bias.fill_(-1.0)

    monkeypatch.setattr(dann.DomainDiscriminator, "__init__", dead_relus)
    res = _dann_run(tmp_path, "collapse", train={"epochs": 1})
    assert res.histories["dann"][-1]["disc_logit_std"] < 1e-6
    assert any("collapsed" in w for w in res.metrics["warnings"]), res.metrics["warnings"]
    assert "collapsed" in res.report_path.read_text()
