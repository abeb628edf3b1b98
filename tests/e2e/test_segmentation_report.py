"""A dashcam run from the smallest config (task + benchmark, tiny sizes, default backbone):
the report names the classes, shows prediction overlays before and after adaptation, and
the overfitting advice counts labelled pixels."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from shiftkit.adapt.job.config import parse_config
from shiftkit.adapt.job.pipeline import run


@pytest.fixture(scope="module")
def dash_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs")
    config = parse_config({
        "name": "dash", "out_dir": str(out), "progress": False, "task": "segmentation",
        "data": {"benchmark": "dashcam", "n_per_domain": 20, "image_size": 32},
        "train": {"epochs": 1, "batch_size": 8},
        "evaluation": {"n_permutations": 50, "max_gap_points": 50},
    })
    assert config.model.backbone == "unet"  # the segmentation default, not the classifier's
    run(config)
    return out / "dash"


def test_segmentation_report_names_classes_and_shows_overlays(dash_run: Path) -> None:
    from PIL import Image

    from shiftkit.datasets.synth.dashcam import CLASSES

    metrics = json.loads((dash_run / "metrics.json").read_text())
    assert metrics["run"]["backbone"] == "unet" and metrics["run"]["class_names"] == list(CLASSES)
    for name in ("source_only", "dann"):
        assert list(metrics["methods"][name]["target"]["per_class_iou"]) == list(CLASSES)
    page = (dash_run / "report.html").read_text()
    table = re.search(r"<table class='per-class-iou'>(.*?)</table>", page, re.S)
    assert table is not None
    rows = re.findall(r'<td class="k">([^<]+)</td>', table.group(1))
    assert rows == list(CLASSES)
    assert "dann / target" in table.group(1) and "source_only / source" in table.group(1)
    for caption in ("Segmentation overlays: Source only (before adaptation)",
                    "Segmentation overlays: DANN (after adaptation)"):
        assert caption in page

    # The overfitting advice counts the labelled pixels of the source training masks.
    frame = __import__("pandas").read_csv(dash_run / "data" / "manifest.csv")
    train = frame[(frame["domain"] == "urban_day") & (frame["split"] == "train")]
    pixels = sum(np.asarray(Image.open(dash_run / "data" / m)).size for m in train["mask"])
    ov = metrics["overfitting"]["source_only"]
    assert ov["n_samples"] == pixels and ov["sample_unit"] == "labelled pixels"


def _chromium() -> str | None:
    for p in ("/usr/bin/chromium", "/usr/bin/chromium-browser"):
        if Path(p).exists():
            return p
    return shutil.which("chromium")


@pytest.mark.browser
def test_segmentation_report_renders_overlays_in_headless_chromium(dash_run: Path, tmp_path: Path) -> None:
    exe = _chromium()
    if exe is None:
        pytest.skip("Chromium not installed (/usr/bin/chromium absent); `apt-get install -y chromium` enables this test")
    page = (dash_run / "report.html").read_text()
    # Keep only the overlay figures and the class table, so the screenshot shows them.
    figs = re.findall(r"<figure><figcaption>Segmentation overlays.*?</figure>", page, re.S)
    table = re.search(r"<h3>Per-class IoU.*?</table>", page, re.S).group(0)
    assert len(figs) == 2
    mini = tmp_path / "seg.html"
    mini.write_text(page.split("<body>")[0] + "<body>" + table + "".join(figs) + "</body></html>")
    shot = tmp_path / "shot.png"
    cmd = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}", "--window-size=1200,1600",
           mini.resolve().as_uri()]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert shot.exists(), proc.stderr[-2000:]
    from PIL import Image

    img = np.asarray(Image.open(shot).convert("RGB"), dtype=float)
    # The overlays are drawn: many strongly coloured pixels (class colours over the scenes).
    saturation = img.max(axis=2) - img.min(axis=2)
    assert (saturation > 60).mean() > 0.05
