"""Inputs are checked before work starts: run configs as a whole, manifests deeply on request,
tensors against the layout the methods expect. Each bad input gets an error saying what was
expected; none reaches training."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from shiftkit.adapt.job.config import parse_config
from shiftkit.adapt.methods import SourceOnly
from shiftkit.adapt.training.data import ArrayDataset, as_dataset
from shiftkit.datasets.errors import ConfigError, DataError, ManifestError

# ----------------------------------------------------------------------------- tensors

_X = np.random.default_rng(0).random((8, 1, 16, 16)).astype("f4")


@pytest.mark.parametrize("images, labels, match", [
    (_X[:, 0], None, r"no channel axis; expected \(N, C, H, W\)"),
    (np.moveaxis(np.repeat(_X, 3, 1), 1, -1), None, "looks channel-last"),
    (_X[:0], None, "empty"),
    (_X * 255.0 // 1, None, "Scale to"),
    (_X, np.eye(2)[np.arange(8) % 2], "one-hot"),
    (_X, np.arange(5), "5 labels for 8 images"),
    (_X, np.linspace(0, 1, 8), "non-integer"),
    (_X, np.full(8, -3), "-3"),
])
def test_array_dataset_explains_bad_tensors(images, labels, match: str) -> None:
    with pytest.raises(DataError, match=match):
        ArrayDataset(images, labels)


def test_label_shape_1_and_mask_mismatch_are_explained() -> None:
    # (N, 1) labels are plain class indices in a column: accepted.
    assert ArrayDataset(_X, np.arange(8)[:, None] % 2).labels.shape == (8,)
    with pytest.raises(DataError, match=r"masks: shape \(8, 8, 8\); expected \(N, H, W\) = \(8, 16, 16\)"):
        ArrayDataset(_X, masks=np.zeros((8, 8, 8), int))

    class Items(torch.utils.data.Dataset):
        def __init__(self, item: dict):
            self.item = item

        def __len__(self) -> int:
            return 4

        def __getitem__(self, i: int) -> dict:
            return self.item

    img = torch.zeros(1, 16, 16)
    for item, match in [
        ({"image": img, "label": torch.tensor([1])}, r"shape \(1,\); expected a 0-d class index"),
        ({"image": img, "label": torch.tensor([0.0, 1.0])}, "one-hot"),
        ({"image": img[0]}, "no channel axis"),
        ({"image": torch.zeros(16, 16, 3)}, "channel-last"),
        ({"image": "a.png"}, "a file path"),
        ({"image": img, "mask": torch.zeros(8, 8)}, r"expected \(H, W\) = \(16, 16\)"),
    ]:
        with pytest.raises(DataError, match=match):
            as_dataset(Items(item), name="source")


def test_source_target_mismatch_stops_fit_before_training() -> None:
    src = ArrayDataset(_X, np.arange(8) % 2)
    m = SourceOnly("tiny", epochs=1, progress=False)
    with pytest.raises(DataError, match=r"target images are \(1, 24, 24\).*resize"):
        m.fit(src, ArrayDataset(np.zeros((4, 1, 24, 24), "f4")))
    with pytest.raises(DataError, match="channels differ"):
        m.fit(src, ArrayDataset(np.zeros((4, 3, 16, 16), "f4")))
    assert getattr(m, "model_", None) is None and not getattr(m, "history_", None)  # nothing built or trained


# ----------------------------------------------------------------------------- configs


def test_config_defaults_follow_the_task_and_the_data_source(tmp_path: Path) -> None:
    dash = parse_config({"task": "segmentation", "data": {"benchmark": "dashcam"}})
    assert dash.model.backbone == "unet"
    assert parse_config({}).model.backbone == "resnet10"
    only_manifest = parse_config({"data": {"manifest": str(tmp_path / "m.csv"), "source_domain": "a",
                                           "target_domain": "b"}})
    assert only_manifest.data.benchmark is None
    with pytest.raises(ConfigError, match="not both"):
        parse_config({"data": {"benchmark": "radiograph", "manifest": "m.csv", "source_domain": "a",
                               "target_domain": "b"}})
    with pytest.raises(ConfigError, match=r"'resnet10' is not a segmentation backbone \('resnet10' is a classifier\)"):
        parse_config({"data": {"benchmark": "dashcam"}, "model": {"backbone": "resnet10"}})
    with pytest.raises(ConfigError, match="'resnet01' is not a classification backbone"):
        parse_config({"model": {"backbone": "resnet01"}})


def test_run_config_is_checked_before_any_export(tmp_path: Path) -> None:
    from shiftkit.adapt.job.pipeline import run

    config = parse_config({"name": "bad", "out_dir": str(tmp_path), "progress": False,
                           "data": {"target_domain": "rual", "n_per_domain": 20},
                           "model": {"checkpoint": str(tmp_path / "missing.safetensors")}})
    with pytest.raises(ConfigError) as exc:
        run(config)
    joined = "\n".join(exc.value.problems)
    assert "data.target_domain: 'rual' is not a radiograph domain" in joined
    assert "model.checkpoint: file not found" in joined
    assert not (tmp_path / "bad" / "data").exists()  # nothing exported


# ----------------------------------------------------------------------------- manifests


@pytest.fixture(scope="module")
def manifest_with_corrupt_png(tmp_path_factory) -> tuple[Path, int]:
    """An exported radiograph manifest (20 per domain, 32 px) with one truncated PNG."""
    from shiftkit.datasets.synth import radiograph

    out = tmp_path_factory.mktemp("data")
    manifest = radiograph.export(out, ["city", "rural"], 20, size=32, progress=False)
    frame = pd.read_csv(manifest)
    row = int(np.flatnonzero((frame["domain"] == "city") & (frame["split"] == "train"))[3]) + 1
    png = out / frame["image"][row - 1]
    png.write_bytes(png.read_bytes()[:-40])  # truncated: no IEND chunk
    return manifest, row


def test_check_images_names_the_corrupt_row(manifest_with_corrupt_png) -> None:
    from shiftkit.datasets import load_manifest

    manifest, row = manifest_with_corrupt_png
    load_manifest(manifest)  # the shallow check only sees that the file exists
    with pytest.raises(ManifestError) as exc:
        load_manifest(manifest, check_images=True)
    assert exc.value.problems == [exc.value.problems[0]] and exc.value.problems[0].startswith(f"row {row}: ")
    assert "corrupt or truncated" in exc.value.problems[0]


def _manifest_config(tmp_path: Path, manifest: Path, **data) -> dict:
    return {"name": "m", "out_dir": str(tmp_path), "progress": False, "methods": ["source_only"],
            "data": {"manifest": str(manifest), "source_domain": "city", "target_domain": "rural", **data},
            "model": {"backbone": "tiny"}, "train": {"epochs": 1, "batch_size": 8},
            "evaluation": {"n_permutations": 50, "max_gap_points": 50}}


def test_cli_check_images_reports_the_row_before_training(tmp_path: Path, manifest_with_corrupt_png) -> None:
    import yaml
    from typer.testing import CliRunner

    from shiftkit.adapt.cli import app

    manifest, row = manifest_with_corrupt_png
    cfg = tmp_path / "run.yaml"
    cfg.write_text(yaml.safe_dump(_manifest_config(tmp_path, manifest)))
    res = CliRunner().invoke(app, ["run", str(cfg), "--check-images"])
    assert res.exit_code == 2, res.output
    assert f"row {row}:" in res.output and "corrupt or truncated" in res.output
    assert not (tmp_path / "m" / "checkpoints").exists()  # no training started


def test_skip_bad_records_rows_and_used_split_sizes(tmp_path: Path, manifest_with_corrupt_png) -> None:
    from shiftkit.adapt.job.pipeline import run

    manifest, row = manifest_with_corrupt_png
    metrics = run(parse_config(_manifest_config(tmp_path, manifest, skip_bad=True))).metrics
    on_disk = json.loads((tmp_path / "m" / "metrics.json").read_text())
    assert on_disk["run"]["skipped_rows"] == [{"row": row, "split": "source_train", "reason": "not a readable image (corrupt or truncated?)"}]
    assert on_disk["run"]["split_sizes"]["source_train"] == 11  # 12 city train rows, one skipped
    assert any(f"rows {row}" in w for w in metrics["warnings"])
