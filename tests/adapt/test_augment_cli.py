"""`shiftkit augment preview` writes a PNG grid from a benchmark or a manifest."""

from __future__ import annotations

import numpy as np
from PIL import Image
from typer.testing import CliRunner

from shiftkit.adapt.cli import app


def test_preview_from_benchmark_and_manifest(tmp_path) -> None:
    runner = CliRunner()
    out = tmp_path / "grid.png"
    res = runner.invoke(app, ["augment", "preview", "--benchmark", "radiograph", "--out", str(out),
                              "--n", "2", "--size", "48", "--strengths", "0.5,1"])
    assert res.exit_code == 0, res.output
    grid = np.asarray(Image.open(out))
    assert grid.ndim == 3 and grid.shape[0] > 100 and grid.shape[1] > 4 * 100  # 2 rows x 5 columns
    # a manifest with masks: source rows previewed, target rows restyle them
    rows = ["image,mask,domain"]
    for i in range(4):
        Image.fromarray((np.random.default_rng(i).random((32, 32)) * 255).astype(np.uint8)).save(tmp_path / f"i{i}.png")
        Image.fromarray((np.arange(32 * 32).reshape(32, 32) // 300).astype(np.uint8)).save(tmp_path / f"m{i}.png")
        rows.append(f"i{i}.png,m{i}.png,{'a' if i < 2 else 'b'}")
    (tmp_path / "m.csv").write_text("\n".join(rows) + "\n")
    res = runner.invoke(app, ["augment", "preview", "--manifest", str(tmp_path / "m.csv"), "--out",
                              str(tmp_path / "g2.png"), "--source", "a", "--target", "b"])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "g2.png").stat().st_size > 1000
    bad = runner.invoke(app, ["augment", "preview", "--out", str(tmp_path / "g3.png")])
    assert bad.exit_code == 2 and "exactly one" in bad.output
