"""One weight loader: every way shiftkit stores weights (a bare state dict, a training
checkpoint, ``{"state_dict": ...}``, ``{"model": ...}``, a model file's ``model.`` keys) is
unwrapped by `checkpoint.unwrap_state` and loaded by `checkpoint.load_into`, and the callers
(`load_weights`, a run's `model.checkpoint`) use it."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from shiftkit.adapt.deploy.loading import load_weights
from shiftkit.adapt.models.backbones import build_classifier
from shiftkit.adapt.training.checkpoint import load_into
from shiftkit.datasets.errors import DataError


def _state() -> dict[str, torch.Tensor]:
    torch.manual_seed(3)
    return {k: v.clone() for k, v in build_classifier("tiny", 1, 2).state_dict().items()}


@pytest.mark.parametrize("wrap", ["bare", "checkpoint", "state_dict", "model", "prefixed"])
def test_every_wrapping_loads_the_same_weights(tmp_path: Path, wrap: str) -> None:
    sd = _state()
    path = tmp_path / "w.pt"
    if wrap == "prefixed":  # a shiftkit model file: "model." keys and "shift." statistics
        path = tmp_path / "w.safetensors"
        save_file({**{f"model.{k}": v.contiguous() for k, v in sd.items()}, "shift.mean": torch.zeros(3)}, str(path))
    else:
        content = {"bare": sd, "checkpoint": {"modules": {"model": sd}, "epoch": 2}, "state_dict": {"state_dict": sd},
                   "model": {"model": sd}}[wrap]
        torch.save(content, path)
    model = build_classifier("tiny", 1, 2)
    assert load_into(model, path) == ([], [])
    for k, v in model.state_dict().items():
        assert torch.equal(v, sd[k]), k
    other = load_weights(build_classifier("tiny", 1, 2), path)
    assert all(torch.equal(v, sd[k]) for k, v in other.state_dict().items())


def test_weights_that_do_not_fit_name_the_file(tmp_path: Path) -> None:
    path = tmp_path / "seg.pt"
    torch.save({"conv.weight": torch.zeros(2, 2)}, path)
    with pytest.raises(DataError, match="seg.pt"):
        load_into(build_classifier("tiny", 1, 2), path)
    missing, unexpected = load_into(build_classifier("tiny", 1, 2), path, strict=False)
    assert unexpected == ["conv.weight"] and missing
