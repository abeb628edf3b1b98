"""DDP under torchrun (gloo, CPU) follows the same optimisation path as one process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

WORKER = Path(__file__).with_name("ddp_worker.py")


def _run(args: list[str], tmp_path: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    proc = subprocess.run(args, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]


@pytest.mark.slow
def test_torchrun_two_processes_match_one_process(tmp_path: Path) -> None:
    from safetensors.torch import load_file

    _run([sys.executable, str(WORKER), str(tmp_path / "single.safetensors")], tmp_path)
    _run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
          str(WORKER), str(tmp_path / "ddp.safetensors")], tmp_path)
    one, two = load_file(str(tmp_path / "single.safetensors")), load_file(str(tmp_path / "ddp.safetensors"))
    init = None
    assert one.keys() == two.keys()
    for k in one:
        torch.testing.assert_close(one[k], two[k], rtol=1e-4, atol=1e-5, msg=f"parameter {k} differs")
    # and training moved them (the comparison is not between two untouched initialisations)
    torch.manual_seed(0)
    from shiftkit.adapt.models.backbones import build_mlp

    init = build_mlp(6, [16], 2).state_dict()
    assert not torch.allclose(init["encoder.0.weight"], one["model.encoder.0.weight"])
