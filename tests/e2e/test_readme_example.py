"""The README's Python example runs as written (with the job shrunk to test size)."""

from __future__ import annotations

import re
from pathlib import Path

import shiftkit.adapt
from shiftkit.adapt.job import pipeline

ROOT = Path(__file__).parents[2]


def test_readme_python_example_runs(tmp_path: Path, monkeypatch) -> None:
    block = re.search(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S).group(1)
    real_run = pipeline.run

    def shrunk_run(config):
        # Same code path as the README, sized for CI: the config object the README built is
        # what gets validated and run.
        config.out_dir = tmp_path
        config.data.n_per_domain = 40
        config.data.image_size = 32
        config.model.backbone = "tiny"
        config.train.epochs = 1
        config.evaluation.n_permutations = 50
        config.progress = False
        return real_run(config)

    monkeypatch.setattr(pipeline, "run", shrunk_run)
    monkeypatch.setattr(shiftkit.adapt, "run", shrunk_run, raising=False)
    namespace: dict = {}
    exec(compile(block, "README.md", "exec"), namespace)  # noqa: S102 - our own README
    result = namespace["result"]
    assert (result.run_dir / "report.html").is_file()
    assert 0.0 <= result.metrics["methods"]["dann"]["target"]["auroc"] <= 1.0
