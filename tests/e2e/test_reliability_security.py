"""Files from elsewhere cannot run code or reach outside their folder.

- Model files: every loader that takes a checkpoint path (the pipeline's ``model.checkpoint``
  reader, the trainer's checkpoint loader and its resume path, ``shiftkit run`` itself) is
  handed pickles whose unpickling would create a file; each is refused with a ShiftkitError
  and the file never appears. (``shiftkit.adapt.load``/``load_weights`` are covered in
  tests/adapt/test_predictor.py.)
- Manifests: image and mask paths that leave the manifest's folder (absolute, ``..``, a
  symlinked file or folder pointing out) are refused unless ``allow_outside_root`` is set,
  in ``load_manifest`` and in a run config.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from shiftkit.datasets.errors import ManifestError, ShiftkitError


class _OpenFile:
    """Unpickling this calls open(marker, "w"): the file appears if code ran."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


class _Touch:
    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _evil_files(tmp_path: Path) -> list[tuple[Path, Path]]:
    """(file, marker) pairs: raw pickles and torch.save zips, bare and inside a state dict."""
    out = []
    for i, (cls, wrap, how) in enumerate([
        (_OpenFile, lambda o: o, "pickle"), (_Touch, lambda o: o, "pickle"),
        (_OpenFile, lambda o: {"model": {"w": o}}, "torch"), (_Touch, lambda o: {"weight": torch.zeros(2), "x": o}, "torch"),
        (_OpenFile, lambda o: {"epoch": 1, "modules": {"model": o}}, "torch"),
    ]):
        marker = tmp_path / f"pwned{i}"
        for suffix in (".pt", ".safetensors", ".ckpt"):
            path = tmp_path / f"evil{i}{suffix}"
            obj = wrap(cls(str(marker)))
            if how == "pickle":
                path.write_bytes(pickle.dumps(obj))
            else:
                torch.save(obj, path)
            out.append((path, marker))
    return out


def _no_markers(tmp_path: Path) -> None:
    assert not list(tmp_path.glob("pwned*")), "unpickling ran code"
    assert not Path("pwned0").exists()


def test_weights_loader_refuses_pickled_code(tmp_path: Path) -> None:
    from shiftkit.adapt.training.checkpoint import read_weights  # behind model.checkpoint and load_weights

    for path, _ in _evil_files(tmp_path):
        with pytest.raises(ShiftkitError) as info:
            read_weights(path)
        assert str(path) in str(info.value)
    _no_markers(tmp_path)


def test_trainer_checkpoint_loader_refuses_pickled_code(tmp_path: Path) -> None:
    from shiftkit.adapt.training.trainer import load_checkpoint

    for path, _ in _evil_files(tmp_path):
        with pytest.raises(ShiftkitError) as info:
            load_checkpoint(path)
        assert str(path) in str(info.value)
    _no_markers(tmp_path)


def test_resume_from_a_planted_checkpoint_is_refused(tmp_path: Path) -> None:
    """A `last.pt` swapped for a pickle in the checkpoint folder: resume refuses it."""
    from shiftkit.adapt.methods import SourceOnly
    from shiftkit.adapt.models.backbones import build_mlp
    from shiftkit.adapt.training.data import ArrayDataset

    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    marker = tmp_path / "pwned_resume"
    torch.save({"epoch": 1, "modules": {"model": _OpenFile(str(marker))}}, ckpt / "last.pt")
    x = np.random.default_rng(0).standard_normal((32, 6)).astype("f4")
    m = SourceOnly(build_mlp(6, [8], 2), epochs=2, batch_size=8, progress=False, checkpoint_dir=str(ckpt), resume=True)
    with pytest.raises(ShiftkitError) as info:
        m.fit(ArrayDataset(x, (x[:, 0] > 0).astype(int)))
    assert "last.pt" in str(info.value)
    assert not marker.exists()


@pytest.mark.slow
def test_shiftkit_run_refuses_a_pickled_model_checkpoint(tmp_path: Path) -> None:
    import yaml
    from typer.testing import CliRunner

    from shiftkit.adapt.cli import app

    marker = tmp_path / "pwned_cli"
    evil = tmp_path / "source_model.pt"
    torch.save({"model": {"encoder.w": _Touch(str(marker))}}, evil)
    cfg = {"name": "evil", "out_dir": str(tmp_path / "runs"), "methods": ["source_only"], "progress": False,
           "data": {"n_per_domain": 20, "image_size": 32}, "model": {"backbone": "tiny", "checkpoint": str(evil)},
           "train": {"epochs": 1, "device": "cpu"}, "evaluation": {"n_permutations": 50}}
    path = tmp_path / "evil.yaml"
    path.write_text(yaml.safe_dump(cfg))
    result = CliRunner().invoke(app, ["run", str(path)])
    assert result.exit_code == 2, result.output
    assert str(evil) in result.output and "Traceback" not in result.output
    assert not marker.exists()


# ------------------------------------------------------------------ manifests stay in their folder


@pytest.fixture()
def tree(tmp_path: Path) -> Path:
    """root/ with images, a secret outside it, and symlinks (file and folder) pointing out."""
    import cv2

    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    img = np.full((4, 4), 128, np.uint8)
    for name in ("a.png", "sub/b.png"):
        cv2.imwrite(str(root / name), img)
    cv2.imwrite(str(tmp_path / "secret.png"), img)
    os.symlink(tmp_path / "secret.png", root / "innocent.png")
    os.symlink(tmp_path, root / "shortcut")
    os.symlink(root / "a.png", root / "alias.png")  # a link that stays inside is fine
    return root


ESCAPES = ["../secret.png", "sub/../../secret.png", "innocent.png", "shortcut/secret.png", "{abs}"]


def _manifest(root: Path, image: str, column: str = "image") -> Path:
    path = root / "manifest.csv"
    if column == "image":
        path.write_text(f"image,label,domain\na.png,0,x\n{image},1,x\n")
    else:
        path.write_text(f"image,mask,label,domain\na.png,,0,x\nsub/b.png,{image},1,x\n")
    return path


@pytest.mark.parametrize("column", ["image", "mask"])
@pytest.mark.parametrize("escape", ESCAPES)
def test_manifest_paths_cannot_escape_the_root(tree: Path, escape: str, column: str) -> None:
    from shiftkit.datasets import load_manifest

    value = escape.format(abs=tree.parent / "secret.png")
    path = _manifest(tree, value, column)
    with pytest.raises(ManifestError) as info:
        load_manifest(path)
    assert any(p.startswith("row 2:") and "escapes" in p and "allow_outside_root" in p for p in info.value.problems)
    frame = load_manifest(path, allow_outside_root=True)  # the explicit opt-in
    assert frame[column].iloc[-1] == str((tree.parent / "secret.png").resolve())


def test_links_and_dots_that_stay_inside_are_accepted(tree: Path) -> None:
    from shiftkit.datasets import load_manifest

    path = tree / "manifest.csv"
    path.write_text("image,domain\n./alias.png,x\nsub/../sub/b.png,y\n")
    frame = load_manifest(path)
    assert frame["image"].tolist()[1] == str((tree / "sub" / "b.png").resolve())


@pytest.mark.slow
def test_run_config_keeps_manifest_inside_unless_allowed(tree: Path, tmp_path: Path) -> None:
    from shiftkit.adapt.job.config import parse_config
    from shiftkit.adapt.job.pipeline import run

    path = _manifest(tree, "shortcut/secret.png")
    cfg = {"name": "escape", "out_dir": str(tmp_path / "runs"), "progress": False,
           "data": {"benchmark": None, "manifest": str(path), "source_domain": "x", "target_domain": "y"}}
    with pytest.raises(ManifestError, match="escapes"):
        run(parse_config(cfg))
    assert parse_config({**cfg, "data": {**cfg["data"], "allow_outside_root": True}}).data.allow_outside_root
